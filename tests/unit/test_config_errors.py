"""Malformed configuration: one line naming the file/key/value and the fix, exit 2, no traceback,
nothing written under the build directory. Runs the real ``invoke`` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import MAX_LABELS, RESERVED_LABELS
from tests.unit.invoke_cli import run_invoke

CASES = [
    # (id, runtime yaml (indented under bakery:), args, env, expected substrings)
    (
        "unknown-env",
        "",
        ["render", "--env", "staging"],
        {},
        ["unknown environment 'staging'", "gprd, gstg, local"],
    ),
    (
        "unknown-variant",
        "",
        ["render", "--variant", "centos-7"],
        {},
        ["unknown variant 'centos-7'", "debian-12"],
    ),
    (
        "bad-family",
        "  environments:\n    local:\n      family: Osquery_{variant}\n",
        ["render"],
        {},
        ["bakery.environments.local.family: 'Osquery_{variant}' gives 'Osquery_debian-12'", "GCE's name rule"],
    ),
    (
        "family-too-long",
        "  environments:\n    local:\n      candidate_family: " + "a" * 60 + "-{variant}\n",
        ["render"],
        {},
        ["candidate_family", "at most 63 characters"],
    ),
    (
        "label-key",
        "  environments:\n    local:\n      labels: {Team: infrasec}\n",
        ["render"],
        {},
        ["bakery.environments.local.labels", "label key 'Team'"],
    ),
    (
        "label-value-too-long",
        "  environments:\n    local:\n      labels: {team: " + "x" * 64 + "}\n",
        ["render"],
        {},
        ["bakery.environments.local.labels", "at most 63 characters"],
    ),
    (
        "too-many-labels",
        "  environments:\n    local:\n      labels: {" + ", ".join(f"k{i}: v" for i in range(65)) + "}\n",
        ["render"],
        {},
        ["65 labels", f"so at most {MAX_LABELS - len(RESERVED_LABELS)}"],
    ),
    (
        "gce-missing-topic",
        "  environments:\n    gstg:\n      pubsub: {topic: null}\n",
        ["render", "--env", "gstg"],
        {},
        ["bakery.environments.gstg.pubsub.topic", "give a string"],
    ),
    (
        "gce-pubsub-section-null",
        "  environments:\n    gstg:\n      pubsub: null\n",
        ["render", "--env", "gstg"],
        {},
        ["runtime.yaml: bakery.environments.gstg.pubsub: got None", "invoke.yaml has a section there"],
    ),
    (
        "bad-topic",
        "  environments:\n    gstg:\n      pubsub: {project: p, topic: '1'}\n",
        ["render", "--env", "gstg"],
        {},
        ["bakery.environments.gstg.pubsub.topic", "'1'"],
    ),
    (
        "unknown-artifact-source",
        "  environments:\n    local:\n      artifacts: {source: ftp}\n",
        ["render"],
        {},
        ["bakery.environments.local.artifacts.source", "'ftp'", "'upstream', 'mirror' or 'stand-in'"],
    ),
    (
        "mirror-dir-missing",
        "  environments:\n    local:\n      artifacts: {source: mirror, mirror_dir: /nonexistent/mirror}\n",
        ["render"],
        {},
        ["mirror_dir", "'/nonexistent/mirror' does not exist"],
    ),
    (
        "mirror-without-dir",
        "  environments:\n    local:\n      artifacts: {source: mirror}\n",
        ["render"],
        {},
        ["mirror_dir", "needs mirror_dir"],
    ),
    ("yaml-syntax", "  osquery: {packs: [a, b\n", ["render"], {}, ["runtime.yaml:", "YAML syntax error"]),
    (
        "wrong-type-list",
        "  osquery:\n    packs: compliance\n",
        ["render"],
        {},
        ["bakery.osquery.packs", "give a list"],
    ),
    (
        "wrong-type-int",
        "  environments:\n    local:\n      local: {memory_mb: lots}\n",
        ["render"],
        {},
        ["bakery.environments.local.local.memory_mb", "'lots'", "give an integer"],
    ),
    (
        "unknown-key",
        "  osquery:\n    verison: 5.23.1\n",
        ["render"],
        {},
        ["bakery.osquery.verison", "remove it"],
    ),
    (
        "unknown-env-key",
        "  environments:\n    local:\n      famly: x\n",
        ["render"],
        {},
        ["bakery.environments.local.famly", "remove it"],
    ),
    (
        "env-names-unknown-variant",
        "  environments:\n    gstg:\n      variants: [rhel-9]\n",
        ["render", "--env", "gstg"],
        {},
        ["bakery.environments.gstg.variants: unknown variant 'rhel-9'"],
    ),
    (
        "bad-fingerprint",
        "  osquery:\n    repo: {fingerprint: 97A80C63C9D8B80B}\n",
        ["render"],
        {},
        ["bakery.osquery.repo.fingerprint", "'97A80C63C9D8B80B'"],
    ),
    (
        "version-mismatch",
        "  osquery:\n    version: 5.22.0\n",
        ["render"],
        {},
        ["bakery.osquery", "does not belong to version '5.22.0'"],
    ),
    (
        "bad-zone",
        "  environments:\n    gstg:\n      gce: {zone: useast1}\n",
        ["render", "--env", "gstg"],
        {},
        ["bakery.environments.gstg.gce.zone", "'useast1'"],
    ),
    (
        "env-var-wrong-type",
        "",
        ["render"],
        {"INVOKE_BAKERY_TIMEOUTS_BOOT": "soon"},
        ["environment variable INVOKE_BAKERY_TIMEOUTS_BOOT='soon'", "bakery.timeouts.boot", "is not a finite number"],
    ),
    (
        "reserved-label",
        "  environments:\n    local:\n      labels: {git-sha: abc}\n",
        ["render"],
        {},
        ["bakery.environments.local.labels", "'git-sha' is set by the project itself"],
    ),
    (
        "gce-stand-in",
        "  environments:\n    gstg:\n      artifacts: {source: stand-in}\n",
        ["render", "--env", "gstg"],
        {},
        ["bakery.environments.gstg", "cannot use artifact source 'stand-in'"],
    ),
    (
        "bad-disk-size",
        "  environments:\n    local:\n      local: {disk_size: lots}\n",
        ["render"],
        {},
        ["bakery.environments.local.local.disk_size", "'lots'", "like 4G"],
    ),
    ("unknown-pack", "  osquery:\n    packs: [no-such-pack]\n", ["render"], {}, ["packs/no-such-pack.conf"]),
    (
        "unknown-variant-pack",
        "  variants:\n    debian-12:\n      packs: [no-such-pack]\n",
        ["render"],
        {},
        ["bakery.variants.debian-12.packs names 'no-such-pack'", "packs/no-such-pack.conf"],
    ),
    (
        "bad-webhook-url",
        "  notify:\n    webhook_url: hooks.example.org/x\n",
        ["nightly"],
        {},
        ["bakery.notify.webhook_url", "is not an http(s) URL"],
    ),
    (
        "webhook-url-from-env",
        "",
        ["nightly"],
        {"INVOKE_BAKERY_NOTIFY_WEBHOOK_URL": "ftp://x"},
        ["INVOKE_BAKERY_NOTIFY_WEBHOOK_URL", "is not an http(s) URL"],
    ),
    (
        "webhook-url-bad-port",
        "  notify:\n    webhook_url: https://hooks.example.org:abc/s3cret\n",
        ["nightly"],
        {},
        ["bakery.notify.webhook_url", "is not an http(s) URL"],
    ),
    ("nightly-unknown-env", "", ["nightly", "--env", "staging"], {}, ["unknown environment 'staging'"]),
    (
        "diff-missing-manifest",
        "",
        ["diff", "/nonexistent/a.json", "b"],
        {},
        ["manifest file /nonexistent/a.json does not exist"],
    ),
]


@pytest.mark.parametrize(("runtime", "args", "env", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_one_clear_line(tmp_path: Path, runtime: str, args: list[str], env, expected) -> None:
    run = run_invoke(tmp_path, runtime, *args, env=env)
    proc, build = run.proc, run.build
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not build.exists(), sorted(build.rglob("*"))


def test_a_bad_webhook_url_is_not_echoed(tmp_path: Path) -> None:
    proc = run_invoke(tmp_path, "  notify:\n    webhook_url: https://hooks.example.org:abc/s3cret\n", "nightly").proc
    assert proc.returncode == 2 and "s3cret" not in proc.stderr + proc.stdout, proc.stderr


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    proc = run_invoke(tmp_path, "  environments:\n    local:\n      labels: {Team: x}\n", "render").proc
    assert proc.stderr.startswith(f"error: {tmp_path / 'runtime.yaml'}: "), proc.stderr


def test_error_names_the_environment_variable(tmp_path: Path) -> None:
    proc = run_invoke(tmp_path, None, "render", env={"INVOKE_BAKERY_ENVIRONMENTS_LOCAL_FAMILY": "Bad"}).proc
    assert proc.returncode == 2
    assert "environment variable INVOKE_BAKERY_ENVIRONMENTS_LOCAL_FAMILY" in proc.stderr, proc.stderr


def test_unwritable_build_dir_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    proc = run_invoke(tmp_path, "  build_dir: /proc/bakery-cannot-write-here\n", "render").proc
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bakery.build_dir: '/proc/bakery-cannot-write-here'" in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        (
            "  osquery:\n    flags: {enable_sylog: true}\n",
            "bakery.osquery.flags.enable_sylog: 'enable_sylog' is not a flag of osquery 5.23.1",
        ),
        ("  osquery:\n    flags: {events_max: -5}\n", "bakery.osquery.flags.events_max: '-5': a uint64 flag"),
        ("  osquery:\n    options: {logger_plugin: tls}\n", "bakery.osquery.options.logger_plugin: 'logger_plugin' is"),
    ],
    ids=["unknown-flag", "negative-uint-flag", "cli-only-option"],
)
def test_bad_osquery_flag_is_one_clear_line(tmp_path: Path, runtime: str, expected: str) -> None:
    run = run_invoke(tmp_path, runtime, "render")
    proc, build = run.proc, run.build
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert lines[0].startswith(f"error: {run.runtime}: "), lines[0]  # the file that set the flag
    assert not build.exists(), sorted(build.rglob("*"))
