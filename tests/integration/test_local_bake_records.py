"""pipeline.bake for a local environment, with real render, ``packer validate`` and the real local registry,
and the VM parts (Packer's qemu build, the QEMU test VM) replaced at the Target seam: every bake writes the
CycloneDX SBOM beside its manifest and labels the image with it; Packer gets the image identity as runtime
variables and the suite gets it as ``--identity``; the identity leaves the input fingerprint alone.
(The real local path, Packer and QEMU included, is tests/e2e/test_local_bake.py.)"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import pytest

from bakery import cli, identity, imagetest, pipeline, provenance, render, sbom
from bakery.config import BuildSpec
from bakery.errors import PackerError
from bakery.images import ImageRecord, ImageStore
from bakery.imagetest import Package, TestOutcome
from bakery.local.registry import LocalRegistry
from bakery.proc import Completed
from bakery.target import ZoneAttempt
from tests.support import build_in

PACKAGES = [Package("osquery", "0.0.0~standin", "amd64"), Package("rsyslog", "8.2302.0-1", "amd64")]
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="test_identity" name="test_identity_file" time="0.1"/>
</testsuite></testsuites>
"""
NOW = datetime.datetime(2026, 11, 27, 15, 4, 5, tzinfo=datetime.UTC)


class LocalLikeTarget:
    """LocalTarget's contract without the base image and QEMU: the candidate is a file, the test stage
    reads what the pipeline left for the suite and returns a passing outcome with a package list."""

    def __init__(self, spec: BuildSpec, tmp: Path) -> None:
        self.spec, self.out = spec, tmp / "output"
        self.store: ImageStore = LocalRegistry(tmp / "registry")
        self.suite_identity: dict[str, object] = {}

    def source_image(self, say: pipeline.Say) -> str:
        return render.default_source_image(self.spec)

    def consumers(self, family: str) -> list[str]:
        return []

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        return None

    def prepare(self, rendered: render.Rendered, say: pipeline.Say) -> dict[str, str]:
        return {"accelerator": "tcg", "output_directory": str(self.out)}

    def retry_build(self, error: PackerError, say: pipeline.Say) -> dict[str, str] | None:
        return None

    def zones_tried(self) -> list[ZoneAttempt]:
        return []

    def candidate_name(self, image_name: str) -> str:
        return image_name

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        return str(self.out / f"{image_name}.qcow2")

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: pipeline.Say) -> TestOutcome:
        self.suite_identity = json.loads((run_dir / identity.RUN_FILE).read_text())
        (run_dir / "junit.xml").write_text(JUNIT)
        outcome = imagetest.parse_junit(run_dir / "junit.xml", run_dir / "junit.log")
        return dataclasses.replace(outcome, packages=PACKAGES)

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        assert isinstance(self.store, LocalRegistry)
        return self.store.insert(image_name, family, Path(candidate), labels=labels, manifest=manifest)

    def discard(self, candidate: str) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def keep(self, candidate: str, run_dir: Path) -> str:
        return candidate

    def plan(self, rendered_dir: Path) -> list[str]:
        return []


def test_a_local_bake_writes_and_labels_the_sbom(tmp_path: Path) -> None:
    spec = build_in(cli.project_settings().specs("local")[0], tmp_path / "build")
    target = LocalLikeTarget(spec, tmp_path)
    builds: list[dict[str, str]] = []

    def build(rendered: render.Rendered, variables: dict[str, str], timeout: float, on_event: object) -> None:
        builds.append(dict(variables))
        target.out.mkdir(parents=True, exist_ok=True)
        (target.out / f"{variables['image_name']}.qcow2").write_bytes(b"qcow")

    report = pipeline.BakeReport(spec, git_sha="44d1c4d", packer_version=(1, 6, 6))
    pipeline.bake(spec, target, lambda _line: None, now=NOW, build=build, report=report)
    name = "osquery-debian-12-20261127-150405-44d1c4d"
    assert report.image_name == name and report.published is not None

    expected = identity.Identity(name, "debian-12", report.fingerprint)
    assert {k: builds[0][k] for k in identity.PACKER_VARIABLES} == expected.packer_variables()
    assert target.suite_identity == expected.expectations()
    # the identity is not an input: rendering again without it gives the same fingerprint
    assert render.render(spec, (1, 6, 6), report.source_image).fingerprint == report.fingerprint

    assert report.sbom == spec.runs_dir / name / sbom.SBOM_FILE == report.sbom.parent / sbom.SBOM_FILE
    assert report.manifest is not None and report.manifest.parent == report.sbom.parent
    bom = json.loads(report.sbom.read_text())
    assert sbom.validation_error(report.sbom.read_text()) is None
    assert bom["metadata"]["timestamp"] == "2026-11-27T15:04:05+00:00"
    assert [c["purl"] for c in bom["components"]] == [
        "pkg:deb/debian/osquery@0.0.0~standin?arch=amd64&distro=bookworm",
        "pkg:deb/debian/rsyslog@8.2302.0-1?arch=amd64&distro=bookworm",
    ]
    record = target.store.get(name)
    assert record.labels["sbom-sha256"] == provenance.digest(report.sbom)[:63]
    assert record.labels["manifest-sha256"] == provenance.digest(report.manifest)[:63]

    # the registry keeps a copy of the manifest only: diff finds the SBOM where the bake wrote it
    stored = provenance.resolve(name, target.store, [])
    assert stored != report.manifest
    assert provenance.load(stored)[provenance.PACKAGES_SOURCE].startswith(f"SBOM {report.sbom} (sha256 ")


def test_the_suite_gets_the_identity_from_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_image_tests passes the run directory's identity file as --identity (both targets use it)."""
    seen: list[list[str]] = []

    def run(argv: list[str], **_kwargs: object) -> Completed:
        seen.append(argv)
        (tmp_path / "run" / "junit.xml").write_text(JUNIT)
        return Completed(argv, 0, "")

    monkeypatch.setattr(imagetest.proc, "run", run)
    monkeypatch.setattr(imagetest, "capture_packages", lambda _vm: PACKAGES)
    vm = imagetest.RunningVM("vm", tmp_path / "ssh_config", 0, 0, tmp_path / "serial.log", tmp_path)
    suite = tmp_path / "suite"
    suite.mkdir()
    imagetest.run_image_tests(vm, suite, tmp_path / "run" / "junit.xml", timeout=5)
    assert not [a for a in seen[0] if a.startswith("--identity")]
    path = identity.write_expectations(identity.Identity("img", "debian-12", "0" * 64), tmp_path / "run")
    outcome = imagetest.run_image_tests(vm, suite, tmp_path / "run" / "junit.xml", timeout=5, extra_args=["-x"])
    assert seen[1][-2:] == ["-x", f"--identity={path}"]
    assert outcome.packages == PACKAGES
