"""The GCE target end to end on the fake Compute API, with the image-test runner replaced at its one seam
by a recorded outcome: candidate (as Packer leaves it) → test stage → publish → retention → rollback, the
family head checked through getFromFamily after each step; a failing test stage publishes nothing; an
interrupted run leaves no instance; leftovers are reaped; stand-ins are refused; dry runs print the exact
calls and change nothing."""

from __future__ import annotations

import datetime
import hashlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from google.cloud import compute_v1

from bakery import cli, pipeline, render
from bakery.config import BuildSpec, Retention, Timeouts
from bakery.errors import ConfigError, ImageTestError, Interrupted, RegistryError
from bakery.gce import reaper
from bakery.gce import target as gce_target
from bakery.gce.client import ComputeClients, OperationFailed
from bakery.gce.instances import Instances
from bakery.gce.store import GceImageStore
from bakery.gce.target import GceTarget
from bakery.images import DeprecationState
from bakery.target import image_name
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import FAILING, PROJECT, ZONE, PackerOnFake, RecordedRunner, make_clients

FAMILY = "gl-osquery-debian-12"
CANDIDATES = f"{FAMILY}-candidate"
LINK = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/"
Say = Callable[[str], None]
MUTATIONS = {
    "compute.images.insert",
    "compute.images.deprecate",
    "compute.images.delete",
    "compute.images.setLabels",
    "compute.instances.insert",
    "compute.instances.delete",
    "compute.disks.delete",
}


def gce_spec(
    tmp_path: Path, *, keep: int = 2, max_age_days: int = 30, timeouts: Timeouts | None = None, **gce: object
) -> BuildSpec:
    """The project's gstg environment, pointed at the fake's project, with small timeouts and retention."""
    config = cli.project_settings().config
    env = config.environments["gstg"]
    assert env.gce is not None
    settings = env.gce.model_copy(update={"project": PROJECT, "zone": ZONE, "use_iap": False, **gce})
    env = env.model_copy(
        update={
            "gce": settings,
            "variants": ("debian-12",),
            "retention": Retention(keep=keep, max_age_days=max_age_days),
        }
    )
    config = config.model_copy(
        update={
            "environments": {**config.environments, "gstg": env},
            "build_dir": str(tmp_path / "build"),
            "timeouts": timeouts or Timeouts(boot=20, image_tests=60),
        }
    )
    return BuildSpec(config, "gstg", "debian-12", render.PROJECT_ROOT)


def seed_candidate(fake: FakeCompute, spec: BuildSpec, name: str, *, source: str = "upstream") -> None:
    """A candidate image as Packer's googlecompute builder leaves it (labels and family of the template)."""
    labels = {
        **render.image_labels(spec),
        "artifact-source": source,
        "input-fingerprint": "f" * 63,
        "git-sha": "abc1234",
    }
    fake.seed_image(name, CANDIDATES, labels=labels, sourceImage="global/images/debian-12-base", description="baked")


def publish_labels(spec: BuildSpec) -> dict[str, str]:
    """What pipeline.bake passes as labels when it publishes."""
    return {**render.image_labels(spec), "input-fingerprint": "f" * 63, "git-sha": "abc1234"}


def head(clients: ComputeClients, family: str = FAMILY) -> str:
    """The family's head as images.getFromFamily answers."""
    request = compute_v1.GetFromFamilyImageRequest(project=PROJECT, family=family)
    return clients.images.get_from_family(request=request, timeout=5).name


def mutations(fake: FakeCompute) -> list[str]:
    return [c.method for c in fake.calls if c.method in MUTATIONS]


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def say(lines: list[str]) -> Callable[[str], None]:
    return lines.append


@pytest.fixture
def spec(tmp_path: Path) -> BuildSpec:
    return gce_spec(tmp_path)


class Bed(NamedTuple):
    """What most tests here need: the fake, clients for it, a gstg spec, a rendered stand-in, a scratch
    directory and a ``say``."""

    fake: FakeCompute
    clients: ComputeClients
    spec: BuildSpec
    rendered: render.Rendered
    tmp_path: Path
    say: Callable[[str], None]


@pytest.fixture
def bed(fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, tmp_path: Path, say: Say) -> Bed:
    return Bed(
        fake,
        clients,
        spec,
        render.Rendered(spec, tmp_path / "rendered", "f" * 64, "debian-cloud/debian-12"),
        tmp_path,
        say,
    )


def names() -> tuple[str, str]:
    image = image_name(FAMILY, datetime.datetime.now(datetime.UTC), "abc1234")
    return image, f"{CANDIDATES}-{image.removeprefix(FAMILY + '-')}"


def test_candidate_is_tested_published_pruned_and_rolled_back(bed: Bed) -> None:
    fake, clients, spec, rendered, tmp_path, say = bed
    fake.default_ip = "10.128.0.7"
    for release in ("r1", "r2"):
        fake.seed_image(f"{FAMILY}-{release}", FAMILY, labels={"artifact-source": "upstream"})
    assert head(clients) == f"{FAMILY}-r2"
    runner = RecordedRunner(fake=fake)
    target = GceTarget(spec, clients=clients, runner=runner)

    variables = target.prepare(rendered, say)
    assert variables["run_id"] == target.run_id and variables["expires"].isdigit()
    image, candidate = names()
    assert target.candidate_name(image) == candidate
    assert target.output(rendered, candidate) == candidate
    seed_candidate(fake, spec, candidate)  # what Packer leaves behind

    run_dir = tmp_path / "runs" / image
    outcome = target.test(rendered, candidate, run_dir, say)
    assert (outcome.passed, outcome.failed, outcome.skipped, outcome.errors, outcome.ok) == (3, 0, 1, 0, True)
    assert head(clients) == f"{FAMILY}-r2"  # testing publishes nothing

    # the test instance: labelled, from the candidate, no external IP, our key only; gone afterwards
    (insert,) = fake.calls_of("compute.instances.insert")
    body = insert.body
    name = f"bakery-test-{target.run_id}"
    assert body["name"] == name
    assert body["labels"]["bakery-role"] == "test" and body["labels"]["bakery-run-id"] == target.run_id
    assert body["disks"][0]["initializeParams"]["sourceImage"] == LINK + candidate
    assert "accessConfigs" not in body["networkInterfaces"][0]
    pubkey = (run_dir / "ssh" / "id_ed25519.pub").read_text().split()
    assert body["metadata"]["items"][0] == {
        "key": "ssh-keys",
        "value": f"bakery-test:{pubkey[0]} {pubkey[1]} bakery-test",
    }
    assert runner.instances_seen == [[name]]
    assert fake.instances == {} and fake.disks == {}
    assert [c.method for c in fake.calls if c.method.startswith("compute.instances")][-1] == "compute.instances.delete"
    _vm, run, config = runner.calls[0]
    assert "  HostName 10.128.0.7\n  Port 22\n  User bakery-test\n" in config
    assert f"  IdentityFile {run_dir / 'ssh' / 'id_ed25519'}\n" in config
    assert run.extra_args == (
        f"--expectations={rendered.directory / 'expectations.json'}",
        f"--injected-pubkey={run_dir / 'ssh' / 'id_ed25519.pub'}",
        "--sudo",
    )
    assert (run.suite, run.junit) == (spec.image_suite, run_dir / "junit.xml")

    # publish: a copy in the production family with the report's hash; older images deprecated, one kept
    published = target.publish(
        candidate, image, FAMILY, labels=publish_labels(spec), description="tested", manifest="m.json"
    )
    assert head(clients) == image == published.name
    report = hashlib.sha256((run_dir / "junit.xml").read_bytes()).hexdigest()[:63]
    assert published.labels == {**publish_labels(spec), "test-report": report, "promoted-from": candidate}
    store = GceImageStore(clients)
    states = {r.name: (r.state, r.replacement) for r in store.list(FAMILY)}
    assert states == {
        image: (DeprecationState.ACTIVE, None),
        f"{FAMILY}-r2": (DeprecationState.ACTIVE, None),
        f"{FAMILY}-r1": (DeprecationState.DEPRECATED, image),
    }
    target.discard(candidate)
    assert store.list(CANDIDATES) == []

    # retention: keep 2 → r1 goes; the head stays
    assert target.prune(say) == [f"{FAMILY}-r1"]
    assert head(clients) == image
    assert [r.name for r in store.list(FAMILY)] == [image, f"{FAMILY}-r2"]

    # rollback: the head is deprecated, the family resolves to r2; a second one would empty it
    pipeline.rollback(spec, target, say)
    assert head(clients) == f"{FAMILY}-r2"
    with pytest.raises(RegistryError, match="only ACTIVE image"):
        pipeline.rollback(spec, target, say)
    assert head(clients) == f"{FAMILY}-r2"


def test_a_failing_test_stage_publishes_nothing_and_keeps_the_candidate_labelled(bed: Bed) -> None:
    fake, clients, spec, rendered, tmp_path, say = bed
    fake.seed_image(f"{FAMILY}-r1", FAMILY)
    target = GceTarget(spec, clients=clients, runner=RecordedRunner(FAILING))
    target.prepare(rendered, say)
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    outcome = target.test(rendered, candidate, tmp_path / "run", say)
    assert not outcome.ok and outcome.failures == ["test_services::test_osqueryd_enabled"]
    where = target.keep(candidate, tmp_path / "run")  # what pipeline.bake does on failure …
    target.discard(candidate)  # … and then in its finally
    assert where.startswith(f"image {candidate} in family {CANDIDATES} (project {PROJECT}, labelled bakery-failed=true")
    kept = GceImageStore(clients).get(candidate)
    assert kept.labels["bakery-failed"] == "true"
    week = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7)
    assert abs(int(kept.labels["bakery-expires"]) - week.timestamp()) < 60
    assert head(clients) == f"{FAMILY}-r1"
    assert "compute.images.insert" not in mutations(fake)
    assert fake.instances == {}


def test_an_interrupted_test_stage_deletes_the_instance(bed: Bed) -> None:
    fake, clients, spec, rendered, tmp_path, say = bed
    runner = RecordedRunner(error=Interrupted(signal.SIGTERM), fake=fake)
    target = GceTarget(spec, clients=clients, runner=runner)
    target.prepare(rendered, say)
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    with pytest.raises(Interrupted):
        target.test(rendered, candidate, tmp_path / "run", say)
    assert runner.instances_seen == [[f"bakery-test-{target.run_id}"]]
    assert fake.instances == {} and fake.disks == {}
    target.discard(candidate)
    assert GceImageStore(clients).list(CANDIDATES) == []


def test_an_instance_that_cannot_be_deleted_is_reported_and_fails_the_stage(bed: Bed, lines: list[str]) -> None:
    fake, clients, spec, rendered, tmp_path, say = bed
    fake.inject("compute.instances.delete", 503, times=4)  # every attempt of FAST_RETRY
    target = GceTarget(spec, clients=clients, runner=RecordedRunner())
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    with pytest.raises(
        RegistryError,
        match=r"^Compute Engine failed for instance 'bakery-test-[-0-9a-f]+' in project bakery-test after 4 attempts",
    ):
        target.test(rendered, candidate, tmp_path / "run", say)
    assert any(line.startswith("ERROR: test instance bakery-test-") and "`invoke reap`" in line for line in lines)
    assert len(fake.instances) == 1  # left for the reaper (and GCE's own maxRunDuration)
    (instance,) = fake.instances.values()
    assert instance["scheduling"] == {"maxRunDuration": {"seconds": "680"}, "instanceTerminationAction": "DELETE"}


def test_a_failed_instance_insert_is_one_clean_error_and_leaves_nothing(bed: Bed) -> None:
    fake, clients, spec, rendered, tmp_path, say = bed
    fake.inject("compute.instances.insert", op_error=("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.", 403))
    runner = RecordedRunner()
    target = GceTarget(spec, clients=clients, runner=runner)
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    with pytest.raises(OperationFailed, match=r"^instance 'bakery-test-[-0-9a-f]+' failed: QUOTA_EXCEEDED: Quota"):
        target.test(rendered, candidate, tmp_path / "run", say)
    assert runner.calls == [] and fake.instances == {}


STAGE_CALLS = {
    "test": (
        "compute.images.get",
        "compute.images.setLabels",
        "compute.instances.insert",
        "compute.zoneOperations.wait",
        "compute.instances.get",
        "compute.instances.getSerialPortOutput",
        "compute.instances.delete",
    ),
    "publish": (
        "compute.images.get",
        "compute.images.list",
        "compute.images.insert",
        "compute.globalOperations.wait",
        "compute.images.getFromFamily",
        "compute.images.deprecate",
    ),
}
TRANSIENT: dict[str, dict[str, Any]] = {
    "429": {"status": 429, "times": 2},
    "500": {"status": 500, "times": 2},
    "503": {"status": 503, "times": 2},
    "slow": {"delay": 0.3, "times": 1},  # longer than the client's 0.2 s timeout: the retry reuses the requestId
}


@pytest.mark.parametrize(
    ("stage", "method", "fault"),
    [
        pytest.param(stage, method, fault, id=f"{stage}-{method.split('.', 1)[1]}-{fault}")
        for stage, methods in STAGE_CALLS.items()
        for method in methods
        for fault in TRANSIENT
    ],
)
def test_transient_faults_in_the_test_stage_and_publish_end_in_success(
    bed: Bed, stage: str, method: str, fault: str
) -> None:
    fake, _, spec, rendered, tmp_path, say = bed
    fake.op_polls = 1  # every operation is waited for once
    for release in ("r1", "r2"):
        fake.seed_image(f"{FAMILY}-{release}", FAMILY)
    image, candidate = names()
    seed_candidate(fake, spec, candidate)
    target = GceTarget(spec, clients=make_clients(fake, timeout=0.2), runner=RecordedRunner())
    if stage == "test":
        fake.inject(method, **TRANSIENT[fault])
    assert target.test(rendered, candidate, tmp_path / "run", say).ok
    assert fake.instances == {} and fake.disks == {}
    if stage == "publish":
        fake.inject(method, **TRANSIENT[fault])
    target.publish(candidate, image, FAMILY, labels=publish_labels(spec), description="d", manifest="")
    assert fake._family_head(FAMILY)["name"] == image
    assert fake.images[f"{FAMILY}-r1"]["deprecated"]["state"] == "DEPRECATED"
    assert not fake.faults[method], "the fault was not reached"
    for mutation in ("compute.instances.insert", "compute.instances.delete", "compute.images.insert"):
        assert len({c.query["requestId"][0] for c in fake.calls_of(mutation)}) == 1  # retried with the same id


def test_racing_publishes_leave_one_head_and_deprecate_only_superseded_images(bed: Bed) -> None:
    fake, clients, spec, _, _, _ = bed
    fake.op_polls = 2  # the inserts interleave while their operations are polled
    fake.seed_image(f"{FAMILY}-r0", FAMILY)
    for round_ in range(3):
        sources = [f"{CANDIDATES}-{round_}-{side}" for side in "ab"]
        for source in sources:
            seed_candidate(fake, spec, source)
        barrier = threading.Barrier(2)
        errors: dict[str, Exception | None] = {}

        def publish(
            source: str, new_name: str, barrier: threading.Barrier, errors: dict[str, Exception | None]
        ) -> None:
            target = GceTarget(spec, clients=make_clients(fake))
            barrier.wait()
            try:
                target.publish(source, new_name, FAMILY, labels={}, description="d", manifest="")
                errors[new_name] = None
            except RegistryError as exc:
                errors[new_name] = exc

        new_names = [f"{FAMILY}-{round_}-{side}" for side in "ab"]
        threads = [
            threading.Thread(target=publish, args=(source, new_name, barrier, errors))
            for source, new_name in zip(sources, new_names, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        records = {r.name: r for r in GceImageStore(clients).list(FAMILY)}
        newest = max(new_names, key=lambda n: records[n].created)
        assert head(clients) == newest and errors[newest] is None
        assert all(records[n].state is DeprecationState.ACTIVE for n in new_names)  # the loser is not deprecated
        for record in records.values():
            if record.state is DeprecationState.DEPRECATED:  # only ever replaced by a newer image
                assert record.replacement is not None and records[record.replacement].created > record.created
        loser = next(n for n in new_names if n != newest)
        if errors[loser] is not None:
            assert f"resolves to {newest}: a concurrent publish" in str(errors[loser])


def test_stand_in_candidates_are_never_published(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, say: Say
) -> None:
    image, candidate = names()
    seed_candidate(fake, spec, candidate, source="stand-in")
    target = GceTarget(spec, clients=clients)
    with pytest.raises(RegistryError, match=rf"^refusing to publish {candidate} to GCE: it was baked from stand-in"):
        target.publish(candidate, image, FAMILY, labels=publish_labels(spec), description="d", manifest="")
    assert mutations(fake) == []


def test_dry_runs_print_the_exact_calls_and_change_nothing(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path, say: Say
) -> None:
    spec = gce_spec(tmp_path, keep=1, max_age_days=30)
    for release in ("r1", "r2", "r3"):
        fake.seed_image(f"{FAMILY}-{release}", FAMILY)
    image, candidate = names()
    seed_candidate(fake, spec, candidate)
    calls: list[str] = []
    target = GceTarget(spec, clients=clients, dry_run=calls.append)
    target.publish(candidate, image, FAMILY, labels={"git-sha": "abc1234"}, description="d", manifest="m.json")
    assert calls[0].startswith(f"images.insert project={PROJECT} body=")
    assert f'"name":"{image}"' in calls[0] and f'"sourceImage":"{LINK}{candidate}"' in calls[0]
    assert f'"promoted-from":"{candidate}"' in calls[0] and '"bakery-run-id"' not in calls[0]
    body = f'body={{"replacement":"{LINK}{image}","state":"DEPRECATED"}}'
    assert calls[1:] == [
        f"images.deprecate project={PROJECT} image={FAMILY}-r2 {body}",
        f"images.deprecate project={PROJECT} image={FAMILY}-r1 {body}",
    ]
    calls.clear()
    assert target.prune(say) == [f"{FAMILY}-r1"]  # r2 is rollback's target
    assert calls == [f"images.delete project={PROJECT} image={FAMILY}-r1"]
    assert mutations(fake) == []
    assert head(clients) == f"{FAMILY}-r3"


def test_prune_deletes_old_images_but_never_the_head_nor_template_users(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path, lines: list[str]
) -> None:
    spec = gce_spec(tmp_path, keep=5, max_age_days=30)
    now = datetime.datetime.now(datetime.UTC)
    for age, release in ((43, "r0"), (42, "r1"), (41, "r2"), (40, "r3")):  # all older than 30 days; r3 is the head
        created = now - datetime.timedelta(days=age)
        fake.seed_image(f"{FAMILY}-{release}", FAMILY)["creationTimestamp"] = created.isoformat(timespec="milliseconds")
    fake.seed_template("web", f"projects/{PROJECT}/global/images/{FAMILY}-r1")
    fake.seed_template("ci", f"projects/{PROJECT}/global/images/{FAMILY}-r1", region="us-east1")  # regional too
    target = GceTarget(spec, clients=clients)
    assert target.prune(lines.append) == [f"{FAMILY}-r0"]
    assert lines == [
        f"keeping {FAMILY}-r3: the family's head",
        f"keeping {FAMILY}-r2: rollback's target (the ACTIVE image right behind the head)",
        f"keeping {FAMILY}-r1: instance templates boot from it (ci, web)",
        f"retention of {FAMILY} (keep 5, max age 30 days): deleted {FAMILY}-r0",
    ]
    assert head(clients) == f"{FAMILY}-r3"


def expired_labels(role: str, run_id: str, *, ago: int = 60) -> dict[str, str]:
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    return {"bakery-role": role, "bakery-run-id": run_id, "bakery-expires": str(now - ago)}


def leftover_instance(clients: ComputeClients, name: str, labels: dict[str, str], *, auto_delete: bool) -> None:
    disk = compute_v1.AttachedDisk(
        boot=True,
        auto_delete=auto_delete,
        initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image="global/images/debian-12-base", labels=labels
        ),
    )
    Instances(clients).create(compute_v1.Instance(name=name, labels=labels, disks=[disk]))


def test_reap_removes_what_killed_runs_left_and_nothing_else(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, lines: list[str]
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    # a killed Packer run: its builder VM (disk kept, as Packer's is) and a disk of an earlier one
    leftover_instance(clients, "packer-1", expired_labels("builder", "r1"), auto_delete=False)
    fake.seed_disk(ZONE, "packer-0", expired_labels("builder", "r0"))
    # a killed test stage; a running one (not expired); somebody else's VM
    leftover_instance(clients, "bakery-test-r2", expired_labels("test", "r2"), auto_delete=True)
    leftover_instance(clients, "bakery-test-r3", expired_labels("test", "r3", ago=-3600), auto_delete=True)
    leftover_instance(clients, "web-1", {"bakery-role": "test"}, auto_delete=True)
    # candidates: expired, failed and expired, fresh, unlabelled and old, unlabelled and new
    fake.seed_image(f"{CANDIDATES}-a", CANDIDATES, labels=expired_labels("test", "r2"))
    fake.seed_image(f"{CANDIDATES}-b", CANDIDATES, labels={**expired_labels("test", "r4"), "bakery-failed": "true"})
    fake.seed_image(f"{CANDIDATES}-c", CANDIDATES, labels=expired_labels("test", "r3", ago=-3600))
    fake.seed_image(f"{CANDIDATES}-d", CANDIDATES)["creationTimestamp"] = (now - datetime.timedelta(days=2)).isoformat()
    fake.seed_image(f"{CANDIDATES}-e", CANDIDATES)
    fake.seed_image(f"{FAMILY}-x", FAMILY, labels=expired_labels("test", "r5"))  # not a candidate family

    plan = reaper.plan_reap(clients, [CANDIDATES], now=now)
    assert [(d.kind, d.name) for d in plan] == [
        ("instance", "packer-1"),
        ("instance", "bakery-test-r2"),
        ("disk", "packer-0"),
        ("disk", "packer-1"),
        ("image", f"{CANDIDATES}-b"),  # images newest first
        ("image", f"{CANDIDATES}-a"),
        ("image", f"{CANDIDATES}-d"),
    ]
    assert plan[4].reason.startswith("candidate (failed its tests) run r4 expired at ")
    calls: list[str] = []
    before = len(mutations(fake))
    reaper.reap(clients, plan, lines.append, dry_run=calls.append)
    assert calls == [
        f"instances.delete project={PROJECT} instance=packer-1 zone={ZONE}",
        f"instances.delete project={PROJECT} instance=bakery-test-r2 zone={ZONE}",
        f"disks.delete project={PROJECT} disk=packer-0 zone={ZONE}",
        f"disks.delete project={PROJECT} disk=packer-1 zone={ZONE}",
        f"images.delete project={PROJECT} image={CANDIDATES}-b",
        f"images.delete project={PROJECT} image={CANDIDATES}-a",
        f"images.delete project={PROJECT} image={CANDIDATES}-d",
    ]
    assert len(mutations(fake)) == before  # the dry run changed nothing

    assert reaper.reap(clients, plan, lines.append) == plan
    assert sorted(name for _, name in fake.instances) == ["bakery-test-r3", "web-1"]
    assert sorted(name for _, name in fake.disks) == ["bakery-test-r3", "web-1"]
    assert sorted(fake.images) == sorted(["debian-12-base", f"{CANDIDATES}-c", f"{CANDIDATES}-e", f"{FAMILY}-x"])
    assert reaper.plan_reap(clients, [CANDIDATES], now=now) == []


def test_the_prune_and_reap_tasks_reach_the_fake_through_the_endpoint_variable(
    fake: FakeCompute, tmp_path: Path, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKERY_COMPUTE_ENDPOINT", fake.endpoint)
    spec = gce_spec(tmp_path, keep=1)
    for release in ("r0", "r1", "r2"):
        fake.seed_image(f"{FAMILY}-{release}", FAMILY)
    fake.seed_image(f"{CANDIDATES}-a", CANDIDATES, labels=expired_labels("test", "r1"))
    assert gce_target.prune(spec, lines.append, dry_run=True) == [f"{FAMILY}-r0"]  # r1: rollback's target
    assert reaper.reap_environment([spec], lines.append, dry_run=True)[0].name == f"{CANDIDATES}-a"
    assert mutations(fake) == []
    assert [line for line in lines if line.startswith("dry run")] == [
        f"dry run, would call: images.delete project={PROJECT} image={FAMILY}-r0",
        f"dry run, would call: images.delete project={PROJECT} image={CANDIDATES}-a",
    ]
    gce_target.prune(spec, lines.append)
    reaper.reap_environment([spec], lines.append)
    assert sorted(fake.images) == ["debian-12-base", f"{FAMILY}-r1", f"{FAMILY}-r2"]


def test_prune_and_reap_refuse_local_environments() -> None:
    local = cli.project_settings().specs("local")
    with pytest.raises(ConfigError, match=r"^environment 'local' is not a gce environment"):
        gce_target.prune(local[0], print)
    with pytest.raises(ConfigError, match=r"^environment 'local' is not a gce environment"):
        reaper.reap_environment(local, print)


# --- pipeline.bake() itself (active once pipeline.Target has the publish hook) --------------------------


def test_bake_publishes_through_the_gce_target(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    spec = gce_spec(tmp_path)
    fake.seed_image(f"{FAMILY}-r1", FAMILY)
    build = PackerOnFake(fake)
    target = GceTarget(spec, clients=clients, runner=RecordedRunner())
    lines: list[str] = []
    report = pipeline.bake(spec, target, lines.append, build=build)
    seen = build.builds
    assert seen[0]["image_name"].startswith(CANDIDATES + "-")
    assert set(seen[0]) >= {"run_id", "expires", "git_sha", "image_name", "input_fingerprint", "source_image"}
    assert seen[0]["source_image"] == "debian-12-v20261101", "Packer gets the source image the fingerprint names"
    assert report.source_image == "debian-cloud/debian-12-v20261101"
    assert report.published is not None and report.published.name == report.image_name == head(clients)
    assert report.published.labels["promoted-from"] == seen[0]["image_name"]
    assert report.manifest is not None
    assert report.published.labels["manifest-sha256"] == hashlib.sha256(report.manifest.read_bytes()).hexdigest()[:63]
    assert [n for n in fake.images if n.startswith(CANDIDATES)] == []  # the tested candidate was discarded
    assert report.deleted == []  # retention keep 2: r1 and the new head


def test_bake_with_failing_tests_publishes_nothing(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    spec = gce_spec(tmp_path)
    fake.seed_image(f"{FAMILY}-r1", FAMILY)
    build = PackerOnFake(fake)
    target = GceTarget(spec, clients=clients, runner=RecordedRunner(FAILING))
    with pytest.raises(ImageTestError, match="nothing published"):
        pipeline.bake(spec, target, lambda _line: None, build=build)
    assert head(clients) == f"{FAMILY}-r1"
    assert fake.images[build.builds[0]["image_name"]]["labels"]["bakery-failed"] == "true"
    assert fake.instances == {}
