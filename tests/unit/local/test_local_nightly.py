"""The nightly's decision on the local target, without VMs: a head carrying the input fingerprint is a
skip that touches no base image; a new base image (its recipe key is the local source image) is a
rebake. (tests/e2e bakes for real; tests/integration/gce covers the other triggers on the fake API.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import cli, nightly, render
from bakery.config import BuildSpec
from bakery.errors import NightlyFailed, VMError
from bakery.local.registry import LocalRegistry
from bakery.local.target import LocalTarget
from bakery.packer import detect_version


class PrepareRefused(LocalTarget):
    """A local target that stops where a bake would start (base image, QEMU)."""

    def prepare(self, rendered: render.Rendered, say: nightly.Say) -> dict[str, str]:
        raise VMError("prepare reached: this variant is being baked")


def test_skip_needs_no_base_image_and_a_new_base_rebakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(
        f"bakery:\n  build_dir: {tmp_path / 'build'}\n  environments:\n    local:\n      local:\n"
        f"        cache_dir: {tmp_path / 'cache'}\n        registry_dir: {tmp_path / 'registry'}\n"
    )
    settings = cli.project_settings(runtime)
    spec: BuildSpec = settings.specs("local")[0]
    rendered = render.render(spec, detect_version(), render.default_source_image(spec))
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"not really an image")
    LocalRegistry(tmp_path / "registry").insert(
        "osquery-debian-12-20261101-020000-abc1234",
        spec.family,
        disk,
        labels={"input-fingerprint": render.fingerprint_label(rendered.fingerprint)},
    )
    lines: list[str] = []
    same = nightly.run(settings, "local", None, lines.append, report_dir=tmp_path / "r1", target_for=PrepareRefused)
    assert [r.action for r in same.results] == ["skipped"]
    assert not (tmp_path / "cache").exists(), "a skip neither builds nor reads the base image"

    monkeypatch.setattr(render, "content_key", lambda: "e" * 64)  # a rebuilt base image recipe
    with pytest.raises(NightlyFailed, match="prepare reached"):
        nightly.run(settings, "local", None, lines.append, report_dir=tmp_path / "r2", target_for=PrepareRefused)
    assert "rebake: inputs differ from head osquery-debian-12-20261101-020000-abc1234" in lines
