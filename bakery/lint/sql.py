"""Check osquery SQL with SQLite's own parser and name resolver.

Each query is compiled (``EXPLAIN <query>``, never run) in an in-memory database holding one stub table
per osquery table of the target platforms (every column, hidden ones included), stubs of osquery's extra
SQL functions and collations, and the config's ``views``. SQLite's error names the first problem; an
authorizer records the tables a query reads and refuses anything but reading.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bakery.lint.schema import Schema, Table

# osquery's additions to SQLite (osquery/sql/sqlite_*.cpp), name -> accepted argument counts (-1: any).
OSQUERY_FUNCTIONS: dict[str, tuple[int, ...]] = {
    # sqlite_math.cpp
    **dict.fromkeys(("sqrt", "acos", "asin", "atan", "cos", "sin", "tan", "cot", "exp", "log", "log10"), (1,)),
    **dict.fromkeys(("ceil", "floor", "degrees", "radians"), (1,)),
    "power": (2,),
    "pi": (0,),
    # sqlite_string.cpp
    "split": (3,),
    "regex_split": (3,),
    "regex_match": (3,),
    "inet_aton": (1,),
    "concat": (-1,),
    "concat_ws": (-1,),
    "version_compare": (2, 3),
    # sqlite_hashing.cpp
    "md5": (1,),
    "sha1": (1,),
    "sha256": (1,),
    "community_id_v1": (5, 6),
    "community_id_v1_strict": (5, 6),
    # sqlite_encoding.cpp
    "to_base64": (1,),
    "from_base64": (1,),
    "conditional_to_base64": (1,),
    # sqlite_network.cpp
    "in_cidr_block": (2,),
    # sqlite_filesystem.cpp
    "is_path_deterministic": (-1,),
    "find_file_path_in_cmd": (-1,),
    "parent_directory": (1,),
    # sqlite_operations.cpp
    "carve": (1,),
}
OSQUERY_COLLATIONS = ("version", "version_arch", "version_dpkg", "version_rhel")

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


@dataclass(frozen=True)
class SqlResult:
    """``error`` is (code, message) or None; ``tables`` are the osquery tables the query reads."""

    error: tuple[str, str] | None
    tables: frozenset[str]


def _stub(*_args: Any) -> None:
    return None


def _collate(_a: str, _b: str) -> int:
    return 0


def _ddl(table: Table) -> str:
    columns = ", ".join(f'"{c.name}" {c.type.upper()}' for c in table.columns)
    return f'CREATE TABLE "{table.name}" ({columns})'


class SqlChecker:
    """Compiles queries against the stub tables of a platform set (one database per set, made on demand)."""

    def __init__(self, schema: Schema, views: Mapping[str, str] | None = None) -> None:
        self.schema = schema
        self.views = dict(views or {})
        self._dbs: dict[frozenset[str], sqlite3.Connection] = {}
        self._read: set[str] = set()

    def _db(self, platforms: frozenset[str]) -> sqlite3.Connection:
        db = self._dbs.get(platforms)
        if db is None:
            # No statement cache: the authorizer must see every compilation.
            db = sqlite3.connect(":memory:", cached_statements=0)
            db.executescript(";\n".join(_ddl(t) for t in self.schema.on(platforms)))
            for name, arities in OSQUERY_FUNCTIONS.items():
                for n in arities:
                    db.create_function(name, n, _stub, deterministic=True)
            for name in OSQUERY_COLLATIONS:
                db.create_collation(name, _collate)
            for name, body in self.views.items():
                try:
                    db.execute(f'CREATE VIEW "{name}" AS {body}')
                except sqlite3.Error:
                    continue  # reported when the view itself is checked
            db.set_authorizer(self._authorize)
            self._dbs[platforms] = db
        return db

    def _authorize(self, action: int, arg1: str | None, *_rest: str | None) -> int:
        if action not in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_READ and arg1 is not None and arg1 in self.schema.tables:
            self._read.add(arg1)
        return sqlite3.SQLITE_OK

    def check(self, sql: str, platforms: frozenset[str]) -> SqlResult:
        """Compile ``sql`` against the tables of ``platforms``."""
        self._read = set()
        try:
            self._db(platforms).execute(f"EXPLAIN {sql}")
        except sqlite3.Error as exc:
            return SqlResult(self._classify(str(exc), platforms), frozenset(self._read))
        return SqlResult(None, frozenset(self._read))

    def _classify(self, message: str, platforms: frozenset[str]) -> tuple[str, str]:
        if message.startswith("no such table: "):
            name = message.removeprefix("no such table: ").removeprefix("main.")
            table = self.schema.tables.get(name)
            if table is None:
                return "unknown-table", f"no table {name} in osquery {self.schema.version}"
            return (
                "table-not-on-platform",
                f"table {name} exists only on {', '.join(sorted(table.platforms))}, "
                f"not on {', '.join(sorted(platforms))}",
            )
        if message.startswith("no such column: "):
            return "unknown-column", message
        if message.startswith("ambiguous column name: "):
            return "ambiguous-column", message
        if message.startswith(("no such function: ", "wrong number of arguments to function ")):
            return "unknown-function", message
        if message == "not authorized":
            return "not-select", "only SELECT queries can be scheduled"
        if "syntax error" in message or "unrecognized token" in message or message == "incomplete input":
            return "syntax-error", message
        if message.startswith("You can only execute one statement"):
            return "syntax-error", "more than one SQL statement"
        return "sql-error", message
