"""The nightly on the fake Compute API over all three variants, through the real google-cloud-compute
client, real rendering, real ``packer validate`` and the real lint; only the Packer build (no builder can
reach the fake) and the SSH test run are replaced, at their seams (``PackerOnFake``, ``RecordedRunner``).

The project tree (templates, provision scripts, packs) is a copy, so tests can change a pack or a script
and check which variants are rebaked: exactly the affected ones."""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import itertools
import json
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from bakery import cli, nightly, provenance, render, runreport
from bakery.config import BuildSpec, Notify, Retention, Settings, Timeouts
from bakery.errors import Interrupted, NightlyFailed
from bakery.gce import doctor
from bakery.gce.client import ComputeClients
from bakery.gce.target import GceTarget, SuiteRun
from bakery.imagetest import Package, RunningVM, TestOutcome
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import FAILING, PROJECT, ZONE, PackerOnFake, RecordedRunner
from tests.integration.gce.test_gce_pipeline import MUTATIONS

VARIANTS = ("debian-12", "ubuntu-2204", "ubuntu-2404")


def mutations(calls: list[Any]) -> list[str]:
    return [c.method for c in calls if c.method in MUTATIONS]


PACKAGES = [Package("osquery", "5.23.1-1.linux", "amd64"), Package("fluent-package", "6.0.0-1", "amd64")]


def project_copy(root: Path) -> Path:
    """The parts of the project a render reads, copied (so a test may edit them)."""
    for part in ("templates", "provision", "packs"):
        shutil.copytree(render.PROJECT_ROOT / part, root / part)
    (root / "packs" / "ubuntu-noble.conf").write_text(
        json.dumps(
            {
                "queries": {
                    "kernels": {
                        "query": "SELECT name, version FROM deb_packages WHERE name LIKE 'linux-image%';",
                        "interval": 3600,
                    }
                }
            },
            indent=2,
        )
    )
    return root


def gce_settings(root: Path, *, webhook: str = "") -> Settings:
    """gstg pointed at the fake, all three variants; ubuntu-2404 ships one extra pack of its own."""
    config = cli.project_settings().config
    env = config.environments["gstg"]
    assert env.gce is not None
    env = env.model_copy(
        update={
            "gce": env.gce.model_copy(update={"project": PROJECT, "zone": ZONE, "use_iap": False}),
            "variants": VARIANTS,
            "retention": Retention(keep=3, max_age_days=30),
        }
    )
    variants = dict(config.variants)
    variants["ubuntu-2404"] = variants["ubuntu-2404"].model_copy(update={"packs": ("ubuntu-noble",)})
    config = config.model_copy(
        update={
            "environments": {**config.environments, "gstg": env},
            "variants": variants,
            "build_dir": str(root / "build"),
            "timeouts": Timeouts(boot=20, image_tests=60),
            "notify": Notify(webhook_url=webhook, timeout=5),
        }
    )
    return Settings(config, root)


@dataclasses.dataclass
class Bed:
    fake: FakeCompute
    clients: ComputeClients
    root: Path
    settings: Settings
    build: PackerOnFake
    failing_tests: set[str] = dataclasses.field(default_factory=set)
    lines: list[str] = dataclasses.field(default_factory=list)

    def runner(self, variant: str) -> Callable[[RunningVM, SuiteRun], TestOutcome]:
        recorded = RecordedRunner(FAILING) if variant in self.failing_tests else RecordedRunner()

        def run(vm: RunningVM, suite: SuiteRun) -> TestOutcome:
            return dataclasses.replace(recorded(vm, suite), packages=PACKAGES)

        return run

    def target(self, spec: BuildSpec) -> GceTarget:
        return GceTarget(spec, clients=self.clients, runner=self.runner(spec.variant_name))

    def nightly(self, run: int, **kwargs: Any) -> runreport.NightlyRun:
        """One nightly over gstg on night RUN (the clock says so: image names carry the time); the
        report goes to root/reports/RUN."""
        self.build.builds.clear()
        night = datetime.datetime(2026, 11, run, 2, 0, tzinfo=datetime.UTC)
        ticks = itertools.count()
        return nightly.run(
            self.settings,
            "gstg",
            kwargs.pop("variant", None),
            self.lines.append,
            report_dir=self.root / "reports" / str(run),
            target_for=self.target,
            build=self.build,
            now=lambda: night + datetime.timedelta(minutes=next(ticks)),
            # the nightly's logic on the fake; its preflight (the doctor's checks) is tested in test_doctor.py
            preflight=kwargs.pop("preflight", False),
            **kwargs,
        )

    def report(self, run: int) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "reports" / str(run) / "nightly.json").read_text())
        return data

    def actions(self, run: int) -> dict[str, str]:
        return {v["variant"]: v["action"] for v in self.report(run)["variants"]}

    def baked(self) -> list[str]:
        return sorted(b["variant"] for b in self.build.builds)

    def instances_created(self) -> int:
        return len(self.fake.calls_of("compute.instances.insert"))


@pytest.fixture
def bed(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> Bed:
    root = project_copy(tmp_path / "project")
    return Bed(fake, clients, root, gce_settings(root), PackerOnFake(fake))


def test_first_nightly_bakes_every_variant_and_the_second_bakes_nothing(bed: Bed) -> None:
    first = bed.nightly(1)
    assert bed.baked() == list(VARIANTS)
    assert [r.action for r in first.results] == ["baked"] * 3
    assert all("the family has no ACTIVE image yet" in r.reason for r in first.results)
    instances_after_first = bed.instances_created()
    assert instances_after_first == 3  # one test instance per variant

    second = bed.nightly(2)
    assert bed.baked() == [], "unchanged inputs must start no build"
    assert bed.instances_created() == instances_after_first, "and no test instance"
    assert [r.action for r in second.results] == ["skipped"] * 3
    for result in second.results:
        assert result.reason.startswith(f"unchanged: head {result.head_before} carries input fingerprint")
        assert (
            result.head_before
            == result.head_after
            == first.results[VARIANTS.index(result.spec.variant_name)].head_after
        )
    report = bed.report(2)
    assert report["ok"] is True and report["counts"] == {
        "baked": 0,
        "skipped": 3,
        "would bake": 0,
        "failed": 0,
        "not run": 0,
    }


def test_a_changed_variant_pack_rebakes_only_that_variant(bed: Bed) -> None:
    bed.nightly(1)
    pack = bed.root / "packs" / "ubuntu-noble.conf"
    pack.write_text(pack.read_text().replace('"interval": 3600', '"interval": 7200'))
    bed.nightly(2)
    assert bed.baked() == ["ubuntu-2404"]
    assert bed.actions(2) == {"debian-12": "skipped", "ubuntu-2204": "skipped", "ubuntu-2404": "baked"}


def test_a_changed_shared_pack_rebakes_every_variant(bed: Bed) -> None:
    bed.nightly(1)
    pack = bed.root / "packs" / "compliance.conf"
    pack.write_text(pack.read_text().replace('"interval": 3600', '"interval": 7200', 1))
    assert pack.read_text() != (render.PROJECT_ROOT / "packs" / "compliance.conf").read_text(), "the edit took"
    bed.nightly(2)
    assert bed.baked() == list(VARIANTS)


def test_a_changed_provision_script_rebakes_every_variant(bed: Bed) -> None:
    bed.nightly(1)
    script = bed.root / "provision" / "70-services.sh"
    script.write_text(script.read_text() + "\n# a change\n")
    bed.nightly(2)
    assert bed.baked() == list(VARIANTS), "every variant runs every provision script"


def test_a_newer_source_image_rebakes_only_its_variant_from_that_image(bed: Bed) -> None:
    bed.nightly(1)
    bed.fake.seed_public_image("ubuntu-os-cloud", "ubuntu-2204-lts-v20261120", "ubuntu-2204-lts")
    second = bed.nightly(2)
    assert bed.baked() == ["ubuntu-2204"]
    assert bed.build.builds[0]["source_image"] == "ubuntu-2204-lts-v20261120", "Packer starts from the new image"
    result = second.results[1]
    assert "source image ubuntu-2204-lts-v20261101 -> ubuntu-2204-lts-v20261120" in result.reason
    assert bed.report(2)["variants"][1]["source_image"] == "ubuntu-os-cloud/ubuntu-2204-lts-v20261120"
    bed.nightly(3)
    assert bed.baked() == [], "and the next night it is current"


def test_a_dry_run_reports_what_would_be_baked_and_changes_nothing(bed: Bed) -> None:
    bed.nightly(1)
    bed.fake.seed_public_image("ubuntu-os-cloud", "ubuntu-2204-lts-v20261120", "ubuntu-2204-lts")
    calls = len(bed.fake.calls)
    bed.nightly(2, dry_run=True)
    assert bed.baked() == []
    assert bed.actions(2) == {"debian-12": "skipped", "ubuntu-2204": "would bake", "ubuntu-2404": "skipped"}
    assert mutations(bed.fake.calls[calls:]) == []
    markdown = (bed.root / "reports" / "2" / "nightly.md").read_text()
    assert "0 baked, 2 skipped, 0 failed, 1 would be baked (dry run)" in markdown
    bed.nightly(3)
    assert bed.baked() == ["ubuntu-2204"]


def test_a_deprecated_source_image_is_not_the_family_head(bed: Bed) -> None:
    bed.nightly(1)
    bed.fake.seed_public_image("debian-cloud", "debian-12-v20261125", "debian-12", deprecated=True)
    bed.nightly(2)
    assert bed.baked() == []


def test_one_failing_variant_does_not_stop_the_others(bed: Bed) -> None:
    bed.build.fail = {"ubuntu-2204"}
    bed.failing_tests = {"ubuntu-2404"}
    with pytest.raises(NightlyFailed) as failed:
        bed.nightly(1)
    message = str(failed.value)
    assert "2 of 3 variants failed" in message and "ubuntu-2204" in message and "ubuntu-2404" in message
    assert failed.value.exit_code == 1
    assert bed.baked() == list(VARIANTS), "every variant was attempted"
    report = bed.report(1)
    assert bed.actions(1) == {"debian-12": "baked", "ubuntu-2204": "failed", "ubuntu-2404": "failed"}
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert "quota exceeded" in by_variant["ubuntu-2204"]["reason"]
    assert "image tests failed, nothing published" in by_variant["ubuntu-2404"]["reason"]
    assert by_variant["ubuntu-2404"]["tests"]["failures"] == ["test_services::test_osqueryd_enabled"]
    assert report["ok"] is False
    # The failed variants stay failed-and-retried: the next night rebakes exactly those two.
    bed.build.fail, bed.failing_tests = set(), set()
    bed.nightly(2)
    assert bed.baked() == ["ubuntu-2204", "ubuntu-2404"]


def test_the_report_lists_everything_in_json_markdown_and_junit(bed: Bed) -> None:
    bed.nightly(1)
    bed.fake.seed_public_image("debian-cloud", "debian-12-v20261120", "debian-12")
    bed.fake.seed_public_image("ubuntu-os-cloud", "ubuntu-2204-lts-v20261120", "ubuntu-2204-lts")
    bed.build.fail = {"ubuntu-2204"}
    with pytest.raises(NightlyFailed):
        bed.nightly(2)
    directory = bed.root / "reports" / "2"
    report = bed.report(2)
    debian = report["variants"][0]
    assert debian["action"] == "baked" and debian["image"].startswith("gl-osquery-debian-12-20261102-")
    assert set(debian["phases_s"]) == {"check", "render", "validate", "prepare", "bake", "test", "publish", "retention"}
    assert debian["tests"] == {
        "passed": 3,
        "failed": 0,
        "skipped": 1,
        "errors": 0,
        "failures": [],
        "junit": debian["tests"]["junit"],
    }
    assert debian["packages"] == 2 and (directory / debian["manifest"]).is_file()
    assert len(debian["fingerprint"]) == 64
    assert report["variants"][2]["action"] == "skipped"

    markdown = (directory / "nightly.md").read_text()
    assert markdown.startswith("# Nightly gstg: FAILED")
    assert "| debian-12 | baked |" in markdown and "| ubuntu-2404 | skipped |" in markdown
    packer_output = "  ```\n  ==> googlecompute: Error creating instance: quota exceeded\n  ```\n"
    assert f"## ubuntu-2204: failed\n\n- reason: packer build exited 1\n\n{packer_output}" in markdown

    junit = ElementTree.parse(directory / "junit.xml").getroot()
    assert junit.tag == "testsuites"
    bake_cases = {c.get("name"): c for c in junit.find("testsuite[@name='bake']") or []}
    assert bake_cases["debian-12"].find("failure") is None and bake_cases["debian-12"].find("skipped") is None
    assert bake_cases["ubuntu-2204"].find("failure") is not None
    assert bake_cases["ubuntu-2404"].find("skipped") is not None
    suites = [s.get("name") for s in junit.iter("testsuite")]
    assert suites == ["bake", "debian-12: pytest"], "image tests of the variant that ran them, prefixed"
    assert (junit.get("tests"), junit.get("failures"), junit.get("skipped")) == ("7", "1", "2")


def test_manifests_are_artifacts_hashed_into_a_label_and_diffable(bed: Bed) -> None:
    bed.nightly(1)
    pack = bed.root / "packs" / "ubuntu-noble.conf"
    pack.write_text(pack.read_text().replace('"interval": 3600', '"interval": 7200'))
    bed.nightly(2)
    old_name = bed.report(1)["variants"][2]["image"]
    new_name = bed.report(2)["variants"][2]["image"]
    store = bed.target(bed.settings.specs("gstg", "ubuntu-2404")[0]).images
    dirs = [bed.root / "reports"]
    old_path, new_path = provenance.resolve(old_name, store, dirs), provenance.resolve(new_name, store, dirs)
    assert store.get(new_name).labels["manifest-sha256"] == provenance.digest(new_path)[:63]
    old, new = provenance.load(old_path), provenance.load(new_path)
    assert new["image"] == new_name and new["source_image"] == "ubuntu-os-cloud/ubuntu-2404-lts-amd64-v20261101"
    assert new["packages"] == [["fluent-package", "6.0.0-1", "amd64"], ["osquery", "5.23.1-1.linux", "amd64"]]
    lines = provenance.diff(old, new)
    assert "packs:" in lines and "  ~ ubuntu-noble.conf" in lines
    assert '      -      "interval": 3600' in lines and '      +      "interval": 7200' in lines
    assert "packages: unchanged (2)" in lines
    kept = bed.root / "reports" / "2" / "manifests"
    assert sorted(p.name for p in kept.iterdir()) == [f"{new_name}.cdx.json", f"{new_name}.json"]
    copied = provenance.load(kept / f"{new_name}.json")
    assert copied[provenance.PACKAGES_SOURCE].startswith("SBOM "), "the report's copy is diffable from its SBOM"


def test_an_interrupt_writes_the_report_runs_nothing_more_and_leaves_no_vm(bed: Bed) -> None:
    interrupted = RecordedRunner(error=Interrupted(signal.SIGINT), fake=bed.fake)
    runner = bed.runner

    def interrupting(variant: str) -> Callable[[RunningVM, SuiteRun], TestOutcome]:
        return interrupted if variant == "ubuntu-2204" else runner(variant)

    bed.runner = interrupting  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        bed.nightly(1)
    assert bed.actions(1) == {"debian-12": "baked", "ubuntu-2204": "failed", "ubuntu-2404": "not run"}
    assert bed.report(1)["variants"][2]["reason"] == "not run: the nightly was interrupted"
    assert interrupted.instances_seen == [["bakery-test-" + bed.build.builds[1]["run_id"]]], "it was testing"
    assert bed.fake.instances == {}, "the test instance was deleted"
    assert not [n for n in bed.fake.images if n.startswith("gl-osquery-ubuntu-2204-candidate")], "and the candidate"


def test_an_unexpected_error_fails_its_variant_only(bed: Bed) -> None:
    class Crashing(PackerOnFake):
        def __call__(self, rendered: render.Rendered, variables: dict[str, str], *args: Any) -> None:
            if rendered.spec.variant_name == "debian-12":
                raise OSError(28, "No space left on device")
            super().__call__(rendered, variables, *args)

    bed.build = Crashing(bed.fake)
    with pytest.raises(NightlyFailed, match=r"debian-12 \(unexpected OSError: \[Errno 28\] No space left"):
        bed.nightly(1)
    assert bed.actions(1) == {"debian-12": "failed", "ubuntu-2204": "baked", "ubuntu-2404": "baked"}


def test_an_unreadable_head_fails_the_variant_instead_of_baking_it(bed: Bed) -> None:
    bed.nightly(1, variant="debian-12")
    bed.fake.inject("compute.images.getFromFamily")  # the source image resolves...
    bed.fake.inject("compute.images.getFromFamily", 403)  # ...the head does not
    with pytest.raises(NightlyFailed):
        bed.nightly(2, variant="debian-12")
    assert bed.baked() == []
    assert (
        "permission denied for an ACTIVE image of family 'gl-osquery-debian-12'"
        in bed.report(2)["variants"][0]["reason"]
    )


def test_a_rolled_back_image_is_not_baked_again(bed: Bed) -> None:
    bed.nightly(1)
    pack = bed.root / "packs" / "ubuntu-noble.conf"
    original = pack.read_text()
    pack.write_text(original.replace('"interval": 3600', '"interval": 7200'))
    bed.nightly(2)
    bad = bed.report(2)["variants"][2]["image"]
    spec = bed.settings.specs("gstg", "ubuntu-2404")[0]
    bed.target(spec).store.rollback(spec.family)  # what `invoke rollback` does
    bed.nightly(3)
    assert bed.baked() == []
    assert bed.report(3)["variants"][2]["reason"].startswith(f"rolled back: {bad}, baked from these inputs, is ")
    pack.write_text(original)  # the inputs of the head it was rolled back to
    bed.nightly(4)
    assert bed.baked() == [] and bed.actions(4)["ubuntu-2404"] == "skipped"
    pack.write_text(original.replace('"interval": 3600', '"interval": 1800'))  # a fix: new inputs
    bed.nightly(5)
    assert bed.baked() == ["ubuntu-2404"]


def test_inputs_returning_to_an_older_published_state_are_baked(bed: Bed) -> None:
    pack = bed.root / "packs" / "ubuntu-noble.conf"
    original = pack.read_text()
    bed.nightly(1, variant="ubuntu-2404")
    for night, interval in ((2, "7200"), (3, "1800")):
        pack.write_text(original.replace('"interval": 3600', f'"interval": {interval}'))
        bed.nightly(night, variant="ubuntu-2404")
    pack.write_text(original)  # night 1's inputs; its image was deprecated by a publish, not rolled back
    bed.nightly(4, variant="ubuntu-2404")
    assert bed.baked() == ["ubuntu-2404"]


def test_a_bad_source_family_fails_that_variant_only_with_one_clear_reason(bed: Bed) -> None:
    del bed.fake.public_images["debian-cloud"]["debian-12-v20261101"]
    with pytest.raises(NightlyFailed):
        bed.nightly(1)
    reason = bed.report(1)["variants"][0]["reason"]
    assert reason.startswith("cannot resolve source image family debian-cloud/debian-12 of variant debian-12: ")
    assert "no such family or no ACTIVE image in it" in reason
    assert bed.actions(1)["ubuntu-2204"] == "baked"


# --- the failure webhook -----------------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(loopback_ports: set[int]) -> Iterator[tuple[str, type[_Hook]]]:
    """A webhook receiver on 127.0.0.1 recording each POST (path, JSON body)."""
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    loopback_ports.add(server.server_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/s3cret-token", handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_failed_nightly_posts_its_summary_to_the_webhook(bed: Bed, webhook: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook
    bed.settings = gce_settings(bed.root, webhook=url)
    bed.build.fail = {"ubuntu-2404"}
    with pytest.raises(NightlyFailed):
        bed.nightly(1)
    [(path, payload)] = hook.received
    assert path == "/hooks/s3cret-token"
    assert payload["text"].startswith("osquery-bakery nightly gstg FAILED (1/3): ubuntu-2404: ")
    assert payload["report"]["counts"]["failed"] == 1
    assert not any("s3cret" in line for line in bed.lines), "the webhook's secret path is never printed"
    assert any(line.startswith("failure summary sent to the webhook at http://127.0.0.1:") for line in bed.lines)


def test_a_successful_nightly_posts_nothing(bed: Bed, webhook: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook
    bed.settings = gce_settings(bed.root, webhook=url)
    bed.nightly(1)
    assert hook.received == []


def test_an_unreachable_webhook_is_a_warning_and_the_run_still_fails(
    bed: Bed, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    hook.status = 500
    bed.settings = gce_settings(bed.root, webhook=url)
    bed.build.fail = {"debian-12"}
    with pytest.raises(NightlyFailed):
        bed.nightly(1)
    assert any("WARNING: webhook http://127.0.0.1:" in line and "HTTP 500" in line for line in bed.lines)


def test_one_variant_can_be_run_alone(bed: Bed) -> None:
    bed.build.fail = {"debian-12"}
    with pytest.raises(NightlyFailed, match="1 of 1 variants failed"):
        bed.nightly(1, variant="debian-12")
    assert bed.actions(1) == {"debian-12": "failed"}
    assert "quota exceeded" in bed.report(1)["variants"][0]["reason"]


def test_a_failed_preflight_runs_no_variant_and_posts_to_the_webhook(
    bed: Bed, webhook: tuple[str, type[_Hook]]
) -> None:
    """The doctor's verdict (here a report as it gives one) stops the nightly before any variant: the report
    and the webhook say why, and PreflightFailed (exit 2) is raised, not NightlyFailed."""
    url, hook = webhook
    bed.settings = gce_settings(bed.root, webhook=url)
    report = doctor.Report("gstg", [doctor.Check("pubsub.topic", "fail", "topic t does not exist", "create it")])

    def failing(specs: Any, say: Any) -> None:
        raise doctor.PreflightFailed(report)

    with pytest.raises(doctor.PreflightFailed) as raised:
        bed.nightly(1, preflight=failing)
    assert raised.value.exit_code == 2
    assert bed.build.builds == [] and not bed.fake.calls_of("compute.instances.insert")
    variants = bed.report(1)["variants"]
    assert {v["action"] for v in variants} == {"not run"} and len(variants) == 3
    assert all(v["reason"].startswith("not run: preflight failed (pubsub.topic)") for v in variants)
    [(_, payload)] = hook.received
    assert payload["text"].startswith("osquery-bakery nightly gstg FAILED (3/3): ")
    assert "preflight failed (pubsub.topic)" in payload["text"]
