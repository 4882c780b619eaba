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
    "bad-platform": [("bad-platform", "bad-platform", "q", "warning")],
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
    "duplicate-key": [("duplicate-key", "duplicate-key", "q", "warning")],
    "duplicate-query": [("duplicate-query", "duplicate-query", "q", "error")],
    "duplicate-pack": [("duplicate-pack", "ir", None, "error")],
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


def test_sql_error_in_a_query_for_another_platform_is_a_warning(tmp_path: Path) -> None:
    pack = tmp_path / "mac.conf"
    query = {"query": "SELECT label, nope FROM launchd;", "interval": 3600, "platform": "darwin"}
    pack.write_text(json.dumps({"queries": {"q": query}}))
    assert _summary(lint_osquery([pack])) == [("mac.conf", "unknown-column", "mac", "q", "warning")]
    assert _summary(lint_osquery([pack], platform="darwin")) == [("mac.conf", "unknown-column", "mac", "q", "error")]


def test_sql_error_in_a_pack_for_another_platform_is_a_warning(tmp_path: Path) -> None:
    pack = tmp_path / "mac.conf"
    query = {"query": "SELECT label, nope FROM launchd;", "interval": 3600}
    pack.write_text(json.dumps({"platform": "darwin", "queries": {"q": query}}))
    (finding,) = lint_osquery([pack])
    assert (finding.severity, finding.code) == ("warning", "unknown-column")
    assert "runs on darwin, not on linux" in finding.message
    assert "--platform darwin" in finding.fix
    assert [f.severity for f in lint_osquery([pack], platform="darwin")] == ["error"]


@pytest.mark.parametrize("platform", ["ubuntu", "centos", "linux", "posix", "any", "all", "", "null", "ubuntu,centos"])
def test_platforms_osquery_runs_on_linux_lint_clean(tmp_path: Path, platform: str) -> None:
    pack = tmp_path / "p.conf"
    query = {"query": "SELECT * FROM uptime;", "interval": 3600, "platform": platform}
    pack.write_text(json.dumps({"platform": platform, "queries": {"q": query}}))
    assert lint_osquery([pack]) == []


def test_upstream_it_compliance_pack_lints_without_errors() -> None:
    """osquery's own pack uses "ubuntu", "centos", "posix", "darwin", "windows" and "gentoo" platforms."""
    path = TESTS / "fixtures" / "lint" / "osquery" / "upstream" / "it-compliance.conf"
    findings = lint_osquery([path])
    assert _summary(findings) == [
        # osquery's checkPlatform matches no substring of "gentoo": that query never runs.
        ("it-compliance.conf", "bad-platform", "it-compliance", "portage_packages", "warning"),
        # a darwin-only query naming a table 5.23.1 no longer has: not a Linux problem.
        ("it-compliance.conf", "unknown-table", "it-compliance", "alf_services", "warning"),
    ]
    darwin = lint_osquery([path], platform="darwin")
    assert ("unknown-table", "alf_services", "error") in [(f.code, f.query, f.severity) for f in darwin]


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("linux,macos", "osquery never matches 'macos' and ignores it; this runs on linux"),
        ("Linux", "matches no osquery platform: osquery never runs this anywhere"),
        ("macos", "matches no osquery platform: osquery never runs this anywhere"),
        (["linux"], "is not a string: osquery ignores it and runs this everywhere"),
    ],
)
def test_platform_osquery_ignores_is_a_warning(tmp_path: Path, platform: object, message: str) -> None:
    pack = tmp_path / "p.conf"
    pack.write_text(
        json.dumps({"queries": {"q": {"query": "SELECT * FROM uptime;", "interval": 3600, "platform": platform}}})
    )
    (finding,) = lint_osquery([pack])
    assert (finding.severity, finding.code) == ("warning", "bad-platform")
    assert message in finding.message


def test_repeated_query_name_keeps_the_first_definition(tmp_path: Path) -> None:
    pack = tmp_path / "p.conf"
    pack.write_text(
        '{"queries": {"q": {"query": "SELECT * FROM uptime;", "interval": 3600},\n'
        '             "q": {"query": "SELECT nope FROM time;", "interval": 3600}}}'
    )
    (finding,) = lint_osquery([pack])  # the dropped second definition's SQL is not linted
    assert (finding.severity, finding.code, finding.query) == ("error", "duplicate-query", "q")
    assert "schedules the first and silently drops the other 1" in finding.message


def test_repeated_query_name_keeps_the_first_that_runs_on_the_target(tmp_path: Path) -> None:
    config = tmp_path / "osquery.conf"
    config.write_text(
        '{"schedule": {"q": {"query": "SELECT nope FROM launchd;", "interval": 3600, "platform": "darwin"},\n'
        '              "q": {"query": "SELECT nope FROM uptime;", "interval": 3600}}}'
    )
    findings = lint_osquery([config])
    assert _summary(findings) == [
        ("osquery.conf", "duplicate-query", None, "q", "error"),
        ("osquery.conf", "unknown-column", None, "q", "error"),  # the linux definition is the one linted
    ]
    assert "on linux osquery schedules definition 2" in findings[0].message


def test_repeated_pack_name_keeps_the_last_pack(tmp_path: Path) -> None:
    findings = lint_osquery([DEFECTS / "duplicate-pack.conf"])
    assert "osquery schedules only the last" in findings[0].message


def test_repeated_query_key_osquery_reads_the_first(tmp_path: Path) -> None:
    (finding,) = lint_osquery([DEFECTS / "duplicate-key.conf"])
    assert (
        finding.message == "key 'interval' appears 2 times in packs.duplicate-key.queries.q: osquery reads only "
        "the first (osquery/config/packs.cpp:194-278 look query keys up by name)"
    )


def test_repeated_option_last_value_wins(tmp_path: Path) -> None:
    config = tmp_path / "osquery.conf"
    config.write_text(
        '{"options": {"enable_syslog": false, "enable_syslog": true},\n'
        ' "schedule": {"q": {"query": "SELECT * FROM syslog_events;", "interval": 3600}}}'
    )
    findings = lint_osquery([config])
    assert _summary(findings) == [("osquery.conf", "duplicate-key", None, None, "warning")]
    assert "the last value wins" in findings[0].message


def test_repeated_key_elsewhere_does_not_claim_a_winner(tmp_path: Path) -> None:
    config = tmp_path / "osquery.conf"
    config.write_text('{"file_paths": {"etc": ["/etc/%%"], "etc": ["/usr/%%"]}}')
    findings = lint_osquery([config], flags={"enable_file_events": True})
    assert [f.code for f in findings] == ["duplicate-key"]
    assert "osquery's behaviour is undefined here" in findings[0].message


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
