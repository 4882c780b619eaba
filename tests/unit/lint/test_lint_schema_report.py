"""Schema data selection and finding reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakery.errors import ConfigError
from bakery.lint import Finding, exit_code, format_json, format_text, load_schema
from bakery.lint.schema import DATA_DIR, compact, expand_platforms, ignored_platform_words, parse_schema
from bakery.lint.sql import SqlChecker

SHARED_SCHEMA = Path(__file__).resolve().parents[4] / "shared" / "data" / "osquery" / "schema-5.23.1.json"

ERROR = Finding("osquery.conf", "ir", "q", "error", "unknown-table", "no table x", "fix it")
WARNING = Finding("f.conf:3", None, None, "warning", "time-key-dropped", "dropped", "keep it")


def test_schema_5_23_1_is_shipped_and_complete() -> None:
    schema = load_schema("5.23.1")
    assert len(schema.tables) == 286
    assert len(schema.on(frozenset({"linux"}))) == 158
    file_table = schema.tables["file"]
    assert [c.name for c in file_table.columns if c.required] == ["path", "directory"]
    assert schema.tables["syslog_events"].evented


@pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason="shared/ schema source not beside the repo")
def test_shipped_schema_is_compact_of_the_website_schema() -> None:
    raw = json.loads(SHARED_SCHEMA.read_text())
    assert (DATA_DIR / "schema-5.23.1.json").read_text() == compact(raw)


def test_unknown_osquery_version_names_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_schema("4.9.0")
    assert str(info.value).startswith(
        "bakery.osquery.version: no osquery table schema for version 4.9.0; available: 5.23.1; use one of those "
        "or add bakery/data/osquery/schema-4.9.0.json"
    )


@pytest.mark.parametrize(
    ("value", "platforms"),
    [
        ("ubuntu", {"linux"}),
        ("centos", {"linux"}),
        ("linux,macos", {"linux"}),
        ("darwin,windows", {"darwin", "windows"}),
        ("posix", {"darwin", "linux", "freebsd"}),
        ("all", {"darwin", "linux", "windows", "freebsd"}),
        ("null", {"darwin", "linux", "windows", "freebsd"}),
        ("", {"darwin", "linux", "windows", "freebsd"}),
        ("Linux", set()),
        ("gentoo", set()),
    ],
)
def test_expand_platforms_mirrors_osquery_check_platform(value: str, platforms: set[str]) -> None:
    assert expand_platforms(value) == platforms


def test_ignored_platform_words() -> None:
    assert ignored_platform_words("linux, macos,ubuntu,,Linux") == ["macos", "Linux"]


def test_posix_platform_tables_are_on_linux() -> None:
    assert expand_platforms("posix") == {"darwin", "linux", "freebsd"}
    schema = parse_schema(
        "test",
        [{"name": "t", "platforms": ["posix"], "evented": False, "columns": [["a", "text", True, False]]}],
    )
    result = SqlChecker(schema).check("SELECT a FROM t", frozenset({"linux"}))
    assert result.error is None
    assert result.tables == {"t"}


def test_format_text_one_line_per_finding() -> None:
    assert format_text([ERROR, WARNING]) == (
        "osquery.conf: [ir/q] error unknown-table: no table x; fix: fix it\n"
        "f.conf:3: warning time-key-dropped: dropped; fix: keep it"
    )


def test_format_json_round_trips() -> None:
    assert json.loads(format_json([ERROR])) == [
        {
            "file": "osquery.conf",
            "pack": "ir",
            "query": "q",
            "severity": "error",
            "code": "unknown-table",
            "message": "no table x",
            "fix": "fix it",
        }
    ]


@pytest.mark.parametrize(
    ("findings", "strict", "code"),
    [
        ([], False, 0),
        ([], True, 0),
        ([WARNING], False, 0),
        ([WARNING], True, 2),
        ([ERROR, WARNING], False, 2),
        ([ERROR], True, 2),
    ],
)
def test_exit_code(findings: list[Finding], strict: bool, code: int) -> None:
    assert exit_code(findings, strict) == code
