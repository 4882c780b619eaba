"""Lint osquery configuration and packs: structure, SQL against the table schema, flags and cost.

Inputs are osquery's relaxed JSON: like osquery, whole lines starting with ``#`` or ``//`` are comments
(a ``//`` after a value is a JSON error in osquery too, and ``//`` inside strings is left alone).

Flags: the effective value of a flag is ``flags`` (the flagfile) over the config's ``options`` over
osquery's default (:data:`DEFAULT_FLAGS`). The flag requirements of evented tables
(:data:`EVENT_FLAGS`) are the Linux publishers'; on other platforms only ``disable_events`` is checked.

Cost rules: a table of :data:`EXPENSIVE_TABLES` scheduled more often than every
:data:`EXPENSIVE_MIN_INTERVAL` seconds is a warning; an evented table selected more often than every
:data:`EVENTED_MIN_INTERVAL` seconds is a warning (their main cost is the publisher's, which the flag
checks cover, but a select every few seconds only adds work: events are buffered in between);
``process_file_events`` is always a warning; a ``file``/``hash``/``yara_file``/``magic`` glob is broad
when it starts with a wildcard, recurses (``%%``) from the filesystem root, or names the root directory.

The packs shipped in ``packs/`` lint clean (no errors, no warnings) on Linux with
:data:`SHIPPED_PACK_FLAGS`: ``enable_syslog=true`` (incident-response reads ``syslog_events`` fed by
rsyslog's pipe) and ``disable_events=false``; every other flag at osquery's default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import osqueryflags
from bakery.errors import ConfigError
from bakery.lint.report import Finding, Severity
from bakery.lint.schema import Schema, expand_platforms, ignored_platform_words, load_schema
from bakery.lint.sql import SqlChecker

FlagValue = str | bool | int
_Add = Callable[[Severity, str, str, str], None]

SHIPPED_PACK_FLAGS: dict[str, FlagValue] = {"enable_syslog": True, "disable_events": False}

CONFIG_KEYS = frozenset(
    {
        "options",
        "schedule",
        "packs",
        "decorators",
        "file_paths",
        "file_paths_query",
        "exclude_paths",
        "file_accesses",
        "events",
        "yara",
        "prometheus_targets",
        "views",
        "auto_table_construction",
        "feature_vectors",
        "kafka_topics",
        "logger",
    }
)
PACK_KEYS = frozenset({"queries", "platform", "version", "shard", "discovery", "oncall"})
QUERY_KEYS = frozenset(
    {
        "query",
        "interval",
        "platform",
        "version",
        "shard",
        "removed",
        "snapshot",
        "denylist",
        "blacklist",
        "description",
        "value",
        "startup_priority",  # osquery 5.23.1 osquery/config/packs.cpp:278
    }
)
MAX_INTERVAL = 604800

# osquery 5.x defaults of the flags that gate evented tables (osquery/events/**, FLAG(...)).
DEFAULT_FLAGS: dict[str, bool] = {
    "disable_events": False,
    "enable_syslog": False,
    "enable_file_events": False,
    "enable_bpf_events": False,
    "disable_audit": True,
    "audit_allow_config": False,
    "audit_allow_process_events": True,
    "audit_allow_sockets": False,
    "audit_allow_user_events": True,
    "audit_allow_fim_events": False,
    "audit_allow_selinux_events": False,
    "audit_allow_apparmor_events": False,
    "audit_allow_seccomp_events": False,
}
# Audit tables fed by syscall rules need osquery to own the audit configuration.
_AUDIT_RULES = (("disable_audit", False), ("audit_allow_config", True))
_AUDIT = (("disable_audit", False),)
EVENT_FLAGS: dict[str, tuple[tuple[str, bool], ...]] = {
    "syslog_events": (("enable_syslog", True),),
    "file_events": (("enable_file_events", True),),
    "yara_events": (("enable_file_events", True),),
    "process_events": (*_AUDIT_RULES, ("audit_allow_process_events", True)),
    "socket_events": (*_AUDIT_RULES, ("audit_allow_sockets", True)),
    "process_file_events": (*_AUDIT_RULES, ("audit_allow_fim_events", True)),
    "user_events": (*_AUDIT, ("audit_allow_user_events", True)),
    "selinux_events": (*_AUDIT, ("audit_allow_selinux_events", True)),
    "apparmor_events": (*_AUDIT, ("audit_allow_apparmor_events", True)),
    "seccomp_events": (*_AUDIT, ("audit_allow_seccomp_events", True)),
    "bpf_process_events": (("enable_bpf_events", True),),
    "bpf_socket_events": (("enable_bpf_events", True),),
}

EXPENSIVE_MIN_INTERVAL = 300
EVENTED_MIN_INTERVAL = 60
EXPENSIVE_TABLES: dict[str, str] = {
    "hash": "reads and hashes every matched file",
    "file": "stats every file the path/directory glob matches",
    "yara_file": "reads and YARA-scans every matched file",
    "yara_process": "YARA-scans process memory",
    "magic": "reads every matched file through libmagic",
    "device_file": "reads the raw block device",
    "device_hash": "reads and hashes files from the raw block device",
    "curl": "makes an HTTP request and blocks until it answers or times out",
    "curl_certificate": "opens a TLS connection and blocks until it answers or times out",
    "augeas": "parses configuration files through Augeas lenses",
    "process_memory_map": "reads the memory map of every process",
    "process_open_files": "walks the open file descriptors of every process",
    "deb_package_files": "lists every file of every package",
    "rpm_package_files": "lists and hashes every file of every package",
    "python_packages": "walks every Python site-packages directory",
    "npm_packages": "walks every node_modules directory",
}
GLOB_TABLES = frozenset({"file", "hash", "yara_file", "magic"})
_GLOB_CONSTRAINT = re.compile(r"\b(path|directory)\s*(?:=|\bLIKE\b|\bGLOB\b)\s*'((?:[^']|'')*)'", re.IGNORECASE)


class JsonObject(dict[str, Any]):
    """A JSON object as osquery's rapidjson holds it: every member, repeated keys included.

    rapidjson keeps every member of a repeated key, in document order (GenericDocument::EndObject stores all
    it was handed: Tencent/rapidjson 1a825d24fa322a5fe721624b2ed7a18b6de9b48a, osquery 5.23.1's submodule,
    include/rapidjson/document.h:2495-2499), and a lookup (``HasMember``, ``operator[]``) finds the FIRST
    (FindMember, document.h:1284-1292, 1164-1167, 1249). So this mapping holds the first value of each key,
    like osquery's lookups, and :attr:`members` holds every (key, value) for code that iterates like osquery.
    """

    def __init__(self, members: Iterable[tuple[str, Any]]) -> None:
        super().__init__()
        self.members: list[tuple[str, Any]] = list(members)
        for key, value in self.members:
            self.setdefault(key, value)

    def repeated(self) -> dict[str, int]:
        """Keys that appear more than once, with how often."""
        counts: dict[str, int] = {}
        for key, _ in self.members:
            counts[key] = counts.get(key, 0) + 1
        return {key: n for key, n in counts.items() if n > 1}


def members(value: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every (key, value) of an object in document order, repeated keys included."""
    return value.members if isinstance(value, JsonObject) else list(value.items())


def parse_relaxed_json(text: str) -> tuple[Any, list[str]]:
    """Parse osquery's relaxed JSON; returns the value (objects are :class:`JsonObject`) and the repeated keys.

    Raises ValueError.
    """
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> JsonObject:
        obj = JsonObject(items)
        duplicates.extend(obj.repeated())
        return obj

    text = text.replace("\\\n", "")
    lines = ["" if line.strip().startswith(("#", "//")) else line for line in text.split("\n")]
    return json.loads("\n".join(lines), object_pairs_hook=pairs), duplicates


def _repeated_keys(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, int]]:
    """(path of the object, key, count) for every repeated key in ``value``, outermost first."""
    if isinstance(value, JsonObject):
        for key, count in value.repeated().items():
            yield path, key, count
        for key, child in value.members:
            yield from _repeated_keys(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _repeated_keys(child, (*path, f"[{i}]"))


def _flag_bool(value: FlagValue) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y", "t"}
    return bool(value)


def _int_value(value: Any) -> int | None:
    """An int or a numeric string as int; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _is_broad(column: str, pattern: str) -> bool:
    """A glob is broad when it starts with a wildcard, recurses from the root, or names the root."""
    if pattern.startswith("%"):
        return True
    fixed, wildcard, _ = pattern.partition("%")
    parts = fixed.split("/")
    depth = len([p for p in (parts[:-1] if wildcard else parts) if p])
    return depth == 0 and ("%%" in pattern or column.lower() == "directory")


def _scheduled_on(query: Any, platform: str) -> bool:
    """Whether osquery accepts this query definition on ``platform`` (osquery/config/packs.cpp:189-249;
    shard and version depend on the host and are not modelled)."""
    if not isinstance(query, dict):
        return False
    declared = query.get("platform")
    if isinstance(declared, str) and platform not in expand_platforms(declared):
        return False
    sql = query.get("query")
    if not isinstance(sql, str) or not sql:
        return False
    interval = _int_value(query["interval"]) if "interval" in query else 1
    return interval is not None and 1 <= interval <= MAX_INTERVAL


@dataclass
class _Entry:
    """One SQL text to check: a scheduled query, a discovery query, a decorator or a view."""

    pack: str | None
    name: str
    sql: str
    scheduled: bool = False
    interval: int | None = None
    platforms: frozenset[str] | None = None  # declared by the query and its pack; None: all


@dataclass
class _FileLint:
    """Findings of one input file (config or standalone pack) and of the packs it references."""

    linter: _Linter
    path: Path
    flags: dict[str, bool]
    findings: list[Finding] = field(default_factory=list)
    entries: list[tuple[str, _Entry]] = field(default_factory=list)  # (file, entry)
    scheduled_names: dict[str, str] = field(default_factory=dict)  # scheduled name -> pack/query
    views: dict[str, str] = field(default_factory=dict)
    pack_delimiter: str = "_"

    def add(
        self,
        file: Path | str,
        severity: Severity,
        code: str,
        message: str,
        fix: str,
        *,
        pack: str | None = None,
        query: str | None = None,
    ) -> None:
        self.findings.append(Finding(str(file), pack, query, severity, code, message, fix))

    # -- structure -------------------------------------------------------------------------------

    def config(self, doc: dict[str, Any]) -> None:
        self.repeated_keys(self.path, doc, None)
        for key in doc:
            if key not in CONFIG_KEYS:
                self.add(
                    self.path,
                    "warning",
                    "unknown-key",
                    f"unknown top-level key {key!r} (osquery ignores it)",
                    f"remove it or use one of: {', '.join(sorted(CONFIG_KEYS))}",
                )
        # Each option is applied in turn, so of a repeated option the last value wins: osquery 5.23.1
        # plugins/config/parsers/options.cpp:70 merges the options with JSON::mergeObject, which removes the
        # earlier member of the same name before adding the next (osquery/utils/json/json.cpp:343-354).
        options = dict(members(self._mapping(doc, "options")))
        self._check_options(options)
        self.flags = self.linter.effective_flags(options)
        self.pack_delimiter = str(options.get("pack_delimiter", self.pack_delimiter))
        for name, sql in self._mapping(doc, "views").items():
            if self._sql_entry(self.path, None, f"views.{name}", sql):
                self.views[name] = sql
        # osquery turns "schedule" into the pack "main" (osquery/config/config.cpp:774-782).
        for name, query in self._unique_queries(self.path, None, members(self._mapping(doc, "schedule"))):
            self.query(self.path, None, name, query, None)
        for name, value in self._unique_packs(members(self._mapping(doc, "packs"))):
            if isinstance(value, dict):
                self.pack(self.path, name, value)
            elif isinstance(value, str):
                resolved = self.linter.resolve_pack(value, self.path.parent)
                if resolved is None:
                    self.add(
                        self.path,
                        "error",
                        "unresolved-pack",
                        f"pack {name!r} points to {value}, which does not exist",
                        "fix the path, or pass packs_dir (the directory holding the pack files)",
                        pack=name,
                    )
                else:
                    pack_doc = self.linter.read(resolved, self)
                    if isinstance(pack_doc, dict):
                        self.repeated_keys(resolved, pack_doc, name)
                        self.pack(resolved, name, pack_doc)
            else:
                self.add(
                    self.path,
                    "error",
                    "bad-value",
                    f"pack {name!r} must be a path string or an inline pack object",
                    'write "NAME": "/path/to/pack.conf" or "NAME": {"queries": {...}}',
                    pack=name,
                )
        decorators = self._mapping(doc, "decorators")
        for kind in ("load", "always"):
            self._sql_list(self.path, None, f"decorators.{kind}", decorators.get(kind, []))
        interval_decorators = decorators.get("interval", {})
        for interval, sqls in interval_decorators.items() if isinstance(interval_decorators, dict) else ():
            self._sql_list(self.path, None, f"decorators.interval.{interval}", sqls)
        for category, sqls in self._mapping(doc, "file_paths_query").items():
            self._sql_list(self.path, None, f"file_paths_query.{category}", sqls)
        if doc.get("file_paths") and not self.flags["enable_file_events"]:
            self.add(
                self.path,
                "warning",
                "file-paths-unused",
                "file_paths is set but enable_file_events is false: no file is monitored",
                "set --enable_file_events=true in the flagfile, or remove file_paths",
            )

    def _check_options(self, options: Mapping[str, Any]) -> None:
        """Options osquery ignores (unknown, CLI-only, unparsable value): warnings, as osquery only logs them
        (see :mod:`bakery.osqueryflags`)."""
        for name, value in options.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (str, int)):
                text = str(value)
            else:
                continue  # objects/arrays become JSON text (options.cpp:86-88); not checked here
            try:
                osqueryflags.check_option(self.linter.flag_table, f"options.{name}", name, text, self.linter.platform)
            except ConfigError as exc:
                message, _, fix = str(exc).rpartition("; ")
                self.add(self.path, "warning", "ignored-option", message, fix)

    def repeated_keys(self, file: Path, doc: Any, pack: str | None) -> None:
        """Report keys repeated in ``doc``, a config (``pack`` None) or the pack file of ``pack``, with what
        osquery does with them. Repeated query and pack names are reported by :meth:`_unique_queries` and
        :meth:`_unique_packs`."""
        seen: set[tuple[tuple[str, ...], str]] = set()
        for path, key, count in _repeated_keys(doc):
            if (path, key) in seen:
                continue
            seen.add((path, key))
            where = path if pack is None else ("packs", pack, *path)
            pack_name = where[1] if len(where) >= 2 and where[0] == "packs" else None
            query_name = where[3] if len(where) == 4 and where[2] == "queries" else None
            if len(where) == 2 and where[0] == "schedule":
                query_name = where[1]
            if where in {("schedule",), ("packs",)} or (len(where) == 3 and where[0::2] == ("packs", "queries")):
                continue
            if where == ():
                what = "osquery reads only the first (osquery/config/config.cpp:774-787, 880 look keys up by name)"
            elif where == ("options",):
                what = "osquery applies them in turn, so the last value wins"
            elif len(where) == 2 and where[0] == "packs":
                what = "osquery reads only the first (osquery/config/packs.cpp:128-188 look pack keys up by name)"
            elif query_name is not None:
                what = "osquery reads only the first (osquery/config/packs.cpp:194-278 look query keys up by name)"
            else:
                what = "osquery's behaviour is undefined here (which one its parser for this key uses is not known)"
            self.add(
                file,
                "warning",
                "duplicate-key",
                f"key {key!r} appears {count} times in {'.'.join(where) or 'the top level'}: {what}",
                "keep one of them",
                pack=pack_name,
                query=query_name,
            )

    def _unique_queries(self, file: Path, pack: str | None, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The query definitions osquery schedules on the target platform, one per name.

        osquery 5.23.1 osquery/config/packs.cpp:188-259 walks a pack's queries in document order, skips those
        that do not run on this host (not an object :189, platform :201-205, no query string :229, bad interval
        :244-249), then keeps the FIRST remaining definition of a name and silently drops the rest (:252-257).
        """
        definitions: dict[str, list[Any]] = {}
        for name, query in items:
            definitions.setdefault(name, []).append(query)
        target = self.linter.platform
        unique = []
        for name, defs in definitions.items():
            if len(defs) == 1:
                unique.append((name, defs[0]))
                continue
            kept = next((i for i, d in enumerate(defs) if _scheduled_on(d, target)), None)
            if kept == 0:
                what = f"osquery schedules the first and silently drops the other {len(defs) - 1}"
            elif kept is not None:
                what = (
                    f"on {target} osquery schedules definition {kept + 1} (the first that runs there) "
                    "and silently drops the others"
                )
            else:
                what = f"none of them runs on {target}; where they run, osquery keeps the first it accepts"
            self.add(
                file,
                "error",
                "duplicate-query",
                f"query {name!r} is defined {len(defs)} times in one {'pack' if pack else 'schedule'}: {what}",
                "give each definition its own name (names must be unique within a pack), or delete the extra ones",
                pack=pack,
                query=name,
            )
            unique.append((name, defs[kept or 0]))
        return unique

    def _unique_packs(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """One definition per pack name: the LAST, as in osquery.

        osquery 5.23.1 osquery/config/config.cpp:789-797 adds every member of "packs" in turn, and
        Schedule::add (:230-232) first removes the pack of the same name and source.
        """
        definitions: dict[str, list[Any]] = {}
        for name, value in items:
            definitions.setdefault(name, []).append(value)
        for name, defs in definitions.items():
            if len(defs) > 1:
                self.add(
                    self.path,
                    "error",
                    "duplicate-pack",
                    f"pack {name!r} is defined {len(defs)} times: each replaces the previous, so osquery "
                    f"schedules only the last and silently drops the other {len(defs) - 1}",
                    "give each pack its own name, or delete the extra ones",
                    pack=name,
                )
        return [(name, defs[-1]) for name, defs in definitions.items()]

    def _mapping(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if isinstance(value, dict):
            return value
        self.add(self.path, "error", "bad-value", f"{key} must be an object", f'write "{key}": {{...}}')
        return {}

    def pack(self, file: Path, name: str, doc: dict[str, Any]) -> None:
        for key in doc:
            if key not in PACK_KEYS:
                self.add(
                    file,
                    "warning",
                    "unknown-key",
                    f"unknown pack key {key!r} (osquery ignores it)",
                    f"remove it or use one of: {', '.join(sorted(PACK_KEYS))}",
                    pack=name,
                )
        platforms = self._platforms(file, name, None, doc.get("platform"))
        self._shard(file, name, None, doc.get("shard"))
        self._sql_list(file, name, "discovery", doc.get("discovery", []), platforms)
        queries = doc.get("queries")
        if not isinstance(queries, dict):
            self.add(
                file,
                "error",
                "missing-queries",
                "pack has no queries object",
                'add "queries": {...}',
                pack=name,
            )
            return
        for query_name, query in self._unique_queries(file, name, members(queries)):
            self.query(file, name, query_name, query, platforms)

    def query(self, file: Path, pack: str | None, name: str, query: Any, pack_platforms: frozenset[str] | None) -> None:
        def add(severity: Severity, code: str, message: str, fix: str) -> None:
            self.add(file, severity, code, message, fix, pack=pack, query=name)

        if not isinstance(query, dict):
            add(
                "error",
                "bad-value",
                "a scheduled query must be an object",
                'write {"query": ..., "interval": N}',
            )
            return
        for key in query:
            if key not in QUERY_KEYS:
                add(
                    "warning",
                    "unknown-key",
                    f"unknown query key {key!r} (osquery ignores it)",
                    f"remove it or use one of: {', '.join(sorted(QUERY_KEYS))}",
                )
        interval = None
        if "interval" not in query:
            add("error", "missing-interval", "no interval", 'add "interval": 3600 (seconds)')
        else:
            interval = _int_value(query["interval"])
            if interval is None or not 1 <= interval <= MAX_INTERVAL:
                add(
                    "error",
                    "bad-interval",
                    f"interval {query['interval']!r} is not an integer in 1..{MAX_INTERVAL}",
                    "use a whole number of seconds, e.g. 3600",
                )
                interval = None
        for key in ("snapshot", "removed"):
            if key in query and not isinstance(query[key], bool):
                add("error", "bad-value", f"{key} must be true or false", f'write "{key}": true or false')
        self._shard(file, pack, name, query.get("shard"))
        platforms = self._platforms(file, pack, name, query.get("platform"))
        if pack_platforms is not None:
            platforms = pack_platforms if platforms is None else platforms & pack_platforms
        scheduled_name = name if pack is None else f"pack{self.pack_delimiter}{pack}{self.pack_delimiter}{name}"
        if scheduled_name in self.scheduled_names:
            add(
                "error",
                "duplicate-name",
                f"{scheduled_name} is also the scheduled name of {self.scheduled_names[scheduled_name]}: "
                "one replaces the other",
                "rename one of the queries (or packs)",
            )
        else:
            self.scheduled_names[scheduled_name] = f"{pack or 'schedule'}/{name}"
        sql = query.get("query")
        if not isinstance(sql, str) or not sql.strip():
            add("error", "missing-query", "no query", 'add "query": "SELECT ..."')
            return
        entry = _Entry(pack, name, sql, scheduled=True, interval=interval, platforms=platforms)
        self.entries.append((str(file), entry))

    def _sql_list(
        self, file: Path, pack: str | None, name: str, sqls: Any, platforms: frozenset[str] | None = None
    ) -> None:
        for i, sql in enumerate(sqls if isinstance(sqls, list) else [sqls]):
            self._sql_entry(file, pack, f"{name}[{i}]", sql, platforms)

    def _sql_entry(
        self, file: Path, pack: str | None, name: str, sql: Any, platforms: frozenset[str] | None = None
    ) -> bool:
        """Queue ``sql`` for checking; False (after a finding) when it is not an SQL string."""
        if not isinstance(sql, str) or not sql.strip():
            self.add(
                file,
                "error",
                "missing-query",
                "expected an SQL string",
                'write "SELECT ..."',
                pack=pack,
                query=name,
            )
            return False
        self.entries.append((str(file), _Entry(pack, name, sql, platforms=platforms)))
        return True

    def _platforms(self, file: Path, pack: str | None, name: str | None, value: Any) -> frozenset[str] | None:
        """Where osquery runs it (see :func:`bakery.lint.schema.expand_platforms`); None: everywhere.

        osquery only honours a string platform (osquery/config/packs.cpp:134, 201) and never rejects one: a word
        it does not know is ignored, so these findings are warnings.
        """
        if value is None:
            return None
        fix = (
            "use linux, darwin, windows, posix, any or all, comma-separated "
            "(osquery looks for these as case-sensitive substrings)"
        )
        if not isinstance(value, str):
            self.add(
                file,
                "warning",
                "bad-platform",
                f"platform {value!r} is not a string: osquery ignores it and runs this everywhere",
                fix,
                pack=pack,
                query=name,
            )
            return None
        platforms = expand_platforms(value)
        ignored = [] if value in {"", "null"} else ignored_platform_words(value)
        if not platforms:
            self.add(
                file,
                "warning",
                "bad-platform",
                f"platform {value!r} matches no osquery platform: osquery never runs this anywhere",
                fix,
                pack=pack,
                query=name,
            )
        elif ignored:
            self.add(
                file,
                "warning",
                "bad-platform",
                f"platform {value!r}: osquery never matches {', '.join(map(repr, ignored))} and ignores it; "
                f"this runs on {', '.join(sorted(platforms))}",
                fix,
                pack=pack,
                query=name,
            )
        return platforms

    def _shard(self, file: Path, pack: str | None, name: str | None, value: Any) -> None:
        if value is None:
            return
        shard = _int_value(value)
        if shard is None or not 1 <= shard <= 100:
            self.add(
                file,
                "error",
                "bad-shard",
                f"shard {value!r} is not an integer in 1..100",
                "use the percentage of hosts (1..100) that should run it",
                pack=pack,
                query=name,
            )

    # -- SQL, flags, cost ------------------------------------------------------------------------

    def check_entries(self) -> None:
        checker = SqlChecker(self.linter.schema, self.views)
        for file, entry in self.entries:
            self._check_entry(checker, file, entry)

    def _check_entry(self, checker: SqlChecker, file: str, entry: _Entry) -> None:
        def add(severity: Severity, code: str, message: str, fix: str) -> None:
            self.add(file, severity, code, message, fix, pack=entry.pack, query=entry.name)

        target = self.linter.platform
        runs_on_target = entry.platforms is None or target in entry.platforms
        platforms = frozenset({target}) if runs_on_target or not entry.platforms else entry.platforms
        result = checker.check(entry.sql, platforms)
        if result.error is not None:
            code, message = result.error
            if runs_on_target:
                add("error", code, message, _SQL_FIXES[code])
            else:
                # A query osquery never runs on the target cannot break it: report, but do not fail the lint.
                if entry.platforms:
                    where = ", ".join(sorted(entry.platforms))
                    note = f"the query runs on {where}, not on {target}"
                    fix = f"{_SQL_FIXES[code]}; lint with --platform {min(entry.platforms)} to check it there"
                else:
                    note, fix = "osquery never runs the query: its platform matches none", _SQL_FIXES[code]
                add("warning", code, f"{message} ({note})", fix)
        if not runs_on_target:
            return
        for table in sorted(result.tables):
            self._check_events(table, add)
            if entry.scheduled:
                self._check_cost(table, entry, add)
        if result.tables & GLOB_TABLES:
            for column, pattern in _GLOB_CONSTRAINT.findall(entry.sql):
                if _is_broad(column, pattern):
                    add(
                        "warning",
                        "broad-glob",
                        f"{column} constraint {pattern!r} walks the filesystem from its root",
                        "narrow it to the directories that matter (e.g. '/etc/%%'), "
                        "or monitor them with file_paths and file_events",
                    )

    def _check_events(self, table: str, add: _Add) -> None:
        if not self.linter.schema.tables[table].evented:
            return
        if self.flags["disable_events"]:
            add(
                "error",
                "events-disabled",
                f"{table} is evented and disable_events is true: it stays empty",
                "set --disable_events=false in the flagfile, or remove the query",
            )
            return
        if self.linter.platform != "linux":
            return
        wrong = [(flag, want) for flag, want in EVENT_FLAGS.get(table, ()) if self.flags[flag] != want]
        if wrong:
            needed = " ".join(f"--{flag}={str(want).lower()}" for flag, want in wrong)
            add(
                "error",
                "events-disabled",
                f"{table} stays empty unless osquery runs with {needed}",
                f"set {needed} in the flagfile, or remove the query",
            )

    def _check_cost(self, table: str, entry: _Entry, add: _Add) -> None:
        if table == "process_file_events":
            add(
                "warning",
                "risky-table",
                "process_file_events (audit-based FIM) can flood the events database and fill the disk",
                "prefer file_events with narrow file_paths; if you keep it, set a low --events_max",
            )
        evented = self.linter.schema.tables[table].evented
        if evented and entry.interval is not None and entry.interval < EVENTED_MIN_INTERVAL:
            add(
                "warning",
                "evented-interval",
                f"{table} is evented: every {entry.interval} s re-reads its buffer that often for little gain",
                f"schedule it every {EVENTED_MIN_INTERVAL} s or more (events are buffered in between)",
            )
        reason = EXPENSIVE_TABLES.get(table)
        if reason and entry.interval is not None and entry.interval < EXPENSIVE_MIN_INTERVAL:
            add(
                "warning",
                "expensive-interval",
                f"{table} {reason}; every {entry.interval} s is too often",
                f"schedule it every {EXPENSIVE_MIN_INTERVAL} s or more (3600 is the usual)",
            )


_SQL_FIXES = {
    "syntax-error": "fix the SQL syntax (osquery's SQL is SQLite's)",
    "unknown-table": "use a table of the osquery schema (https://osquery.io/schema/), check the spelling",
    "table-not-on-platform": 'use a table of the target platform, or restrict the query with "platform"',
    "unknown-column": "use a column of the table (hidden columns must be named explicitly)",
    "ambiguous-column": "qualify the column with its table or alias",
    "unknown-function": "use a SQLite or osquery function with the right number of arguments",
    "not-select": "schedule only SELECT statements",
    "sql-error": "fix the SQL",
}


class _Linter:
    def __init__(self, schema: Schema, platform: str, flags: Mapping[str, FlagValue], packs_dir: Path | None) -> None:
        self.schema = schema
        self.flag_table = osqueryflags.load_flags(schema.version)
        self.platform = platform
        self.flags = {name.lstrip("-"): value for name, value in flags.items()}
        self.packs_dir = packs_dir
        self.linted_packs: set[Path] = set()

    def effective_flags(self, options: Mapping[str, Any]) -> dict[str, bool]:
        merged: dict[str, bool] = dict(DEFAULT_FLAGS)
        for source in (options, self.flags):
            for name in DEFAULT_FLAGS:
                if name in source:
                    merged[name] = _flag_bool(source[name])
        return merged

    def resolve_pack(self, value: str, config_dir: Path) -> Path | None:
        given = Path(value)
        candidates = [given] if given.is_absolute() else [config_dir / given]
        if self.packs_dir is not None:
            candidates += [self.packs_dir / given.name] if given.is_absolute() else [self.packs_dir / given]
        for candidate in candidates:
            if candidate.is_file():
                self.linted_packs.add(candidate.resolve())
                return candidate
        return None

    def read(self, path: Path, lint: _FileLint) -> Any:
        """The parsed document, or None after adding an invalid-json finding."""
        try:
            doc, _ = parse_relaxed_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            lint.add(
                path,
                "error",
                "invalid-json",
                f"not valid osquery JSON: {exc}",
                "fix the JSON (comments must be whole lines starting with // or #)",
            )
            return None
        if not isinstance(doc, dict):
            lint.add(path, "error", "invalid-json", "the top level must be an object", "wrap it in {...}")
            return None
        return doc


def _is_pack(doc: dict[str, Any]) -> bool:
    return "queries" in doc and not doc.keys() & {"schedule", "packs", "options"}


def _read_all(linter: _Linter, paths: Sequence[Path]) -> list[tuple[_FileLint, Any]]:
    docs = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file to lint; pass osquery.conf or pack files")
        lint = _FileLint(linter, path, linter.effective_flags({}))
        docs.append((lint, linter.read(path, lint)))
    return docs


def lint_osquery(
    paths: Sequence[Path],
    *,
    platform: str = "linux",
    osquery_version: str = "5.23.1",
    flags: Mapping[str, FlagValue] | None = None,
    packs_dir: Path | None = None,
) -> list[Finding]:
    """Lint osquery config files (and the packs they reference) and standalone pack files.

    A file with ``queries`` and no ``schedule``/``packs``/``options`` is a pack named after its file stem;
    a pack file referenced by a config in ``paths`` is linted once, as part of that config.
    """
    if platform not in {"linux", "darwin", "windows"}:
        raise ConfigError(f"platform {platform!r} is not one of linux, darwin, windows")
    linter = _Linter(load_schema(osquery_version), platform, flags or {}, packs_dir)
    docs = _read_all(linter, paths)
    findings: list[Finding] = []
    # Configs first, so that the packs they reference are known before standalone packs are linted.
    for lint, doc in sorted(docs, key=lambda d: isinstance(d[1], dict) and _is_pack(d[1])):
        if isinstance(doc, dict) and _is_pack(doc):
            if lint.path.resolve() not in linter.linted_packs:
                lint.repeated_keys(lint.path, doc, lint.path.stem)
                lint.pack(lint.path, lint.path.stem, doc)
        elif isinstance(doc, dict):
            lint.config(doc)
        lint.check_entries()
        findings += lint.findings
    return findings
