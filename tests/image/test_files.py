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


def test_osquery_config_check(host: Any, expect: dict[str, Any], needs_real_osquery: None) -> None:
    cmd = host.run(
        "osqueryd --config_check --flagfile %s --config_path %s",
        expect["osquery"]["flagfile"],
        expect["osquery"]["conf"],
    )
    assert cmd.rc == 0, cmd.stderr
