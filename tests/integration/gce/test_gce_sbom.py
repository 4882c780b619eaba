"""A GCE bake on the fake Compute API gives Packer the image identity of the PUBLISHED image (not the
candidate's name), hands the image suite the same identity, writes a valid CycloneDX SBOM beside the
manifest, labels the image with its hash, and ``invoke diff``'s source reads the packages from it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bakery import identity, pipeline, provenance, render, sbom
from bakery.errors import ImageTestError
from bakery.gce.client import ComputeClients
from bakery.gce.target import GceTarget, SuiteRun
from bakery.imagetest import Package, RunningVM, TestOutcome
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import FAILING, PackerOnFake, RecordedRunner
from tests.integration.gce.test_gce_pipeline import CANDIDATES, FAMILY, gce_spec, head

PACKAGES = [
    Package("osquery", "5.23.1-1.linux", "amd64"),
    Package("fluent-package", "6.0.0-1", "amd64"),
    Package("libc6", "2.36-9+deb12u9", "amd64"),
]


@dataclass
class RunnerWithPackages:
    """The recorded runner, plus what the real runner reads after the suite: the VM's package list, and
    the identity file the pipeline left for ``--identity`` (read while the test stage runs)."""

    recorded: RecordedRunner = field(default_factory=RecordedRunner)
    identities: list[dict[str, object]] = field(default_factory=list)

    def __call__(self, vm: RunningVM, run: SuiteRun) -> TestOutcome:
        self.identities.append(json.loads((run.junit.parent / identity.RUN_FILE).read_text()))
        return dataclasses.replace(self.recorded(vm, run), packages=PACKAGES)


def test_bake_writes_identity_and_sbom(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    spec = gce_spec(tmp_path)
    build = PackerOnFake(fake)
    runner = RunnerWithPackages()
    report = pipeline.bake(spec, GceTarget(spec, clients=clients, runner=runner), lambda _line: None, build=build)
    assert report.published is not None and report.published.name == report.image_name == head(clients)

    # Packer got the published name in the identity, not the candidate's; the fingerprint is the render's
    (variables,) = build.builds
    assert variables["image_name"].startswith(CANDIDATES + "-") and variables["image_name"] != report.image_name
    expected = identity.Identity(report.image_name, "debian-12", report.fingerprint)
    assert {k: variables[k] for k in identity.PACKER_VARIABLES} == expected.packer_variables()
    assert report.fingerprint == render.render(spec, report.packer_version, report.source_image).fingerprint
    assert runner.identities == [expected.expectations()]

    # the SBOM: beside the manifest, valid, the image's identity, the VM's packages; hashed into a label
    assert report.sbom is not None and report.manifest is not None
    assert report.sbom.parent == report.manifest.parent == spec.runs_dir / report.image_name
    text = report.sbom.read_text()
    assert sbom.validation_error(text) is None
    bom = json.loads(text)
    assert bom["metadata"]["component"]["name"] == report.image_name
    props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    assert props["osquery-bakery:input-fingerprint"] == report.fingerprint
    assert props["osquery-bakery:family"] == FAMILY
    assert sbom.packages(text) == sorted(PACKAGES, key=lambda p: p.name)
    assert "pkg:deb/debian/osquery@5.23.1-1.linux?arch=amd64&distro=bookworm" in {c["purl"] for c in bom["components"]}
    assert report.published.labels["sbom-sha256"] == provenance.digest(report.sbom)[:63]
    manifest = json.loads(report.manifest.read_text())
    assert manifest["sbom"] == provenance.sbom_record(report.sbom)

    # invoke diff's source: the package list comes from the SBOM
    loaded = provenance.load(report.manifest)
    assert loaded[provenance.PACKAGES_SOURCE].startswith(f"SBOM {report.sbom} (sha256 ")
    assert f"  list of new: SBOM {report.sbom}" in "\n".join(provenance.diff(loaded, loaded))


def test_a_failed_bake_still_leaves_its_sbom(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    """The manifest of a failed bake is kept for inspection; its SBOM is written beside it as well."""
    spec = gce_spec(tmp_path)
    runner = RunnerWithPackages(RecordedRunner(FAILING))
    target = GceTarget(spec, clients=clients, runner=runner)
    report = pipeline.BakeReport(spec, git_sha="abc1234", packer_version=(1, 6, 6))
    with pytest.raises(ImageTestError, match="nothing published"):
        pipeline.bake(spec, target, lambda _line: None, build=PackerOnFake(fake), report=report)
    assert report.sbom is not None and sbom.validation_error(report.sbom.read_text()) is None
    assert report.published is None
