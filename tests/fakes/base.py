"""What the fake Google APIs share: recorded calls, injected faults and project numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fault:
    """What to do to one call: answer ``status``; answer after ``delay`` s; fail its operation with
    ``op_error`` = (code, message, HTTP status); or pass the response through ``corrupt``."""

    status: int | None = None
    delay: float = 0.0
    op_error: tuple[str, str, int] | None = None
    corrupt: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Call:
    """One recorded request."""

    method: str
    http_method: str
    path: str
    query: dict[str, list[str]]
    body: Any


def project_number(project_id: str) -> str:
    """A project's number: 12 digits, fixed per project id (as Google's never change)."""
    digest = int.from_bytes(hashlib.sha256(project_id.encode()).digest()[:8], "big")
    return str(100_000_000_000 + digest % 900_000_000_000)
