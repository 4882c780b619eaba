"""What the GCE integration tests share: constants, the client factory, the public source images, the
build step on the fake (``PackerOnFake``) and the recorded image-test runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bakery import render
from bakery.errors import PackerError
from bakery.gce.client import ComputeClients
from bakery.gce.retry import RetryPolicy
from bakery.gce.target import SuiteRun
from bakery.imagetest import RunningVM, TestOutcome, parse_junit
from tests.fakes.compute import FakeCompute

PROJECT = "bakery-test"
ZONE = "europe-west1-b"
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, deadline=20.0)


def make_clients(fake: FakeCompute, *, timeout: float = 5.0, operation_timeout: float = 10.0) -> ComputeClients:
    """Clients for the running ``fake``, with fast retries."""
    return ComputeClients.create(
        PROJECT, ZONE, endpoint=fake.endpoint, timeout=timeout, operation_timeout=operation_timeout, retry=FAST_RETRY
    )


#: The public source image families of the project's variants, as the fake's other projects hold them.
PUBLIC_FAMILIES = {
    "debian-12": ("debian-cloud", "debian-12"),
    "ubuntu-2204": ("ubuntu-os-cloud", "ubuntu-2204-lts"),
    "ubuntu-2404": ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
}


def seed_public_images(fake: FakeCompute, version: str = "v20261101") -> None:
    """One current image per variant's public family (``debian-12-v20261101``, …)."""
    for project, family in PUBLIC_FAMILIES.values():
        fake.seed_public_image(project, f"{family}-{version}", family)


FAMILY_BASE = "debian-12-base"  # the fake's own base image (conftest), standing in for the public one


@dataclass
class PackerOnFake:
    """The pipeline's build step where no Packer builder can reach (the fake API): it records the
    variables and leaves the candidate image googlecompute would (the template's family and labels,
    started from the pinned source image); ``fail`` names variants whose build fails like Packer's."""

    fake: FakeCompute
    fail: set[str] = field(default_factory=set)
    builds: list[dict[str, str]] = field(default_factory=list)

    def __call__(
        self, rendered: render.Rendered, variables: dict[str, str], timeout: float, on_event: Callable[..., Any]
    ) -> None:
        spec = rendered.spec
        self.builds.append({"variant": spec.variant_name, **variables})
        if spec.variant_name in self.fail:
            raise PackerError(["packer", "build"], 1, "==> googlecompute: Error creating instance: quota exceeded")
        labels = {
            **render.image_labels(spec),
            "input-fingerprint": variables["input_fingerprint"][:63],
            "git-sha": variables["git_sha"],
            "bakery-run-id": variables["run_id"],
            "bakery-expires": variables["expires"],
        }
        self.fake.seed_image(
            variables["image_name"],
            spec.candidate_family,
            labels=labels,
            sourceImage=f"global/images/{FAMILY_BASE}",
            description="baked",
        )


PASSING = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="test_packages" name="test_osquery_installed" time="0.1"/>
<testcase classname="test_services" name="test_osqueryd_enabled" time="0.1"/>
<testcase classname="test_seal" name="test_machine_id_is_this_vms" time="0.1"/>
<testcase classname="test_fluentd" name="test_pubsub_plugin" time="0.1"><skipped message="stand-in"/></testcase>
</testsuite></testsuites>
"""
FAILING = PASSING.replace(
    '<testcase classname="test_services" name="test_osqueryd_enabled" time="0.1"/>',
    '<testcase classname="test_services" name="test_osqueryd_enabled" time="0.1"><failure message="disabled"/>'
    "</testcase>",
)


@dataclass
class RecordedRunner:
    """The runner seam: records what it was given (and the ssh_config at that moment), writes a recorded
    JUnit report and returns its counts; or raises ``error`` (an interrupt)."""

    junit: str = PASSING
    error: BaseException | None = None
    calls: list[tuple[RunningVM, SuiteRun, str]] = field(default_factory=list)
    instances_seen: list[list[str]] = field(default_factory=list)
    fake: FakeCompute | None = None

    def __call__(self, vm: RunningVM, run: SuiteRun) -> TestOutcome:
        self.calls.append((vm, run, vm.ssh_config.read_text()))
        if self.fake is not None:
            self.instances_seen.append([name for _, name in self.fake.instances])
        if self.error is not None:
            raise self.error
        run.junit.parent.mkdir(parents=True, exist_ok=True)
        run.junit.write_text(self.junit)
        return parse_junit(run.junit, run.junit.with_suffix(".log"))
