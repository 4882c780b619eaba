"""osquery config/pack lint: one fixture per defect, clean traps, the shipped packs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakery.errors import ConfigError
from bakery.lint import SHIPPED_PACK_FLAGS, Finding, lint_osquery
from bakery.lint.osquery import parse_relaxed_json

TESTS = Path(__file__).resolve().parents[2]
DEFECTS = TESTS / "fixtures" / "lint" / "osquery" / "defects"
CLEAN = TESTS / "fixtures" / "lint" / "osquery" / "clean"
PACKS = TESTS.parent / "packs"


def _summary(findings: list[Finding]) -> list[tuple[str, str, str | None, str | None, str]]:
    return [(Path(f.file).name, f.code, f.pack, f.query, f.severity) for f in findings]


# fixture -> expected (code, pack, query, severity), in report order.
DEFECT_CASES: dict[str, list[tuple[str, str | None, str | None, str]]] = {
    "syntax-error": [("syntax-error", "syntax-error", "q", "error")],
    "unknown-table": [("unknown-table", "unknown-table", "q", "error")],
    "unknown-column": [("unknown-column", "unknown-column", "q", "error")],
    "ambiguous-column": [("ambiguous-column", "ambiguous-column", "q", "error")],
    "table-not-on-platform": [("table-not-on-platform", "table-not-on-platform", "q", "error")],
    "unknown-function": [("unknown-function", "unknown-function", "q", "error")],
    "not-select": [("not-select", "not-select", "q", "error")],
    "missing-query": [("missing-query", "missing-query", "q", "error")],
    "missing-interval": [("missing-interval", "missing-interval", "q", "error")],
    "bad-interval": [("bad-interval", "bad-interval", "q", "error")],
    "bad-interval-string": [("bad-interval", "bad-interval-string", "q", "error")],
    "bad-platform": [("bad-platform", "bad-platform", "q", "error")],
    "bad-shard": [("bad-shard", "bad-shard", "q", "error")],
    "bad-value": [("bad-value", "bad-value", "q", "error")],
    "unknown-query-key": [("unknown-key", "unknown-query-key", "q", "warning")],
    "syslog-events-disabled": [("events-disabled", "syslog-events-disabled", "q", "error")],
    "process-events-disabled": [("events-disabled", "process-events-disabled", "q", "error")],
    "file-events-disabled": [("events-disabled", "file-events-disabled", "q", "error")],
    "expensive-interval": [("expensive-interval", "expensive-interval", "q", "warning")],
    "evented-interval": [
        ("events-disabled", "evented-interval", "q", "error"),
        ("evented-interval", "evented-interval", "q", "warning"),
    ],
    "risky-table": [
        ("events-disabled", "risky-table", "q", "error"),
        ("risky-table", "risky-table", "q", "warning"),
    ],
    "broad-glob": [("broad-glob", "broad-glob", "q", "warning")],
    "broad-glob-directory": [("broad-glob", "broad-glob-directory", "q", "warning")],
    "duplicate-key": [("duplicate-key", None, None, "warning")],
    "invalid-json": [("invalid-json", None, None, "error")],
    "unknown-top-level-key": [("unknown-key", None, None, "warning")],
    "unresolved-pack": [("unresolved-pack", "missing", None, "error")],
    "duplicate-name": [("duplicate-name", "ir", "uptime", "error")],
    "file-paths-unused": [("file-paths-unused", None, None, "warning")],
    "events-disabled-by-options": [("events-disabled", None, "hardware", "error")],
    "bad-decorator": [("unknown-column", None, "decorators.load[1]", "error")],
    "bad-view": [
        ("unknown-table", None, "views.sessions", "error"),
        ("unknown-table", None, "sessions", "error"),
    ],
}


@pytest.mark.parametrize("name", sorted(DEFECT_CASES))
def test_defect_fixture_reports_its_code(name: str) -> None:
    path = DEFECTS / f"{name}.conf"
    findings = lint_osquery([path])
    expected = [(path.name, code, pack, query, sev) for code, pack, query, sev in DEFECT_CASES[name]]
    assert _summary(findings) == expected


def test_every_defect_fixture_is_covered() -> None:
    assert sorted(p.stem for p in DEFECTS.glob("*.conf")) == sorted(DEFECT_CASES)


def test_process_events_enabled_by_audit_flags_lints_clean() -> None:
    flags: dict[str, str | bool | int] = {
        "disable_audit": "false",
        "audit_allow_config": True,
        "disable_events": 0,
    }
    assert lint_osquery([DEFECTS / "process-events-disabled.conf"], flags=flags) == []


def test_flagfile_flags_override_config_options() -> None:
    findings = lint_osquery([DEFECTS / "events-disabled-by-options.conf"], flags={"--disable_events": False})
    assert findings == []


def test_clean_config_with_traps_lints_clean() -> None:
    """Hidden columns, aliases, subqueries, osquery functions, '/etc/%%', file.path, posix, // in strings."""
    assert lint_osquery([CLEAN / "osquery.conf", CLEAN / "packs" / "extra.conf"]) == []


def test_pack_referenced_by_config_is_linted_with_config_name(tmp_path: Path) -> None:
    pack = tmp_path / "packs" / "p.conf"
    pack.parent.mkdir()
    pack.write_text(json.dumps({"queries": {"q": {"query": "SELECT nope FROM users;", "interval": 60}}}))
    config = tmp_path / "osquery.conf"
    config.write_text(json.dumps({"packs": {"mine": "/etc/osquery/packs/p.conf"}}))
    findings = lint_osquery([config, pack], packs_dir=pack.parent)
    assert _summary(findings) == [("p.conf", "unknown-column", "mine", "q", "error")]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pid, cgroup_path, upid, uppid FROM processes;",
        "SELECT u.username, k.key_file FROM users u JOIN authorized_keys k USING (uid);",
        "SELECT name FROM (SELECT name, pid FROM processes WHERE pid > 1) AS p ORDER BY name;",
        "SELECT community_id_v1(local_address, remote_address, local_port, remote_port, protocol)"
        " FROM process_open_sockets;",
        "SELECT to_base64(cmdline), from_base64(''), conditional_to_base64(name) FROM processes;",
        "SELECT path FROM file WHERE path LIKE '/etc/%%';",
        "SELECT path, sha256 FROM hash WHERE path IN (SELECT path FROM file WHERE directory = '/usr/bin');",
        "SELECT sqrt(total_seconds), log10(total_seconds), floor(days), power(2, 3), pi() FROM uptime;",
        "WITH recent AS (SELECT username, time FROM last) SELECT username FROM recent;",
    ],
)
def test_sql_false_positive_traps_lint_clean(tmp_path: Path, sql: str) -> None:
    pack = tmp_path / "trap.conf"
    pack.write_text(json.dumps({"queries": {"q": {"query": sql, "interval": 3600}}}))
    assert lint_osquery([pack]) == []


def test_query_for_another_platform_is_checked_against_that_platform(tmp_path: Path) -> None:
    pack = tmp_path / "mac.conf"
    query = {"query": "SELECT label, nope FROM launchd;", "interval": 3600, "platform": "darwin"}
    pack.write_text(json.dumps({"queries": {"q": query}}))
    assert _summary(lint_osquery([pack])) == [("mac.conf", "unknown-column", "mac", "q", "error")]


def test_shipped_packs_lint_clean() -> None:
    packs = sorted(PACKS.glob("*.conf"))
    assert [p.name for p in packs] == ["compliance.conf", "incident-response.conf", "osquery-monitoring.conf"]
    assert lint_osquery(packs, flags=SHIPPED_PACK_FLAGS) == []


def test_shipped_packs_need_enable_syslog() -> None:
    findings = lint_osquery(sorted(PACKS.glob("*.conf")), flags={"disable_events": False})
    assert _summary(findings) == [
        ("incident-response.conf", "events-disabled", "incident-response", "ssh_auth_failures", "error")
    ]


def test_shipped_packs_are_linux_only() -> None:
    for path in PACKS.glob("*.conf"):
        assert json.loads(path.read_text())["platform"] == "linux", path.name


def test_relaxed_json_keeps_double_slash_inside_strings() -> None:
    text = '// comment\n# comment\n{\n  // another\n  "url": "http://example.invalid//x"\n}\n'
    assert parse_relaxed_json(text) == ({"url": "http://example.invalid//x"}, [])


def test_missing_input_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file to lint"):
        lint_osquery([tmp_path / "nope.conf"])


def test_unknown_platform_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"platform 'macos' is not one of linux, darwin, windows"):
        lint_osquery([CLEAN / "osquery.conf"], platform="macos")
