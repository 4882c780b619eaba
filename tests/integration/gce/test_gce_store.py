"""GceImageStore through the real google-cloud-compute client against the fake Compute API: family
semantics, paging, rollback, retention (and that a bake's dry-run plan names what its retention deletes),
promotion, dry runs, racing promotions, operation polling."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest
from google.api_core import exceptions as api_exceptions

from bakery import pipeline
from bakery.errors import ImageNotFoundError, RegistryError
from bakery.gce.client import ComputeApiError, ComputeClients
from bakery.gce.store import GceImageStore
from bakery.gce.target import GceTarget
from bakery.images import KEPT_HEAD, KEPT_ROLLBACK, DeprecationState
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, PackerOnFake, RecordedRunner, make_clients
from tests.integration.gce.test_gce_pipeline import FAMILY, gce_spec, mutations

BASE = "debian-12-base"


def seed_family(store: GceImageStore, family: str, *names: str) -> None:
    for name in names:
        store.insert(name, family, BASE, labels={"bake": name}, description=f"bake {name}", manifest=f"m/{name}.json")


def test_insert_copies_the_source_image_with_family_labels_description_and_manifest(
    store: GceImageStore, fake: FakeCompute
) -> None:
    record = store.insert("c-1", "cand", BASE, labels={"osquery": "5-23-1"}, description="d", manifest="b/m.json")
    assert (record.name, record.family, record.state, record.manifest, record.description) == (
        "c-1",
        "cand",
        DeprecationState.ACTIVE,
        "b/m.json",
        "d",
    )
    assert record.labels == {"osquery": "5-23-1"}
    assert record.location.endswith(f"/projects/{PROJECT}/global/images/c-1")
    (call,) = fake.calls_of("compute.images.insert")
    assert call.body == {
        "name": "c-1",
        "family": "cand",
        "sourceImage": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/{BASE}",
        "labels": {"osquery": "5-23-1"},
        "description": "d\nbakery-manifest: b/m.json",
    }
    assert len(call.query["requestId"][0]) == 36
    assert store.get("c-1") == record


def test_list_pages_through_the_family_filter_newest_first(store: GceImageStore, fake: FakeCompute) -> None:
    seed_family(store, "cand", "c-1", "c-2", "c-3")
    seed_family(store, "other", "o-1")
    assert [r.name for r in store.list("cand")] == ["c-3", "c-2", "c-1"]
    list_calls = fake.calls_of("compute.images.list")
    assert [c.query.get("filter") for c in list_calls] == [['family = "cand"']] * 2  # page size 2: two pages
    assert "pageToken" in list_calls[1].query
    assert [r.name for r in store.list()] == ["o-1", "c-3", "c-2", "c-1", BASE]


def test_get_from_family_skips_deprecated_images(store: GceImageStore) -> None:
    seed_family(store, "cand", "c-1", "c-2")
    assert store.get_from_family("cand").name == "c-2"
    store.deprecate("c-2", "DEPRECATED", replacement="c-1")
    assert store.get_from_family("cand").name == "c-1"
    store.deprecate("c-1", "OBSOLETE")
    with pytest.raises(ComputeApiError, match=rf"^an ACTIVE image of family 'cand' not found in project {PROJECT}$"):
        store.get_from_family("cand")


def test_deprecate_and_delete(store: GceImageStore) -> None:
    seed_family(store, "cand", "c-1", "c-2")
    record = store.deprecate("c-1", "deleted", replacement="c-2")
    assert (record.state, record.replacement) == (DeprecationState.DELETED, "c-2")
    store.delete("c-1")
    with pytest.raises(ImageNotFoundError, match=rf"^image 'c-1' not found in project {PROJECT}$"):
        store.get("c-1")
    with pytest.raises(ComputeApiError, match=r"^image 'c-1' not found"):
        store.delete("c-1")
    with pytest.raises(ImageNotFoundError, match=r"^image 'nope' not found"):
        store.deprecate("c-2", "DEPRECATED", replacement="nope")


def test_insert_of_an_existing_name_fails_cleanly(store: GceImageStore) -> None:
    seed_family(store, "cand", "c-1")
    with pytest.raises(ComputeApiError, match=rf"^image 'c-1' already exists in project {PROJECT}$"):
        seed_family(store, "cand", "c-1")


def test_rollback_deprecates_the_head_with_the_next_image_as_replacement(store: GceImageStore) -> None:
    seed_family(store, "cand", "c-1", "c-2", "c-3")
    old, new = store.rollback("cand")
    assert (old.name, old.state, old.replacement, new.name) == ("c-3", DeprecationState.DEPRECATED, "c-2", "c-2")
    assert store.get_from_family("cand").name == "c-2"
    store.rollback("cand")
    with pytest.raises(RegistryError, match="c-1 is its only ACTIVE image"):
        store.rollback("cand")
    assert store.get_from_family("cand").name == "c-1"


def test_rollback_refuses_when_the_head_changed_meanwhile(store: GceImageStore, fake: FakeCompute) -> None:
    seed_family(store, "cand", "c-1", "c-2")
    real_list = store.list

    def list_then_race(family: str | None = None) -> list:  # type: ignore[type-arg]
        records = real_list(family)
        seed_family(store, "cand", "c-3")  # another pipeline publishes between plan and act
        return records

    store.list = list_then_race  # type: ignore[method-assign]
    with pytest.raises(RegistryError, match="changed during rollback: its head is now c-3, not c-2"):
        store.rollback("cand")
    assert fake.calls_of("compute.images.deprecate") == []


def test_retention_keeps_the_head_its_rollback_target_and_images_instance_templates_use(
    store: GceImageStore, fake: FakeCompute
) -> None:
    seed_family(store, "cand", "c-0", "c-1", "c-2", "c-3", "c-4", "c-5")
    store.deprecate("c-5", "DEPRECATED", replacement="c-4")  # head is c-4, rollback's target c-3; c-5 is newest
    fake.seed_template("web-v1", f"projects/{PROJECT}/global/images/c-1")
    fake.seed_template("web-v2", "global/images/c-2")
    fake.seed_template("web-family", f"projects/{PROJECT}/global/images/family/cand")
    plan = store.plan_retention("cand", keep=1)
    assert [r.name for r in plan.delete] == ["c-0"]
    assert plan.kept == {
        "c-4": KEPT_HEAD,
        "c-3": KEPT_ROLLBACK,
        "c-2": "instance templates boot from it (web-v2)",
        "c-1": "instance templates boot from it (web-v1)",
    }
    assert plan.skipped == {"c-2": ["web-v2"], "c-1": ["web-v1"]}
    assert store.retention("cand", keep=1) == ["c-0"]
    assert [r.name for r in store.list("cand")] == ["c-5", "c-4", "c-3", "c-2", "c-1"]


def test_the_dry_run_plan_names_exactly_what_the_bake_s_retention_deletes(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    spec = gce_spec(tmp_path, keep=3, max_age_days=30)
    now = datetime.datetime.now(datetime.UTC)
    for release, age in (("r1", 50), ("r2", 45), ("r3", 40), ("r4", 35), ("r5", 33)):  # r5: the head, old too
        image = fake.seed_image(f"{FAMILY}-{release}", FAMILY, labels={"artifact-source": "upstream"})
        image["creationTimestamp"] = (now - datetime.timedelta(days=age)).isoformat(timespec="milliseconds")
    fake.seed_template("web", f"projects/{PROJECT}/global/images/{FAMILY}-r2")

    plan = pipeline.plan(spec, GceTarget(spec, clients=clients))
    assert mutations(fake) == []
    (name,) = [line.removeprefix("publish as ") for line in plan if line.startswith("publish as ")]
    # once the new image is the head, r5 is rollback's target: kept although older than 30 days
    assert [line for line in plan if line.startswith("retention ")] == [
        f"retention of {FAMILY} once {name} is its head (keep 3, max age 30 days): would delete "
        f"{FAMILY}-r4, {FAMILY}-r3, {FAMILY}-r1",
        f"retention keeps {FAMILY}-r5: {KEPT_ROLLBACK}",
        f"retention keeps {FAMILY}-r2: instance templates boot from it (web)",
    ]

    lines: list[str] = []
    target = GceTarget(spec, clients=clients, runner=RecordedRunner())
    report = pipeline.bake(spec, target, lines.append, build=PackerOnFake(fake))
    assert report.deleted == [f"{FAMILY}-r4", f"{FAMILY}-r3", f"{FAMILY}-r1"]
    assert [r.name for r in target.images.list(FAMILY)] == [report.image_name, f"{FAMILY}-r5", f"{FAMILY}-r2"]
    assert target.images.get_from_family(FAMILY).name == report.image_name


def test_promote_copies_into_the_family_with_promoted_from(store: GceImageStore) -> None:
    seed_family(store, "cand", "c-1")
    record = store.promote("c-1", "prod", new_name="prod-1")
    assert record.labels == {"bake": "c-1", "promoted-from": "c-1"}
    assert (record.family, record.manifest, record.description) == ("prod", "m/c-1.json", "bake c-1")
    assert store.get_from_family("prod").name == "prod-1"
    store.deprecate("c-1", "DEPRECATED")
    with pytest.raises(RegistryError, match="refusing to promote image 'c-1': it is DEPRECATED"):
        store.promote("c-1", "prod", new_name="prod-2")


def test_dry_run_reports_exact_calls_and_changes_nothing(store: GceImageStore, fake: FakeCompute) -> None:
    seed_family(store, "cand", "c-0", "c-1", "c-2")
    lines: list[str] = []
    dry = GceImageStore(store.clients, dry_run=lines.append)
    before = {name: dict(image) for name, image in fake.images.items()}
    dry.rollback("cand")
    dry.retention("cand", keep=1)
    dry.promote("c-2", "prod", new_name="prod-1")
    link = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/"
    assert lines == [
        f'images.deprecate project={PROJECT} image=c-2 body={{"replacement":"{link}c-1","state":"DEPRECATED"}}',
        f"images.delete project={PROJECT} image=c-0",  # c-1 stays: rollback's target
        f"images.insert project={PROJECT} body="
        '{"description":"bake c-2\\nbakery-manifest: m/c-2.json","family":"prod",'
        f'"labels":{{"bake":"c-2","promoted-from":"c-2"}},"name":"prod-1","sourceImage":"{link}c-2",'
        '"storageLocations":["eu"]}',  # the source's location, carried explicitly
    ]
    assert fake.images == before


def test_racing_promotions_leave_one_head_and_deprecate_nothing(fake: FakeCompute, store: GceImageStore) -> None:
    fake.op_polls = 2  # the inserts interleave while their operations are polled
    seed_family(store, "cand", "c-1", "c-2")

    def promote(barrier: threading.Barrier, outcomes: dict[str, Exception | None], source: str, new_name: str) -> None:
        clients = make_clients(fake)
        barrier.wait()
        try:
            GceImageStore(clients).promote(source, "prod", new_name=new_name)
            outcomes[new_name] = None
        except RegistryError as exc:
            outcomes[new_name] = exc

    for round_ in range(3):
        barrier = threading.Barrier(2)
        outcomes: dict[str, Exception | None] = {}
        names = (f"prod-{round_}-a", f"prod-{round_}-b")
        threads = [
            threading.Thread(target=promote, args=(barrier, outcomes, source, name))
            for source, name in zip(("c-1", "c-2"), names, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        records = [store.get(n) for n in names]
        newest = max(records, key=lambda r: r.created)
        head = store.get_from_family("prod")
        assert head.name == newest.name
        assert all(r.state is DeprecationState.ACTIVE for r in store.list("prod"))
        assert outcomes[newest.name] is None
        loser = next(n for n in names if n != newest.name)
        if outcomes[loser] is not None:  # it re-checked after the winner's insert
            assert f"resolves to {newest.name}: a concurrent promotion" in str(outcomes[loser])


def test_operations_are_polled_at_the_configured_endpoint_only(fake: FakeCompute, clients: ComputeClients) -> None:
    fake.op_polls = 3
    store = GceImageStore(clients)
    store.insert("c-1", "cand", BASE, labels={}, description="")
    waits = fake.calls_of("compute.globalOperations.wait")
    assert len(waits) == 3 and all(w.path.endswith("/wait") for w in waits)
    # (the ``fake`` fixture asserts that no socket looked up or connected to anything but the fake)


def test_the_library_s_own_operation_polling_would_leave_the_endpoint(
    fake: FakeCompute, clients: ComputeClients, connections: list[object]
) -> None:
    """Why ``*_unary`` + our own wait: ExtendedOperation.result() polls compute.googleapis.com."""
    from google.cloud import compute_v1

    fake.op_polls = 2
    image = compute_v1.Image(name="c-1", source_image=f"global/images/{BASE}")
    operation = clients.images.insert(project=PROJECT, image_resource=image, timeout=5)
    with pytest.raises(Exception) as caught:
        operation.result(timeout=5)
    assert not isinstance(caught.value, api_exceptions.NotFound)
    foreign = [c for c in connections if c[0] != "127.0.0.1"]  # type: ignore[index]
    assert foreign and foreign[0][0] == "compute.googleapis.com"  # type: ignore[index]
    assert fake.calls_of("compute.globalOperations.get") == []
    connections.clear()  # the guard did its job; let the fixture's teardown pass


def test_publish_and_promote_carry_the_tested_images_guest_os_features_and_location(
    store: GceImageStore, fake: FakeCompute
) -> None:
    """Whether images.insert from sourceImage inherits guestOsFeatures and storageLocations is documented
    nowhere; the fake inherits neither, and the copies still have exactly the candidate's values, because
    the insert requests name them."""
    features = [{"type": "UEFI_COMPATIBLE"}, {"type": "GVNIC"}, {"type": "VIRTIO_SCSI_MULTIQUEUE"}]
    fake.seed_image("cand-1", "osq-candidate", guestOsFeatures=features, storageLocations=["us"])
    published = store.publish("cand-1", "osq", new_name="osq-1", labels={"a": "b"}, description="d")
    promoted = store.promote("osq-1", "osq", new_name="osq-2")
    for image in (published, promoted):
        assert image.guest_os_features == ("UEFI_COMPATIBLE", "GVNIC", "VIRTIO_SCSI_MULTIQUEUE")
        assert image.storage_locations == ("us",)
    inserts = [c for c in fake.calls if c.method == "compute.images.insert"]
    assert [c.body["guestOsFeatures"] for c in inserts] == [features, features]
    assert [c.body["storageLocations"] for c in inserts] == [["us"], ["us"]]
    fake.seed_image("plain", "other")
    assert fake.images["plain"].get("guestOsFeatures") is None  # the fake invents nothing
