"""``validate_all`` with the real Packer (Debian's 1.6.6): every template checked in parallel, results and
errors in spec order, the broken template named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bakery import cli, render, validate
from bakery.config import BuildSpec, Settings
from bakery.errors import PackerError
from tests.support import build_in

pytestmark = pytest.mark.skipif(shutil.which("packer") is None, reason="needs the packer binary")


@pytest.fixture(scope="module")
def project() -> Settings:
    return cli.project_settings()


def specs_in(settings: Settings, tmp_path: Path) -> list[BuildSpec]:
    return [build_in(spec, tmp_path / "build") for spec in settings.all_specs()]


def test_every_template_is_valid_and_reported_in_order(project: Settings, tmp_path: Path) -> None:
    specs = specs_in(project, tmp_path)
    seen: list[BuildSpec] = []
    results = validate.validate_all(project, specs, on_done=lambda c: seen.append(c.rendered.spec), jobs=2)
    assert [c.rendered.spec for c in results] == seen == specs
    assert all((s.build_dir / render.TEMPLATE_FILE).is_file() for s in specs)


def test_a_broken_template_is_named_and_later_ones_are_not_reported(
    project: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = specs_in(project, tmp_path)
    broken = specs[2]
    real_render = render.render

    def render_breaking_one(spec: BuildSpec, version: tuple[int, int, int]) -> render.Rendered:
        rendered = real_render(spec, version)
        if spec == broken:  # an HCL syntax error Packer itself must find
            rendered.template.write_text(rendered.template.read_text() + '\nsource "qemu" {\n')
        return rendered

    monkeypatch.setattr(render, "render", render_breaking_one)
    seen: list[BuildSpec] = []
    with pytest.raises(PackerError) as raised:
        validate.validate_all(project, specs, on_done=lambda c: seen.append(c.rendered.spec), jobs=2)
    first = str(raised.value).splitlines()[0]
    assert first == f"{broken.build_dir / render.TEMPLATE_FILE}: packer validate exited 1"
    assert seen == specs[:2]
