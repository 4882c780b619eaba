"""osquery's command-line flags, shipped as data per osquery version, and the checks of flag values.

``bakery/data/osquery/flags-<version>.json`` lists every flag osquery defines (name, C++ type, macro kind,
defining file) with its provenance (``source``: repository, tag, commit; ``method``). It is a copy of
``shared/data/osquery/flags-<version>.json``; to support another osquery version, add that version's file.

Why the checks matter (osquery 5.23.1, osquery/osquery b7538338fa5bf3baeb11d660e0053b5919ed86e2):

- osqueryd reads its flagfile with gflags' ``ParseCommandLineFlags`` (osquery/core/init.cpp:355). In a
  flagfile gflags SILENTLY IGNORES a line naming an unknown flag ("By API, errors parsing flagfile lines
  are silently ignored", gflags/gflags e171aa2d15ed9eb17054558e0b3a6a413bb01067, osquery 5.23.1's
  submodule, src/gflags.cc:1310-1320), so a misspelt flag never takes effect and nothing says so; an
  illegal value for a known flag is recorded as an error (:828, :1184-1186) and osqueryd exits
  (:1962-1963), so one bad value leaves every VM without osquery. (On the command line, an unknown flag
  is fatal too: :789-796.)
- The config's ``options`` are flags set at run time, and osquery IGNORES a bad one with a warning instead:
  an unknown name is skipped (plugins/config/parsers/options.cpp:99-103; names starting ``custom_`` are
  allowed), a CLI-only flag is skipped (:105-110), and an illegal value is dropped by gflags'
  ``SetCommandLineOption``, whose result osquery does not check (osquery/core/flags.cpp:129-141). The
  bakery rejects these too: an option that does nothing is a configuration mistake.
- A flag defined in a ``darwin/`` or ``windows/`` source file is compiled only into that platform's build.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath

from bakery import vendordata
from bakery.errors import ConfigError

DATA_DIR = vendordata.DATA_DIR / "osquery"

# The data's C++ types, by the gflags type that parses them.
_TYPES = {
    "bool": "bool",
    "string": "string",
    "std::string": "string",
    "int32": "int32",
    "uint32": "uint32",
    "uint64": "uint64",
    "google::uint64": "uint64",
}
_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}
# gflags FlagValue::ParseFrom (src/gflags.cc:292-366 at e171aa2d): bools are these words, any case
# (strcasecmp, :294-305); integers are decimal, or hex after "0x" (:317-321), the whole text (:327); unsigned
# types reject a leading '-' (:335, :351); int32/uint32 must fit (:328, :338). The flagfile allows no spaces.
BOOL_WORDS = frozenset({"1", "t", "true", "y", "yes", "0", "f", "false", "n", "no"})
_SIGNED = re.compile(r"^(?:[+-]?[0-9]+|0[xX][0-9a-fA-F]+)$")
_UNSIGNED = re.compile(r"^(?:\+?[0-9]+|0[xX][0-9a-fA-F]+)$")

# Flags osqueryd's gflags also knows that osquery does not define (so the data does not list them): gflags'
# own (src/gflags.cc:119-125, src/gflags_reporting.cc:68-69 at e171aa2d) and glog's, which osquery builds
# with gflags (libraries/cmake/source/glog/CMakeLists.txt:53; google/glog
# 8f9ccfe770add9e4c64e9b25c102658e3c763b73 src/logging.cc:116-194, src/utilities.cc:74,
# src/vlog_is_on.cc:52-55). gflags' help flags defined elsewhere are not listed (not checked).
LIBRARY_FLAGS: dict[str, str] = {
    "flagfile": "string",
    "fromenv": "string",
    "tryfromenv": "string",
    "undefok": "string",
    "helpon": "string",
    "helpmatch": "string",
    "timestamp_in_logfile_name": "bool",
    "logtostderr": "bool",
    "alsologtostderr": "bool",
    "colorlogtostderr": "bool",
    "drop_log_memory": "bool",
    "stderrthreshold": "int32",
    "alsologtoemail": "string",
    "log_prefix": "bool",
    "minloglevel": "int32",
    "logbuflevel": "int32",
    "logbufsecs": "int32",
    "logemaillevel": "int32",
    "logmailer": "string",
    "logfile_mode": "int32",
    "log_dir": "string",
    "log_link": "string",
    "max_log_size": "int32",
    "stop_logging_if_full_disk": "bool",
    "log_backtrace_at": "string",
    "log_utc_time": "bool",
    "symbolize_stacktrace": "bool",
    "v": "int32",
    "vmodule": "string",
}


@dataclass(frozen=True)
class Flag:
    name: str
    type: str  # bool, string, int32, uint32 or uint64 (the gflags type)
    kind: str  # FLAG, CLI_FLAG, HIDDEN_FLAG, SHELL_FLAG, FLAG_ALIAS; LIBRARY for gflags'/glog's own
    file: str  # the defining source file

    @property
    def only_on(self) -> str | None:
        """ "darwin" or "windows" when only that platform's build has the flag; None when Linux has it."""
        parts = PurePosixPath(self.file).parts
        return next((p for p in ("darwin", "windows") if p in parts), None)


@dataclass(frozen=True)
class FlagTable:
    version: str
    flags: Mapping[str, Flag]

    def closest(self, name: str) -> str | None:
        matches = difflib.get_close_matches(name, list(self.flags), n=1)
        return matches[0] if matches else None


@cache
def load_flags(version: str) -> FlagTable:
    """The flags of osquery ``version`` (e.g. "5.23.1"); ConfigError when no data is shipped for it."""
    path = vendordata.path(
        "osquery",
        "flags",
        version,
        what="osquery flag data",
        key="bakery.osquery.version",
        how_to_add="every flag of that osquery tag, as in flags-5.23.1.json",
    )
    rows = json.loads(path.read_text(encoding="utf-8"))["flags"]
    flags = {name: Flag(name, _TYPES[row["type"]], row["kind"], row["file"]) for name, row in rows.items()}
    for name, type_ in LIBRARY_FLAGS.items():
        flags.setdefault(name, Flag(name, type_, "LIBRARY", "gflags/glog"))
    return FlagTable(version, flags)


def value_problem(flag: Flag, text: str) -> str | None:
    """Why gflags rejects ``text`` (the value as written after ``--name=``) for ``flag``; None when it parses."""
    if flag.type == "string":
        return None
    if flag.type == "bool":
        return None if text.lower() in BOOL_WORDS else "a bool flag takes true or false"
    low, high = _RANGES[flag.type]
    pattern = _SIGNED if flag.type == "int32" else _UNSIGNED
    if pattern.match(text) and low <= int(text, 16 if text.lower().startswith("0x") else 10) <= high:
        return None
    return f"a {flag.type} flag takes a whole number from {low} to {high}"


_BUILDS = {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}


def _find(table: FlagTable, key: str, name: str, consequence: str, platform: str) -> Flag:
    flag = table.flags.get(name)
    if flag is None:
        closest = table.closest(name)
        hint = f"did you mean {closest!r}? " if closest else ""
        raise ConfigError(
            f"{key}: {name!r} is not a flag of osquery {table.version}: {consequence}; {hint}fix the name"
        )
    if flag.only_on is not None and flag.only_on != platform:
        raise ConfigError(
            f"{key}: {name!r} is not available on {_BUILDS.get(platform, platform)} builds of osquery "
            f"{table.version} (defined only in {flag.file}): {consequence}; remove it"
        )
    return flag


def check_flag(table: FlagTable, key: str, name: str, text: str, platform: str = "linux") -> Flag:
    """Check one flagfile line ``--name=text``; ConfigError (naming ``key``) when osqueryd would silently
    ignore it (unknown name, other platform's flag) or would not start (illegal value)."""
    flag = _find(table, key, name, "osqueryd silently ignores it in a flagfile, so it never takes effect", platform)
    problem = value_problem(flag, text)
    if problem:
        raise ConfigError(f"{key}: {text!r}: {problem}: osqueryd exits at startup on it; fix the value")
    return flag


def check_option(table: FlagTable, key: str, name: str, text: str, platform: str = "linux") -> Flag | None:
    """Check one config option; ConfigError (naming ``key``) when osquery would ignore it. None: custom_*."""
    if name.startswith("custom_"):
        return None
    consequence = "osquery ignores it in the config's options"
    flag = _find(table, key, name, consequence, platform)
    if flag.kind == "CLI_FLAG":
        raise ConfigError(f"{key}: {name!r} is a CLI-only flag: {consequence}; set it in bakery.osquery.flags instead")
    problem = value_problem(flag, text)
    if problem:
        raise ConfigError(f"{key}: {text!r}: {problem}: {consequence}; fix the value")
    return flag
