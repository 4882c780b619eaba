"""osquery's table schema, shipped as data per osquery version and selected by version.

``bakery/data/osquery/schema-<version>.json`` is a trimmed copy of the osquery website's
``schema-<version>.json`` made by :func:`compact`: one table per line,
``{"name", "platforms", "evented", "columns": [[name, type, hidden, required], ...]}``.
To support a new osquery version, run ``compact`` over that version's website schema and add the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bakery.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "osquery"

PLATFORMS = frozenset({"darwin", "linux", "windows", "freebsd"})
_ALIASES = {
    "posix": frozenset({"darwin", "linux", "freebsd"}),
    "any": PLATFORMS,
    "all": PLATFORMS,
}


def expand_platforms(value: str | Iterable[str]) -> frozenset[str]:
    """Expand an osquery platform value ("linux", "posix", "darwin,linux", "all") to platform names.

    Raises ValueError naming the first unknown platform.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names: set[str] = set()
    for raw in items:
        item = raw.strip()
        if item in _ALIASES:
            names |= _ALIASES[item]
        elif item in PLATFORMS:
            names.add(item)
        else:
            raise ValueError(item)
    return frozenset(names)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    hidden: bool
    required: bool


@dataclass(frozen=True)
class Table:
    name: str
    platforms: frozenset[str]
    evented: bool
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Schema:
    version: str
    tables: Mapping[str, Table]

    def on(self, platforms: frozenset[str]) -> list[Table]:
        """Tables available on any of ``platforms``."""
        return [t for t in self.tables.values() if t.platforms & platforms]


def compact(raw: list[dict[str, Any]]) -> str:
    """Trim the osquery website's schema JSON to what the linter needs (the shipped data format)."""
    rows = [
        {
            "name": t["name"],
            "platforms": t["platforms"],
            "evented": t["evented"],
            "columns": [[c["name"], c["type"], c["hidden"], c["required"]] for c in t["columns"]],
        }
        for t in raw
    ]
    return "[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows) + "\n]\n"


def parse_schema(version: str, rows: list[dict[str, Any]]) -> Schema:
    """Build a :class:`Schema` from rows in the shipped (compact) format."""
    tables = {
        r["name"]: Table(
            name=r["name"],
            platforms=expand_platforms(r["platforms"]),
            evented=bool(r["evented"]),
            columns=tuple(Column(*c) for c in r["columns"]),
        )
        for r in rows
    }
    return Schema(version, tables)


def available_versions() -> list[str]:
    """osquery versions that have a shipped schema."""
    return sorted(p.name[len("schema-") : -len(".json")] for p in DATA_DIR.glob("schema-*.json"))


@cache
def load_schema(version: str) -> Schema:
    """The table schema of osquery ``version`` (e.g. "5.23.1"); ConfigError when none is shipped."""
    path = DATA_DIR / f"schema-{version}.json"
    if not path.is_file():
        raise ConfigError(
            f"no osquery table schema for version {version}; available: "
            f"{', '.join(available_versions()) or 'none'}; add bakery/data/osquery/schema-{version}.json "
            "(made with bakery.lint.schema.compact from the osquery website's schema JSON)"
        )
    return parse_schema(version, json.loads(path.read_text(encoding="utf-8")))
