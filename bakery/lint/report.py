"""Lint findings and how they are reported.

Exit codes (:func:`exit_code`): 0 when nothing fails; 2 (``LintError.exit_code``) when there is an error,
or, with ``strict``, a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from bakery.errors import LintError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem: where (file, pack, query), how bad, a stable short code, what is wrong and the fix."""

    file: str
    pack: str | None
    query: str | None
    severity: Severity
    code: str
    message: str
    fix: str


def format_text(findings: Iterable[Finding]) -> str:
    """One line per finding: ``FILE: [pack/query] severity code: message; fix: ...``."""
    lines = []
    for f in findings:
        where = "/".join(part for part in (f.pack, f.query) if part)
        location = f" [{where}]" if where else ""
        lines.append(f"{f.file}:{location} {f.severity} {f.code}: {f.message}; fix: {f.fix}")
    return "\n".join(lines)


def format_json(findings: Iterable[Finding]) -> str:
    """A JSON array of finding objects (the dataclass fields)."""
    return json.dumps([asdict(f) for f in findings], indent=2)


def exit_code(findings: Iterable[Finding], strict: bool) -> int:
    """0 when clean; ``LintError.exit_code`` (2) on any error, or on any warning when ``strict``."""
    failing = {"error", "warning"} if strict else {"error"}
    return LintError.exit_code if any(f.severity in failing for f in findings) else 0
