"""Golden files for every rendered image file, plus parse checks of each language."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bakery import cli, imagefiles, render
from bakery.config import BuildSpec
from bakery.lint.fluentd import lint_fluentd
from tests.support import build_in

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "image"
UPDATE = os.environ.get("BAKERY_UPDATE_GOLDEN") == "1"
SPECS = [("local", "debian-12"), ("gstg", "ubuntu-2404"), ("gprd", "ubuntu-2204")]


def _spec(env: str, variant: str, tmp: Path) -> BuildSpec:
    return build_in(cli.project_settings().specs(env, variant)[0], tmp)


@pytest.fixture(scope="module", params=SPECS, ids=[f"{e}-{v}" for e, v in SPECS])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildSpec, Path]:
    env, variant = request.param
    spec = _spec(env, variant, tmp_path_factory.mktemp(f"{env}-{variant}"))
    return spec, render.render(spec, (1, 6, 6)).directory


def _own_files(build: Path) -> dict[str, str]:
    """Rendered files of templates/image (the packs are copied data, owned by packs/)."""
    files = build / "files"
    return {
        str(p.relative_to(files)): p.read_text()
        for p in sorted(files.rglob("*"))
        if p.is_file() and not str(p.relative_to(files)).startswith("etc/osquery/packs/")
    }


def test_rendered_files_match_golden(built: tuple[BuildSpec, Path]) -> None:
    spec, build = built
    golden = GOLDEN / f"{spec.env_name}-{spec.variant_name}"
    files = {**_own_files(build), "expectations.json": (build / "expectations.json").read_text()}
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        for rel, text in files.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_text(text)
    expected = {str(p.relative_to(golden)): p.read_text() for p in sorted(golden.rglob("*")) if p.is_file()}
    assert sorted(files) == sorted(expected), "rendered file set changed (BAKERY_UPDATE_GOLDEN=1 to accept)"
    for rel, text in files.items():
        assert text == expected[rel], f"{rel} differs from its golden file (BAKERY_UPDATE_GOLDEN=1 to accept)"


def test_rendering_is_deterministic(built: tuple[BuildSpec, Path], tmp_path: Path) -> None:
    spec, build = built
    again = render.render(build_in(spec, tmp_path), (1, 6, 6))
    assert json.loads((again.directory / "fingerprint.json").read_text()) == json.loads(
        (build / "fingerprint.json").read_text()
    )


def test_manifest_lists_every_image_file(built: tuple[BuildSpec, Path]) -> None:
    spec, build = built
    files = build / "files"
    lines = (files / "MANIFEST").read_text().splitlines()
    listed = set()
    for line in lines:
        mode, owner, dest, src = line.split(" ")
        assert re.fullmatch(r"0[0-7]{3}", mode) and re.fullmatch(r"[a-z_]+:[a-z_]+", owner)
        assert dest.startswith("/") and dest.lstrip("/") == src and (files / src).is_file()
        listed.add(src)
    provisioning_inputs = {"MANIFEST"} | {
        str(p.relative_to(files)) for p in (files / "bakery").rglob("*") if p.is_file()
    }
    everything = {str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()}
    assert listed == everything - provisioning_inputs
    assert {f"etc/osquery/packs/{p}.conf" for p in spec.config.osquery.packs} <= listed


def test_osquery_conf_parses_and_names_every_pack(built: tuple[BuildSpec, Path]) -> None:
    spec, build = built
    conf = json.loads((build / "files/etc/osquery/osquery.conf").read_text())
    assert conf["packs"] == {p: f"/etc/osquery/packs/{p}.conf" for p in spec.config.osquery.packs}
    assert set(conf) == {"options", "schedule", "packs", "decorators"}


def test_flagfile_lines(built: tuple[BuildSpec, Path]) -> None:
    _, build = built
    lines = [
        line
        for line in (build / "files/etc/osquery/osquery.flags").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert all(re.fullmatch(r"--[a-z0-9_]+=[^\s\"']*", line) for line in lines)
    names = [line[2:].split("=")[0] for line in lines]
    assert names == sorted(set(names))
    assert {"enable_syslog", "host_identifier", "database_path", "logger_plugin"} <= set(names)
    assert not set(names) & {"disable_watchdog", "utc", "worker_threads", "config_path", "flagfile"}


def test_rsyslog_snippet_passes_rsyslogd(built: tuple[BuildSpec, Path], tmp_path: Path) -> None:
    _, build = built
    snippet = build / "files/etc/rsyslog.d/60-osquery.conf"
    main = tmp_path / "rsyslog.conf"
    main.write_text(f'include(file="{snippet}")\n')
    proc = subprocess.run(["rsyslogd", "-N1", "-f", str(main)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_logrotate_accepts_config(built: tuple[BuildSpec, Path], tmp_path: Path) -> None:
    _, build = built
    proc = subprocess.run(
        ["logrotate", "--debug", "--state", str(tmp_path / "state"), str(build / "files/etc/logrotate.d/osquery")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 and "error" not in proc.stderr.lower(), proc.stderr


def test_fluentd_snippet_lints_clean(built: tuple[BuildSpec, Path]) -> None:
    _, build = built
    for rel in ("etc/fluent/fluentd.conf", "etc/fluent/conf.d/osquery.conf"):
        findings = [f for f in lint_fluentd(build / "files" / rel) if f.severity == "error"]
        assert not findings, findings


def test_shell_files_pass_shellcheck(built: tuple[BuildSpec, Path]) -> None:
    _, build = built
    script = build / "files" / imagefiles.PIPE_READY.lstrip("/")
    proc = subprocess.run(
        ["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_provision_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in (render.PROJECT_ROOT / "provision").glob("*.sh"))
    assert len(scripts) >= 7
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout


def test_expectations_mirror_the_manifest_and_seal_list(built: tuple[BuildSpec, Path]) -> None:
    spec, build = built
    expect = json.loads((build / "expectations.json").read_text())
    manifest = (build / "files/MANIFEST").read_text().splitlines()
    assert [f"{f['mode']} {f['owner']}:{f['group']} {f['dest']} {f['src']}" for f in expect["files"]] == manifest
    seal_lines = [
        line
        for line in (build / "files/etc/bakery/seal.list").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert expect["seal"]["items"] == seal_lines
    assert expect["real_binaries"] is (spec.artifact_source != "stand-in")
