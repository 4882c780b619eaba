"""Validate an rsyslog snippet (meant for /etc/rsyslog.d/) with the real ``rsyslogd -N1``.

The snippet is checked through a temporary main config that includes it and adds a sink action, so a
snippet without an action of its own does not fail with "no active actions". ``rsyslogd -N1`` does not
open ompipe pipes, so a pipe that does not exist yet (osqueryd creates it) is not an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bakery.errors import CommandError, ConfigError, ToolMissingError
from bakery.lint.report import Finding, Severity

TIMEOUT_S = 30
_WHERE = re.compile(r"^error during parsing file .*?, on or before line (\d+): ")
_HELP = re.compile(r"\s*\[v[\d.]+ try (https://\S+) \]\s*$")
# rsyslogd's banner, and summaries that repeat the errors before them (or name the temporary wrapper).
_NOISE = ("config validation run", "errors occurred in file", "could not interpret master config")


def _rsyslogd() -> str:
    found = shutil.which("rsyslogd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        raise ToolMissingError("rsyslogd not found; install it: apt-get install rsyslog")
    return found


def lint_rsyslog(path: Path) -> list[Finding]:
    """Findings from ``rsyslogd -N1`` for the snippet at ``path``: errors when it fails, else warnings."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such rsyslog snippet to lint")
    snippet = str(path.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    with tempfile.TemporaryDirectory(prefix="bakery-rsyslog-") as tmp:
        wrapper = Path(tmp) / "rsyslog.conf"
        wrapper.write_text(f'include(file="{snippet}")\n*.* action(type="omfile" file="/dev/null")\n')
        argv = [_rsyslogd(), "-N1", "-f", str(wrapper)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, None, str(exc.stderr or "")[-2000:]) from exc
    severity: Severity = "error" if proc.returncode else "warning"
    findings = []
    for line in (proc.stdout + proc.stderr).splitlines():
        message = line.removeprefix("rsyslogd:").strip()
        if not message or any(noise in message for noise in _NOISE):
            continue
        where = _WHERE.search(message)
        help_url = _HELP.search(message)
        findings.append(
            Finding(
                f"{path}:{where.group(1)}" if where else str(path),
                None,
                None,
                severity,
                "rsyslog-invalid" if proc.returncode else "rsyslog-warning",
                _HELP.sub("", _WHERE.sub("", message)),
                f"see {help_url.group(1)}" if help_url else "fix the snippet; check it with rsyslogd -N1",
            )
        )
    if proc.returncode and not findings:
        findings.append(
            Finding(
                str(path),
                None,
                None,
                "error",
                "rsyslog-invalid",
                f"rsyslogd -N1 exited {proc.returncode}",
                "run rsyslogd -N1 -f on a config that includes the snippet",
            )
        )
    return findings
