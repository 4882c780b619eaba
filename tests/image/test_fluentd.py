"""Fluentd: conf.d included, the osquery snippet tails both logs to the environment's topic, no key."""

from __future__ import annotations

import re
import time
from typing import Any


def _params(text: str) -> list[tuple[str, str]]:
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "<")):
            continue
        key, _, value = line.partition(" ")
        pairs.append((key, value.strip()))
    return pairs


def test_fluentd_conf_includes_conf_d(host: Any, expect: dict[str, Any]) -> None:
    lines = host.file(expect["fluentd"]["conf"]).content_string.splitlines()
    assert "@include conf.d/*.conf" in [line.strip() for line in lines]


def test_fluentd_snippet_settings(host: Any, expect: dict[str, Any]) -> None:
    fluentd = expect["fluentd"]
    params = _params(host.file(fluentd["snippet"]).content_string)
    values: dict[str, list[str]] = {}
    for key, value in params:
        values.setdefault(key, []).append(value)
    assert values["@type"].count("gcloud_pubsub") == 1
    assert values["topic"] == [fluentd["topic"]]
    assert values["project"] == [fluentd["project"]]
    assert values["autocreate_topic"] == ["false"]
    assert "key" not in values, "a credential file is configured: the VM's service account must be used"
    assert values["keep_time_key"] == ["true", "true"]
    assert values["time_key"] == ["unixTime", "unixTime"]
    assert values["time_type"] == ["unixtime", "unixtime"]
    assert sorted(values["pos_file"]) == sorted(fluentd["pos_files"].values())
    assert sorted(values["path"]) == sorted([*expect["osquery"]["logs"].values(), fluentd["buffer_path"]])
    assert "file" in values["@type"], "no file buffer"


def test_fluentd_runs_as_its_user(host: Any, expect: dict[str, Any], booted: bool) -> None:
    if booted:
        unit = host.check_output("systemctl cat fluentd.service")
    else:  # systemctl cat needs the manager: read the unit file (drop-ins would be missed)
        paths = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
        unit = next(host.file(f"{d}/fluentd.service") for d in paths if host.file(f"{d}/fluentd.service").exists)
        unit = unit.content_string
    assert re.search(rf"^User={re.escape(expect['fluentd']['user'])}$", unit, re.M)
    assert host.user(expect["fluentd"]["user"]).exists


def test_fluentd_dry_run(host: Any, expect: dict[str, Any], needs_real_fluentd: None) -> None:
    cmd = host.run("/opt/fluent/bin/fluentd --dry-run -c %s", expect["fluentd"]["conf"])
    assert cmd.rc == 0, cmd.stdout + cmd.stderr


def test_results_reach_fluentd_output(
    host: Any, expect: dict[str, Any], needs_real_fluentd: None, needs_booted: None
) -> None:
    """A result line is read to the end of the log and Fluentd logs no output error (Pub/Sub is remote)."""
    results = expect["osquery"]["logs"]["results"]
    pos_file = expect["fluentd"]["pos_files"]["results"]
    deadline = time.monotonic() + 300
    while True:
        size = int(host.run("stat -c %%s %s", results).stdout.strip() or 0)
        pos = host.run("cat %s", pos_file).stdout.split()
        read = int(pos[1], 16) if len(pos) >= 2 else -1
        if size > 0 and read == size:
            break
        assert time.monotonic() < deadline, f"Fluentd read {read} of {size} bytes of {results}"
        time.sleep(5)
    log = host.run("cat /var/log/fluent/fluentd.log").stdout
    errors = [line for line in log.splitlines() if "[error]" in line or "failed to flush" in line]
    assert not errors, "\n".join(errors[-5:])
