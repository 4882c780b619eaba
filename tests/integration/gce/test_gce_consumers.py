"""The blast radius on the fake Compute API: instance templates (global and regional) that follow the
family or pin one of its images, the MIGs built from them; printed before a publish; `--dry-run` plans
name the resolved source image."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import pipeline
from bakery.errors import ConfigError
from bakery.gce import consumers
from bakery.gce.client import ComputeClients
from bakery.gce.target import GceTarget
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, PackerOnFake, RecordedRunner
from tests.integration.gce.test_gce_pipeline import FAMILY, gce_spec, mutations

LINK = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/"


def seed_fleet(fake: FakeCompute) -> None:
    fake.seed_image(f"{FAMILY}-r1", FAMILY)
    fake.seed_template("web-follows", f"{LINK}family/{FAMILY}")
    fake.seed_template("db-pinned", f"projects/{PROJECT}/global/images/{FAMILY}-r1")
    fake.seed_template("ci-regional", f"global/images/family/{FAMILY}", region="us-east1")
    fake.seed_template("other-family", f"{LINK}family/gl-osquery-ubuntu-2204")
    fake.seed_template("public-debian", "projects/debian-cloud/global/images/family/debian-12")
    fake.seed_mig("web-mig", "web-follows", zone="us-east1-c", size=3)
    fake.seed_mig("ci-mig", "ci-regional", region="us-east1", size=5)
    fake.seed_mig("other-mig", "other-family", zone="us-east1-b")
    fake.seed_mig("canary-mig", "other-family", zone="us-east1-d", canary="web-follows")


def test_consumers_are_templates_on_the_family_or_its_images_and_their_migs(
    fake: FakeCompute, clients: ComputeClients
) -> None:
    seed_fleet(fake)
    found = consumers.find(clients, FAMILY, {f"{FAMILY}-r1"})
    assert [c.line() for c in found] == [
        f"instance template db-pinned (global): pinned to image {FAMILY}-r1 of {FAMILY}: unaffected until the "
        "template changes",
        f"instance template web-follows (global): follows family {FAMILY}: new instances boot the new head",
        f"instance template ci-regional (regions/us-east1): follows family {FAMILY}: new instances boot the new head",
        "managed instance group ci-mig (regions/us-east1): template ci-regional, target size 5",
        "managed instance group web-mig (zones/us-east1-c): template web-follows, target size 3",
        "managed instance group canary-mig (zones/us-east1-d): template web-follows, target size 2",
    ]


def test_no_consumers(fake: FakeCompute, clients: ComputeClients) -> None:
    assert consumers.find(clients, FAMILY, set()) == []


def test_a_bake_prints_the_blast_radius_before_it_publishes(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    seed_fleet(fake)
    spec = gce_spec(tmp_path)
    lines: list[str] = []
    report = pipeline.bake(
        spec, GceTarget(spec, clients=clients, runner=RecordedRunner()), lines.append, build=PackerOnFake(fake)
    )
    radius = lines.index(f"blast radius of {FAMILY}: 6 consumer(s)")
    assert radius < lines.index("==> publish")
    assert lines[radius + 1].startswith("    instance template db-pinned (global)")
    assert len(report.consumers) == 6


def test_a_dry_run_plan_names_the_resolved_source_image_and_changes_nothing(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    spec = gce_spec(tmp_path)
    plan = pipeline.plan(spec, GceTarget(spec, clients=clients))
    assert "source image debian-cloud/debian-12-v20261101" in plan
    assert mutations(fake) == []


def test_consumers_that_cannot_be_listed_are_a_warning_not_a_lost_image(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    spec = gce_spec(tmp_path)
    fake.inject("compute.instanceGroupManagers.aggregatedList", 403)
    lines: list[str] = []
    report = pipeline.bake(
        spec, GceTarget(spec, clients=clients, runner=RecordedRunner()), lines.append, build=PackerOnFake(fake)
    )
    assert report.published is not None
    assert any(line.startswith(f"WARNING: cannot list the consumers of {FAMILY}: permission denied") for line in lines)
    assert report.consumers[0].startswith("unavailable: permission denied")


def test_promote_shows_the_blast_radius_first(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    seed_fleet(fake)
    spec = gce_spec(tmp_path)
    lines: list[str] = []
    pipeline.promote(spec, GceTarget(spec, clients=clients), f"{FAMILY}-r1", lines.append, dry_run=True)
    assert lines[0].startswith(f"plan (dry run): copy {FAMILY}-r1 as ")
    assert lines[1] == f"blast radius of {FAMILY}: 6 consumer(s)"
    assert mutations(fake) == []


def test_promote_of_an_unknown_image_is_bad_input(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    """A name the user typed that the project does not hold: exit 2 with the fix, before any change."""
    seed_fleet(fake)
    spec = gce_spec(tmp_path)
    with pytest.raises(
        ConfigError, match=r"^image 'osquery-nope' not found in project .*: give a name that `invoke images"
    ):
        pipeline.promote(spec, GceTarget(spec, clients=clients), "osquery-nope", lambda _line: None)
    assert ConfigError.exit_code == 2
    assert mutations(fake) == []
