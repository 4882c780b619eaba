"""Every MANIFEST file with its mode and owner; osquery's config and flagfile say what they must."""

from __future__ import annotations

import json
import re
from typing import Any


def test_manifest_file(host: Any, manifest_file: dict[str, str]) -> None:
    f = host.file(manifest_file["dest"])
    assert f.is_file, f"{manifest_file['dest']} is missing"
    assert f"{f.mode:04o}" == manifest_file["mode"]
    assert (f.user, f.group) == (manifest_file["owner"], manifest_file["group"])


def test_osquery_conf_names_every_pack(host: Any, expect: dict[str, Any]) -> None:
    conf = json.loads(host.file(expect["osquery"]["conf"]).content_string)
    assert conf["packs"] == expect["osquery"]["packs"]
    for path in conf["packs"].values():
        assert host.file(path).is_file, f"pack {path} is missing"


def test_osquery_conf_is_root_only(host: Any, expect: dict[str, Any]) -> None:
    for path in (expect["osquery"]["conf"], expect["osquery"]["flagfile"], *expect["osquery"]["packs"].values()):
        f = host.file(path)
        assert f.user == "root" and f.mode & 0o007 == 0, f"{path} is readable by others"


def _flag_lines(host: Any, expect: dict[str, Any]) -> list[str]:
    text = host.file(expect["osquery"]["flagfile"]).content_string
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_flagfile_has_required_flags(host: Any, expect: dict[str, Any]) -> None:
    lines = _flag_lines(host, expect)
    missing = [flag for flag in expect["osquery"]["flags"] if flag not in lines]
    assert not missing, f"flagfile lacks {missing}"


def test_flagfile_has_no_forbidden_flags(host: Any, expect: dict[str, Any]) -> None:
    names = {line[2:].split("=", 1)[0] for line in _flag_lines(host, expect)}
    assert not names & set(expect["osquery"]["forbidden_flags"])


def test_flagfile_format(host: Any, expect: dict[str, Any]) -> None:
    for line in _flag_lines(host, expect):
        assert re.fullmatch(r"--[a-z0-9_]+=[^\s\"']*", line), f"not a --name=value line: {line!r}"


def test_osqueryd_unit_reads_flagfile_and_config(host: Any, expect: dict[str, Any]) -> None:
    default = host.file("/etc/default/osqueryd").content_string
    assert f"FLAG_FILE={expect['osquery']['flagfile']}" in default.replace('"', "")
    assert f"CONFIG_FILE={expect['osquery']['conf']}" in default.replace('"', "")


def test_osquery_config_check(host: Any, expect: dict[str, Any]) -> None:
    """The baked config parses, checked next to the running daemon without touching its database.

    ``--config_check`` opens the RocksDB database named by ``--database_path`` before it checks anything
    (osquery 5.23.1 osquery/core/init.cpp:685-690, then :733-743), and RocksDB lets one process hold it:
    next to a running osqueryd the check fails after 25 retries with "IO error: While lock file: …/LOCK"
    (osquery/database/database.cpp:89-92, 487-500; osquery#1629, #4614). ``--disable_database`` selects
    the in-memory "ephemeral" plugin instead (database.cpp:487) and makes no database directory
    (init.cpp:184-196); config_check takes no pidfile (init.cpp:480-483); ``--disable_extensions`` keeps
    it from starting an extension manager on the daemon's socket (init.cpp:680-683). The overrides come
    after ``--flagfile``, so they win over it. The stand-in osqueryd models the lock, so this runs there too.
    """
    cmd = host.run(
        "osqueryd --flagfile=%s --config_path=%s --config_check --disable_database --disable_extensions",
        expect["osquery"]["flagfile"],
        expect["osquery"]["conf"],
    )
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
