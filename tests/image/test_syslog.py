"""rsyslog copies syslog into osquery's pipe, and the pipe arrangement works on a booted VM."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest

TEMPLATE = (
    'template(name="OsqueryCsvFormat" type="string" string="%timestamp:::date-rfc3339,csv%,'
    '%hostname:::csv%,%syslogseverity:::csv%,%syslogfacility-text:::csv%,%syslogtag:::csv%,%msg:::csv%\\n")'
)


def test_rsyslog_config_valid(host: Any) -> None:
    cmd = host.run("rsyslogd -N1")
    assert cmd.rc == 0, cmd.stdout + cmd.stderr


def test_rsyslog_snippet(host: Any, expect: dict[str, Any]) -> None:
    text = host.file(expect["syslog"]["rsyslog_snippet"]).content_string
    assert TEMPLATE in text
    pipe = expect["syslog"]["pipe"]
    assert f'*.* action(type="ompipe" Pipe="{pipe}" template="OsqueryCsvFormat")' in text


def test_syslog_pipe(host: Any, expect: dict[str, Any], needs_booted: None) -> None:
    pipe = host.file(expect["syslog"]["pipe"])
    assert pipe.is_pipe
    assert pipe.mode == 0o460
    if host.group("syslog").exists:
        assert pipe.group == "syslog"


def _wait(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_logger_line_reaches_standin_pipe_reader(
    host: Any, expect: dict[str, Any], real: bool, needs_booted: None
) -> None:
    if real:
        pytest.skip("real osquery: see test_logger_line_in_syslog_events")
    token = f"bakery-probe-{uuid.uuid4().hex}"
    host.check_output("logger -t bakery-probe %s", token)
    probe = expect["syslog"]["standin_probe_log"]
    assert _wait(lambda: token in host.run("cat %s", probe).stdout), f"{token} never reached the pipe"


def test_logger_line_in_syslog_events(
    host: Any, expect: dict[str, Any], needs_real_osquery: None, needs_booted: None
) -> None:
    token = f"bakery-probe-{uuid.uuid4().hex}"
    host.check_output("logger -t bakery-probe %s", token)
    sql = f"SELECT message FROM syslog_events WHERE message LIKE '%{token}%';"

    def rows() -> list[Any]:
        cmd = host.run("osqueryi --json --connect %s %s", expect["osquery"]["extensions_socket"], sql)
        return json.loads(cmd.stdout) if cmd.rc == 0 and cmd.stdout.strip() else []

    assert _wait(rows), f"{token} never appeared in syslog_events"


def test_rsyslog_apparmor_allows_the_pipe(host: Any, expect: dict[str, Any]) -> None:
    """Where rsyslogd has an AppArmor profile (Ubuntu; enforced on 24.04), its local include carries the
    rule for the pipe; on a booted VM the kernel has the profile loaded and logged no denial for the pipe."""
    apparmor = expect["syslog"]["apparmor"]
    if not host.file(apparmor["profile"]).exists:
        pytest.skip(f"no {apparmor['profile']} on this image (Debian 12's rsyslog ships no AppArmor profile)")
    profile = host.file(apparmor["profile"]).content_string
    local_include = r"^\s*(#include|include(\s+if\s+exists)?)\s+<local/usr\.sbin\.rsyslogd>"
    assert re.search(local_include, profile, re.M), "the profile has no local include"
    local = [line.strip() for line in host.file(apparmor["local"]).content_string.splitlines()]
    assert apparmor["rule"] in local
    if host.file("/run/systemd/system").is_directory and host.file("/sys/kernel/security/apparmor/profiles").exists:
        kernel = host.run("journalctl -k --no-pager -o cat").stdout.splitlines()
        denied = [line for line in kernel if 'apparmor="DENIED"' in line and expect["syslog"]["pipe"] in line]
        assert not denied, "\n".join(denied[-3:])
