"""lint_rsyslog against the real ``rsyslogd -N1``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bakery.lint import lint_rsyslog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lint" / "rsyslog"

pytestmark = pytest.mark.skipif(
    shutil.which("rsyslogd", path="/usr/sbin:/sbin:/usr/bin") is None, reason="rsyslogd is not installed"
)


def test_good_snippet_passes() -> None:
    assert lint_rsyslog(FIXTURES / "good.conf") == []


def test_pipe_that_does_not_exist_yet_is_not_an_error(tmp_path: Path) -> None:
    pipe = tmp_path / "not-created-yet" / "syslog_pipe"
    snippet = tmp_path / "60-osquery.conf"
    snippet.write_text((FIXTURES / "good.conf").read_text().replace("/var/osquery/syslog_pipe", str(pipe)))
    assert lint_rsyslog(snippet) == []
    assert not pipe.parent.exists()


def test_broken_snippet_fails_with_rsyslogs_message() -> None:
    findings = lint_rsyslog(FIXTURES / "broken.conf")
    assert [(Path(f.file).name, f.severity, f.code) for f in findings] == [("broken.conf", "error", "rsyslog-invalid")]
    assert "Could not find template 0 'OsqueryCsvFormt'" in findings[0].message


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    snippet = tmp_path / "60-osquery.conf"
    snippet.write_text('template(name="T" type="string" string="%msg%\\n"\n*.* action(type="ompipe")\n')
    findings = lint_rsyslog(snippet)
    assert findings
    assert {(f.file, f.severity, f.code) for f in findings} == {(f"{snippet}:2", "error", "rsyslog-invalid")}
