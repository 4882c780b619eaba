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
from typing import Any

from bakery import vendordata

DATA_DIR = vendordata.DATA_DIR / "osquery"

PLATFORMS = frozenset({"darwin", "linux", "windows", "freebsd"})
POSIX = frozenset({"darwin", "linux", "freebsd"})
_ALIASES = {
    "posix": POSIX,
    "any": PLATFORMS,
    "all": PLATFORMS,
}
# The substrings osquery's checkPlatform looks for, as (substring, platforms it selects). osquery 5.23.1
# (osquery/osquery b7538338fa5bf3baeb11d660e0053b5919ed86e2) osquery/core/system.cpp:459-485: "" and
# "null" run everywhere (:460); a string CONTAINING "any" or "all" runs everywhere (:464-466); "linux",
# "ubuntu" or "centos" anywhere in it runs on Linux (:472-477); "posix" on POSIX builds (:479-482); else it
# runs where it contains the build's own OSQUERY_BUILD_PLATFORM, "linux"/"darwin"/"windows"
# (:484; cmake/flags.cmake:163,259,344; 5.23.1 has no FreeBSD build, modelled the same way). Matching is
# plain case-sensitive std::string::find on the whole value: commas mean nothing to osquery and a word
# that contains none of these substrings is ignored, not rejected.
PLATFORM_SUBSTRINGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("any", PLATFORMS),
    ("all", PLATFORMS),
    ("linux", frozenset({"linux"})),
    ("ubuntu", frozenset({"linux"})),
    ("centos", frozenset({"linux"})),
    ("posix", POSIX),
    ("darwin", frozenset({"darwin"})),
    ("windows", frozenset({"windows"})),
    ("freebsd", frozenset({"freebsd"})),
)


def _substring_platforms(value: str) -> frozenset[str]:
    names: set[str] = set()
    for needle, platforms in PLATFORM_SUBSTRINGS:
        if needle in value:
            names |= platforms
    return frozenset(names)


def expand_platforms(value: str) -> frozenset[str]:
    """The platforms on which osquery runs a pack or query whose ``platform`` is ``value``.

    Mirrors osquery's ``checkPlatform`` (see :data:`PLATFORM_SUBSTRINGS`): "ubuntu" or "centos" mean Linux,
    "linux,macos" runs on Linux only (osquery ignores "macos"), "Linux" runs nowhere (case-sensitive).
    """
    if value in {"", "null"}:
        return PLATFORMS
    return _substring_platforms(value)


def ignored_platform_words(value: str) -> list[str]:
    """The comma-separated words of ``value`` that select no platform (osquery silently ignores them)."""
    return [word for word in (w.strip() for w in value.split(",")) if word and not _substring_platforms(word)]


def table_platforms(names: Iterable[str]) -> frozenset[str]:
    """The platforms of a schema table ("platforms": ["darwin", "linux"]; "posix"/"any"/"all" allowed).

    Raises ValueError naming the first unknown platform.
    """
    platforms: set[str] = set()
    for name in names:
        if name in _ALIASES:
            platforms |= _ALIASES[name]
        elif name in PLATFORMS:
            platforms.add(name)
        else:
            raise ValueError(name)
    return frozenset(platforms)


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
            platforms=table_platforms(r["platforms"]),
            evented=bool(r["evented"]),
            columns=tuple(Column(*c) for c in r["columns"]),
        )
        for r in rows
    }
    return Schema(version, tables)


@cache
def load_schema(version: str) -> Schema:
    """The table schema of osquery ``version`` (e.g. "5.23.1"); ConfigError when none is shipped."""
    path = vendordata.path(
        "osquery",
        "schema",
        version,
        what="osquery table schema",
        key="bakery.osquery.version",
        how_to_add="made with bakery.lint.schema.compact from the osquery website's schema JSON",
    )
    return parse_schema(version, json.loads(path.read_text(encoding="utf-8")))
