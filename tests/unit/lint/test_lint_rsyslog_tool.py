"""lint_rsyslog without rsyslogd installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.errors import ToolMissingError
from bakery.lint import lint_rsyslog

GOOD = Path(__file__).resolve().parents[2] / "fixtures" / "lint" / "rsyslog" / "good.conf"


def test_missing_rsyslogd_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bakery.lint.rsyslog.shutil.which", lambda *_a, **_k: None)
    with pytest.raises(ToolMissingError, match=r"install it: apt-get install rsyslog"):
        lint_rsyslog(GOOD)
