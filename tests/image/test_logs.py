"""Fluentd's user can read osquery's root-owned logs (POSIX ACL), nobody else can; logrotate config."""

from __future__ import annotations

from typing import Any

import pytest


def test_log_dir_acl(host: Any, expect: dict[str, Any]) -> None:
    reader = expect["log_reader"]
    acl = host.check_output("getfacl -p %s", reader["directory"]).splitlines()
    assert f"user:{reader['user']}:r-x" in acl
    assert f"default:user:{reader['user']}:r-x" in acl
    assert "other::---" in acl and "default:other::---" in acl


def test_fluentd_user_reads_new_osquery_log(host: Any, expect: dict[str, Any]) -> None:
    """A file created like osqueryd creates its logs is readable by Fluentd's user, not by nobody."""
    reader = expect["log_reader"]
    probe = f"{reader['directory']}/bakery-acl-probe.log"
    mode = next(line for line in expect["osquery"]["flags"] if line.startswith("--logger_mode="))
    host.check_output("sh -c %s", f"umask 077; echo probe > {probe} && chmod {mode.split('=')[1]} {probe}")
    try:
        assert host.run("runuser -u %s -- cat %s", reader["user"], probe).stdout.strip() == "probe"
        assert host.run("runuser -u nobody -- cat %s", probe).rc != 0
    finally:
        host.run("rm -f %s", probe)


@pytest.mark.parametrize("directive", ["copytruncate", "daily", "compress", "delaycompress", "missingok", "notifempty"])
def test_logrotate_directive(host: Any, expect: dict[str, Any], directive: str) -> None:
    lines = [line.strip() for line in host.file(expect["logrotate"]["conf"]).content_string.splitlines()]
    assert directive in lines


def test_logrotate_covers_logs_and_keeps_some(host: Any, expect: dict[str, Any]) -> None:
    text = host.file(expect["logrotate"]["conf"]).content_string
    for path in expect["logrotate"]["files"]:
        assert path in text
    rotate = [line.split() for line in text.splitlines() if line.strip().startswith("rotate ")]
    assert rotate and int(rotate[0][1]) >= 1


def test_logrotate_accepts_config(host: Any, expect: dict[str, Any]) -> None:
    cmd = host.run("logrotate --debug --state /dev/null %s", expect["logrotate"]["conf"])
    assert cmd.rc == 0 and "error" not in cmd.stderr.lower(), cmd.stderr
