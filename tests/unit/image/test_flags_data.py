"""osquery flag data (bakery/data/osquery/flags-*.json) and the flag/option checks built on it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bakery import cli, imagefiles, osqueryflags
from bakery.config import BuildSpec
from bakery.errors import ConfigError
from bakery.lint import lint_osquery
from bakery.lint.osquery import DEFAULT_FLAGS, EVENT_FLAGS

ROOT = Path(__file__).resolve().parents[3]
SHARED_FLAGS = ROOT.parent / "shared" / "data" / "osquery" / "flags-5.23.1.json"
DATA = osqueryflags.DATA_DIR / "flags-5.23.1.json"


@pytest.fixture(scope="module")
def spec() -> BuildSpec:
    return cli.project_settings().specs("local")[0]


def _with(spec: BuildSpec, **osquery: Any) -> BuildSpec:
    config = spec.config.model_copy(update={"osquery": spec.config.osquery.model_copy(update=osquery)})
    return replace(spec, config=config)


def _error(spec: BuildSpec, **osquery: Any) -> str:
    with pytest.raises(ConfigError) as err:
        imagefiles.flags(_with(spec, **osquery))
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.skipif(not SHARED_FLAGS.is_file(), reason="shared/ flag data not beside the repo")
def test_shipped_flag_data_is_the_shared_copy() -> None:
    assert DATA.read_bytes() == SHARED_FLAGS.read_bytes()


def test_flag_data_keeps_its_provenance() -> None:
    doc = json.loads(DATA.read_text())
    assert doc["source"] == {
        "commit": "b7538338fa5bf3baeb11d660e0053b5919ed86e2",
        "repo": "osquery/osquery",
        "tag": "5.23.1",
    }
    assert len(doc["flags"]) == 280
    assert "ParseCommandLineFlags" in doc["method"]


def test_every_data_type_maps_to_a_gflags_type() -> None:
    table = osqueryflags.load_flags("5.23.1")
    assert {f.type for f in table.flags.values()} == {"bool", "string", "int32", "uint32", "uint64"}


def test_version_without_flag_data_is_one_config_error(spec: BuildSpec) -> None:
    message = _error(spec, version="5.22.0", package_version="5.22.0-1.linux")
    assert message.startswith("bakery.osquery.version: no osquery flag data for version 5.22.0; available: 5.23.1;")


def test_base_flags_are_valid_osquery_flags() -> None:
    table = osqueryflags.load_flags("5.23.1")
    for name, value in imagefiles.BASE_FLAGS.items():
        text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        osqueryflags.check_flag(table, f"BASE_FLAGS.{name}", name, text)


def test_invoke_yaml_flags_and_options_pass(spec: BuildSpec) -> None:
    assert spec.config.osquery.flags  # invoke.yaml sets flags: they must all be known and well typed
    merged = imagefiles.flags(spec)
    assert set(spec.config.osquery.flags) <= set(merged)


def test_linter_flag_names_exist_in_osquery() -> None:
    table = osqueryflags.load_flags("5.23.1")
    names = set(DEFAULT_FLAGS) | {flag for needs in EVENT_FLAGS.values() for flag, _ in needs}
    assert {name: table.flags[name].type for name in names if name in table.flags} == dict.fromkeys(names, "bool")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"enable_sylog": True},
            "bakery.osquery.flags.enable_sylog: 'enable_sylog' is not a flag of osquery 5.23.1: osqueryd silently "
            "ignores it in a flagfile, so it never takes effect; did you mean 'enable_syslog'? fix the name",
        ),
        ({"verbose": "maybe"}, "bakery.osquery.flags.verbose: 'maybe': a bool flag takes true or false: osqueryd"),
        ({"verbose": 2}, "bakery.osquery.flags.verbose: '2': a bool flag takes true or false"),
        ({"events_max": -1}, "bakery.osquery.flags.events_max: '-1': a uint64 flag takes a whole number from 0 to"),
        ({"events_max": True}, "bakery.osquery.flags.events_max: 'true': a uint64 flag"),
        ({"events_expiry": "1h"}, "bakery.osquery.flags.events_expiry: '1h': a uint64 flag"),
        ({"events_expiry": 1.5}, "bakery.osquery.flags.events_expiry: '1.5': a uint64 flag"),
        ({"events_max": 2**64}, "a uint64 flag takes a whole number from 0 to 18446744073709551615"),
        ({"thrift_timeout": 2**32}, "bakery.osquery.flags.thrift_timeout: '4294967296': a uint32 flag"),
        ({"logger_min_status": 2**31}, "a int32 flag takes a whole number from -2147483648 to 2147483647"),
        ({"logger_min_status": "0x"}, "bakery.osquery.flags.logger_min_status: '0x': a int32 flag"),
        (
            {"allow_handle_threads": True},
            "bakery.osquery.flags.allow_handle_threads: 'allow_handle_threads' is not available on Linux builds of "
            "osquery 5.23.1 (defined only in osquery/tables/system/windows/process_open_handles.cpp): osqueryd "
            "silently ignores it",
        ),
        ({"keychain_access_interval": 5}, "not available on Linux builds of osquery 5.23.1"),
    ],
)
def test_bad_flag_is_one_config_error(spec: BuildSpec, flags: dict[str, Any], message: str) -> None:
    assert message in _error(spec, flags=flags)


@pytest.mark.parametrize(
    "flags",
    [
        {"verbose": True},
        {"verbose": "YES"},
        {"verbose": "0"},
        {"verbose": "f"},
        {"events_max": "0x10"},
        {"events_max": 2**64 - 1},
        {"thrift_timeout": 2**32 - 1},
        {"logger_min_status": -1},
        {"logger_min_status": "+2"},
        {"logtostderr": True},  # glog's, linked into osqueryd
        {"db_path": "/var/osquery/osquery.db"},  # FLAG_ALIAS of database_path
    ],
)
def test_flags_gflags_parses_are_accepted(spec: BuildSpec, flags: dict[str, Any]) -> None:
    imagefiles.flags(_with(spec, flags=flags))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"schedule_splay_percnt": 10},
            "bakery.osquery.options.schedule_splay_percnt: 'schedule_splay_percnt' is not a flag of osquery 5.23.1: "
            "osquery ignores it in the config's options; did you mean 'schedule_splay_percent'?",
        ),
        (
            {"logger_plugin": "filesystem"},
            "bakery.osquery.options.logger_plugin: 'logger_plugin' is a CLI-only flag: osquery ignores it in the "
            "config's options; set it in bakery.osquery.flags instead",
        ),
        ({"events_max": "lots"}, "bakery.osquery.options.events_max: 'lots': a uint64 flag takes a whole number"),
        ({"allow_handle_threads": True}, "not available on Linux builds of osquery 5.23.1"),
    ],
)
def test_bad_option_is_one_config_error(spec: BuildSpec, options: dict[str, Any], message: str) -> None:
    assert message in _error(spec, options=options)


def test_custom_and_runtime_options_are_accepted(spec: BuildSpec) -> None:
    imagefiles.flags(_with(spec, options={"custom_team": "infrasec", "events_max": 1000, "verbose": False}))


@pytest.mark.parametrize(
    ("flag", "text", "ok"),
    [
        ("bool", "True", True),
        ("bool", "n", True),
        ("bool", "", False),
        ("bool", "on", False),
        ("uint64", "0", True),
        ("uint64", "0X1f", True),
        ("uint64", "-0", False),
        ("uint64", "", False),
        ("uint32", "4294967295", True),
        ("uint32", "0x100000000", False),
        ("int32", "-2147483648", True),
        ("int32", "-0x10", False),
        ("string", "", True),
    ],
)
def test_value_problem_follows_gflags_parsing(flag: str, text: str, ok: bool) -> None:
    problem = osqueryflags.value_problem(osqueryflags.Flag("f", flag, "FLAG", "osquery/x.cpp"), text)
    assert (problem is None) is ok, problem


def test_linter_warns_about_options_osquery_ignores(tmp_path: Path) -> None:
    config = tmp_path / "osquery.conf"
    config.write_text(json.dumps({"options": {"enable_sylog": True, "logger_plugin": "tls", "custom_x": "1"}}))
    findings = lint_osquery([config])
    assert [(f.severity, f.code) for f in findings] == [("warning", "ignored-option")] * 2
    assert findings[0].message.endswith("osquery ignores it in the config's options")
    assert findings[0].fix == "did you mean 'enable_syslog'? fix the name"
