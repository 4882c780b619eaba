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


def test_fluentd_loads_only_the_bakery_snippet(host: Any, expect: dict[str, Any]) -> None:
    """fluentd.conf includes the osquery snippet by name and turns off fluentd's automatic include
    directory (fluent-package sets FLUENT_CONF_INCLUDE_DIR=/etc/fluent/conf.d; fluentd 1.19 would load the
    vendor's update_notifier.conf and obsolete_plugins.conf, and our snippet twice)."""
    lines = [line.strip() for line in host.file(expect["fluentd"]["conf"]).content_string.splitlines()]
    includes = [line for line in lines if line.startswith("@include")]
    assert includes == [f"@include {expect['fluentd']['include']}"]
    assert 'config_include_dir ""' in lines


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


def test_fluentd_reads_results_with_the_pubsub_output_loaded(
    host: Any, expect: dict[str, Any], needs_real_fluentd: None, needs_booted: None
) -> None:
    """Fluentd runs the baked config (the Pub/Sub output and both tail sources loaded, no config error)
    and reads osquery's results log to its end.

    Whether records reach Pub/Sub is deliberately not checked here: the test VM runs as
    ``gce.test_service_account`` (or none), which holds no Pub/Sub role on the production topic, so a test
    VM's records never reach the SIEM and its publish attempts are refused (README, IAM). Log lines from
    fluent/fluentd v1.19.0: "adding match" lib/fluent/agent.rb:128, "adding source" root_agent.rb:408,
    "config error" supervisor.rb:722 and 1161, "loading additional configuration file" supervisor.rb:1221."""
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
    log = host.run("cat /var/log/fluent/fluentd.log").stdout.splitlines()
    assert not [line for line in log if "config error" in line], "Fluentd reported a config error"
    # fluentd logs each file it loads from its include directory (supervisor.rb:1221): there must be none.
    assert not [line for line in log if "loading additional configuration file" in line]
    assert any('adding match pattern="osquery.**" type="gcloud_pubsub"' in line for line in log)
    assert sum('adding source type="tail"' in line for line in log) >= 2
