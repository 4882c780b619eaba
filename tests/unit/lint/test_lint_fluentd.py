"""Fluentd snippet structure lint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import cli, render
from bakery.lint import lint_fluentd
from bakery.lint.fluentd import lint_fluentd_main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lint" / "fluentd"

# fixture -> expected (file:line, severity, code) in report order.
CASES = {
    "good": [],
    "unclosed": [("unclosed.conf:6", "error", "unbalanced-directive")],
    "stray-close": [("stray-close.conf:4", "error", "unbalanced-directive")],
    "missing-type": [("missing-type.conf:1", "error", "missing-type")],
    "tail-missing-params": [
        ("tail-missing-params.conf:1", "error", "missing-param"),
        ("tail-missing-params.conf:1", "error", "missing-param"),
    ],
    "tail-missing-parse": [("tail-missing-parse.conf:1", "error", "missing-parse")],
    "duplicate-pos-file": [("duplicate-pos-file.conf:13", "error", "duplicate-pos-file")],
    "time-key-dropped": [("time-key-dropped.conf:8", "warning", "time-key-dropped")],
    "pubsub-key-no-topic": [
        ("pubsub-key-no-topic.conf:1", "error", "missing-param"),
        ("pubsub-key-no-topic.conf:4", "warning", "credential-key-file"),
    ],
    "unknown-directive": [("unknown-directive.conf:1", "error", "unknown-directive")],
    "bad-line": [("bad-line.conf:3", "error", "syntax-error")],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fluentd_fixture(name: str) -> None:
    findings = lint_fluentd(FIXTURES / f"{name}.conf")
    assert [(Path(f.file).name, f.severity, f.code) for f in findings] == CASES[name]
    assert all(f.pack is None and f.query is None for f in findings)


def test_every_fluentd_fixture_is_covered() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.conf")) == sorted(CASES)


def test_tail_missing_params_names_them() -> None:
    messages = [f.message for f in lint_fluentd(FIXTURES / "tail-missing-params.conf")]
    assert [m.split(" (")[0] for m in messages] == ["tail source has no pos_file", "tail source has no tag"]


def test_pos_file_shared_across_snippets_is_an_error(tmp_path: Path) -> None:
    from bakery.lint.rendered import _shared_pos_files

    source = (
        "<source>\n  @type tail\n  path /var/log/{n}.log\n  pos_file /var/log/fluent/shared.pos\n  tag {n}\n</source>\n"
    )
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text(source.format(n="a"))
    second.write_text(source.format(n="b"))
    findings = _shared_pos_files([first, second])
    assert [(f.file, f.code, f.severity) for f in findings] == [(f"{second}:4", "duplicate-pos-file", "error")]
    assert _shared_pos_files([first]) == []


OLD_MAIN = "<system>\n  log_level info\n</system>\n\n@include conf.d/*.conf\n"  # what the image baked before


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        (OLD_MAIN, ["wildcard-include", "include-dir-enabled"]),
        ("<system>\n  log_level info\n</system>\n@include conf.d/osquery.conf\n", ["include-dir-enabled"]),
        ('<system>\n  config_include_dir ""\n</system>\n@include conf.d/*.conf\n', ["wildcard-include"]),
        ('<system>\n  config_include_dir ""\n</system>\n@include conf.d/osquery.conf\n', []),
        ('<system>\n  config_include_dir ""\n</system>\ninclude conf.d/*.conf # v0 syntax\n', ["wildcard-include"]),
        ('<system>\n  config_include_dir ""\n</system>\n# @include conf.d/*.conf\n', []),
    ],
)
def test_main_config_loads_only_named_files(tmp_path: Path, text: str, codes: list[str]) -> None:
    path = tmp_path / "fluentd.conf"
    path.write_text(text)
    assert sorted(f.code for f in lint_fluentd_main(path)) == sorted(codes)
    assert all(f.severity == "error" for f in lint_fluentd_main(path))


def test_rendered_main_config_is_clean() -> None:
    for spec in cli.project_settings().all_specs():
        context = render.image_context(spec)
        text = render.jinja_env().get_template("image/etc/fluent/fluentd.conf.j2").render(context)
        assert 'config_include_dir ""' in text and "@include conf.d/osquery.conf" in text
