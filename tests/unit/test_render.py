"""Rendering: golden Packer templates and variable files, encoders, determinism, atomicity."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bakery import cli, render
from bakery.config import BuildSpec, Settings
from bakery.encode import label_value, to_hcl, to_json, to_sh
from bakery.errors import ConfigError, RenderError
from tests.support import build_in

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "packer"
UPDATE = os.environ.get("BAKERY_UPDATE_GOLDEN") == "1"
PACKER_166 = (1, 6, 6)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return cli.project_settings()


def in_tmp(spec: BuildSpec, tmp_path: Path) -> BuildSpec:
    return build_in(spec, tmp_path)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{name} differs from its golden file (BAKERY_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("env", ["local", "gstg", "gprd"])
def test_packer_template_matches_golden(settings: Settings, env: str) -> None:
    for spec in settings.specs(env):
        template, var_file = render.packer_template(spec, PACKER_166)
        check_golden(f"{env}-{spec.variant_name}.pkr.hcl", template)
        check_golden(f"{env}-{spec.variant_name}.pkrvars.hcl", var_file)


@pytest.mark.parametrize(("version", "present"), [((1, 6, 6), False), ((1, 7, 0), True), ((1, 11, 2), True)])
def test_required_plugins_only_for_packer_17_and_newer(settings: Settings, version, present: bool) -> None:
    for spec in (settings.specs("local")[0], settings.specs("gstg")[0]):
        template, _ = render.packer_template(spec, version)
        assert ("required_plugins" in template) is present
        if present:
            plugin = "qemu" if spec.env.target == "local" else "googlecompute"
            assert f'source  = "github.com/hashicorp/{plugin}"' in template


def test_gce_template_bakes_into_candidate_family_only(settings: Settings) -> None:
    spec = settings.specs("gprd", "ubuntu-2204")[0]
    template, var_file = render.packer_template(spec, PACKER_166)
    assert "image_family            = var.candidate_family" in template
    assert 'candidate_family        = "gl-osquery-ubuntu-2204-candidate"' in var_file
    assert 'gl-osquery-ubuntu-2204"' not in var_file


def test_local_template_binds_ssh_forward_to_loopback(settings: Settings) -> None:
    template, _ = render.packer_template(settings.specs("local")[0], PACKER_166)
    assert '"user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"' in template
    assert 'vnc_bind_address = "127.0.0.1"' in template


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ("a${b}c", '"a$${b}c"'),
        ("50%{x}", '"50%%{x}"'),
        ('quote " and \\ and \n', '"quote \\" and \\\\ and \\n"'),
        (True, "true"),
        (3, "3"),
        ([], "[]"),
        (["a", "b"], '["a", "b"]'),
        ({"b": "2", "a-b": "1"}, '{\n  a-b = "1"\n  b   = "2"\n}'),
        ({"with space": "x"}, '{\n  "with space" = "x"\n}'),
    ],
)
def test_hcl_encoder(value, expected: str) -> None:
    assert to_hcl(value) == expected


def test_sh_json_and_label_encoders() -> None:
    assert to_sh("it's; rm -rf /") == "'it'\"'\"'s; rm -rf /'"
    assert to_sh(True) == "true"
    assert to_json({"b": 1, "a": [1]}, indent=None) == '{"a": [1], "b": 1}'
    assert label_value("5.23.1-1.Linux") == "5_23_1-1_linux"
    assert len(label_value("x" * 100)) == 63


def test_render_is_deterministic_and_fingerprinted(settings: Settings, tmp_path: Path) -> None:
    spec = in_tmp(settings.specs("local")[0], tmp_path)
    first = render.render(spec, PACKER_166)
    files_1 = {p.relative_to(first.directory): p.read_bytes() for p in first.directory.rglob("*") if p.is_file()}
    second = render.render(spec, PACKER_166)
    files_2 = {p.relative_to(second.directory): p.read_bytes() for p in second.directory.rglob("*") if p.is_file()}
    assert first.fingerprint == second.fingerprint
    assert files_1 == files_2
    recorded = json.loads((second.directory / render.FINGERPRINT_FILE).read_text())
    assert recorded["fingerprint"] == second.fingerprint
    assert "image.pkr.hcl" in recorded["files"]
    assert any(name.startswith("provision/") for name in recorded["files"])


def test_fingerprint_changes_with_inputs(settings: Settings, tmp_path: Path) -> None:
    spec = in_tmp(settings.specs("gstg", "debian-12")[0], tmp_path)
    base = render.render(spec, PACKER_166).fingerprint
    osquery = spec.config.osquery.model_copy(update={"package_version": "5.23.1-2.linux"})  # a package rebuild
    changed = replace(spec, config=spec.config.model_copy(update={"osquery": osquery}))
    assert render.render(changed, PACKER_166).fingerprint != base
    variant = spec.variant.model_copy(update={"source_image_family": "debian-13"})
    moved = replace(spec, config=spec.config.model_copy(update={"variants": {"debian-12": variant}}))
    assert render.render(moved, PACKER_166).fingerprint != base


def test_failed_render_leaves_nothing(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = in_tmp(settings.specs("local")[0], tmp_path)

    def boom(*_args: object) -> dict[str, str]:
        raise ConfigError("artifact staging failed")

    monkeypatch.setattr(render.artifacts, "stage_artifacts", boom)
    with pytest.raises(ConfigError):
        render.render(spec, PACKER_166)
    assert not (tmp_path / "build").exists()


def test_failed_rerender_keeps_previous_tree(settings: Settings, tmp_path: Path, monkeypatch) -> None:
    spec = in_tmp(settings.specs("local")[0], tmp_path)
    good = render.render(spec, PACKER_166)
    before = sorted(p.relative_to(good.directory) for p in good.directory.rglob("*"))

    def boom(*_args: object) -> dict[str, str]:
        raise ConfigError("artifact staging failed")

    monkeypatch.setattr(render.artifacts, "stage_artifacts", boom)
    with pytest.raises(ConfigError):
        render.render(spec, PACKER_166)
    assert sorted(p.relative_to(good.directory) for p in good.directory.rglob("*")) == before
    assert [p.name for p in good.directory.parent.iterdir()] == [spec.variant_name]


def test_template_error_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.j2").write_text("ok\n{{ missing_value }}\n")
    (tmp_path / "syntax.j2").write_text("line one\n{% if %}\n")
    env = render.jinja_env(tmp_path)
    with pytest.raises(RenderError, match=r"templates/bad.j2:2: 'missing_value' is undefined"):
        render._render_file(env, "bad.j2", {})
    with pytest.raises(RenderError, match=r"templates/syntax.j2:2: "):
        render._render_file(env, "syntax.j2", {})


def test_golden_dir_has_no_strays() -> None:
    names = {p.name for p in GOLDEN.iterdir()}
    settings = cli.project_settings()
    wanted = set()
    for spec in settings.all_specs():
        wanted |= {
            f"{spec.env_name}-{spec.variant_name}.pkr.hcl",
            f"{spec.env_name}-{spec.variant_name}.pkrvars.hcl",
        }
    assert names == wanted


def test_copying_packs_requires_existing_pack(settings: Settings, tmp_path: Path) -> None:
    osquery = settings.config.osquery.model_copy(update={"packs": ("does-not-exist",)})
    spec = in_tmp(settings.specs("local")[0], tmp_path)
    spec = replace(spec, config=spec.config.model_copy(update={"osquery": osquery}))
    with pytest.raises(ConfigError, match=r"packs/does-not-exist.conf does not exist"):
        render.render(spec, PACKER_166)
    assert not (tmp_path / "build").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
