"""The local registry's family semantics (Compute Engine's), atomicity and validation."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from bakery.errors import BakeryError, ConfigError, RegistryError
from bakery.images import KEPT_HEAD, KEPT_ROLLBACK, DeprecationState, ImageStore
from bakery.local.registry import LocalRegistry


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "candidate.qcow2"
    path.write_bytes(b"QFI\xfb not really a disk")
    return path


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry", lock_timeout=5)


def publish(registry: LocalRegistry, disk: Path, *names: str, family: str = "osquery") -> None:
    for name in names:
        registry.insert(name, family, disk, labels={"variant": "default"}, description=f"image {name}")


def leftovers(registry: LocalRegistry) -> list[str]:
    tmp = registry.root / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_is_an_image_store(registry: LocalRegistry) -> None:
    store: ImageStore = registry
    assert store.list() == []


def test_insert_stores_disk_record_and_manifest(registry: LocalRegistry, disk: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text('{"manifest_version": 1}\n')
    record = registry.insert(
        "osquery-1", "osquery", disk, labels={"git-sha": "abc123"}, description="d", manifest=str(manifest)
    )
    stored = registry.root / "images" / "osquery-1"
    assert (stored / "disk.qcow2").read_bytes() == disk.read_bytes()
    assert disk.exists(), "insert copies: the source stays"
    data = json.loads((stored / "image.json").read_text())
    assert data["name"] == "osquery-1"
    assert data["family"] == "osquery"
    assert data["state"] == "ACTIVE"
    assert data["labels"] == {"git-sha": "abc123"}
    assert data["manifest"] == str(stored / "manifest.json")
    assert (stored / "manifest.json").read_bytes() == manifest.read_bytes(), "the manifest is stored with the image"
    assert record.location == str(stored / "disk.qcow2")
    assert registry.get("osquery-1") == record
    assert record.created.tzinfo is not None


def test_insert_refuses_a_missing_manifest_and_leaves_nothing(registry: LocalRegistry, disk: Path) -> None:
    with pytest.raises(RegistryError, match=r"manifest /nonexistent\.json does not exist"):
        registry.insert("osquery-1", "osquery", disk, manifest="/nonexistent.json")
    assert registry.list() == []


def test_head_is_newest_active(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2", "osquery-3")
    publish(registry, disk, "other-1", family="other")
    assert registry.get_from_family("osquery").name == "osquery-3"
    assert registry.get_from_family("other").name == "other-1"
    assert [r.name for r in registry.list("osquery")] == ["osquery-3", "osquery-2", "osquery-1"]
    assert [r.name for r in registry.list()] == ["other-1", "osquery-3", "osquery-2", "osquery-1"]


def test_same_instant_inserts_are_strictly_ordered(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, *(f"img-{i}" for i in range(10)))
    stamps = [r.created for r in reversed(registry.list("osquery"))]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 10
    assert registry.get_from_family("osquery").name == "img-9"


@pytest.mark.parametrize("state", ["DEPRECATED", "OBSOLETE", "DELETED"])
def test_deprecated_images_are_skipped_by_the_family(registry: LocalRegistry, disk: Path, state: str) -> None:
    publish(registry, disk, "osquery-1", "osquery-2")
    record = registry.deprecate("osquery-2", state, replacement="osquery-1")
    assert record.state is DeprecationState(state)
    assert record.replacement == "osquery-1"
    assert registry.get("osquery-2").state is DeprecationState(state)
    assert registry.get_from_family("osquery").name == "osquery-1"


def test_family_without_active_image_has_no_head(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1")
    registry.deprecate("osquery-1", "OBSOLETE")
    with pytest.raises(RegistryError, match="family 'osquery' has no ACTIVE image"):
        registry.get_from_family("osquery")
    with pytest.raises(RegistryError, match="no ACTIVE image"):
        registry.get_from_family("never-published")


def test_deprecate_refuses_active_unknown_state_and_bad_replacement(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1")
    with pytest.raises(RegistryError, match="un-deprecating"):
        registry.deprecate("osquery-1", "ACTIVE")
    with pytest.raises(RegistryError, match="unknown deprecation state 'RETIRED'"):
        registry.deprecate("osquery-1", "RETIRED")
    with pytest.raises(RegistryError, match="'osquery-9' not found"):
        registry.deprecate("osquery-1", "DEPRECATED", replacement="osquery-9")
    with pytest.raises(RegistryError, match="cannot replace itself"):
        registry.deprecate("osquery-1", "DEPRECATED", replacement="osquery-1")
    assert registry.get("osquery-1").state is DeprecationState.ACTIVE


def test_rollback_deprecates_head_in_favour_of_previous(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2", "osquery-3")
    old, new = registry.rollback("osquery")
    assert (old.name, new.name) == ("osquery-3", "osquery-2")
    assert old.state is DeprecationState.DEPRECATED
    assert old.replacement == "osquery-2"
    assert registry.get_from_family("osquery").name == "osquery-2"
    old, new = registry.rollback("osquery")
    assert (old.name, new.name) == ("osquery-2", "osquery-1")


def test_rollback_refuses_to_leave_the_family_empty(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2")
    registry.deprecate("osquery-1", "DEPRECATED")
    with pytest.raises(RegistryError, match="osquery-2 is its only ACTIVE image"):
        registry.rollback("osquery")
    assert registry.get("osquery-2").state is DeprecationState.ACTIVE
    with pytest.raises(RegistryError, match="has no ACTIVE image"):
        registry.rollback("empty-family")


def test_retention_keeps_newest(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2", "osquery-3", "osquery-4")
    publish(registry, disk, "other-1", family="other")
    assert registry.retention("osquery", keep=2) == ["osquery-2", "osquery-1"]
    assert [r.name for r in registry.list("osquery")] == ["osquery-4", "osquery-3"]
    assert not (registry.root / "images" / "osquery-1").exists()
    assert registry.get("other-1").family == "other"
    assert leftovers(registry) == []


def test_retention_never_deletes_the_head(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2", "osquery-3")
    registry.rollback("osquery")  # head: osquery-2
    registry.rollback("osquery")  # head: osquery-1, the oldest
    assert registry.retention("osquery", keep=1) == ["osquery-2"]
    assert [r.name for r in registry.list("osquery")] == ["osquery-3", "osquery-1"]
    assert registry.get_from_family("osquery").name == "osquery-1"


def age(registry: LocalRegistry, name: str, days: float) -> None:
    """Make image ``name`` ``days`` old (its record's creation timestamp)."""
    path = registry.root / "images" / name / "image.json"
    data = json.loads(path.read_text())
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    data["creation_timestamp"] = created.isoformat(timespec="microseconds")
    path.write_text(json.dumps(data))


def test_retention_honours_max_age_but_never_the_head_nor_its_rollback_target(
    registry: LocalRegistry, disk: Path
) -> None:
    publish(registry, disk, "osquery-1", "osquery-2", "osquery-3", "osquery-4")
    for name, days in (("osquery-1", 50), ("osquery-2", 45), ("osquery-3", 40), ("osquery-4", 35)):
        age(registry, name, days)
    plan = registry.plan_retention("osquery", keep=5, max_age_days=30)
    assert (plan.names, plan.kept, plan.skipped) == (
        ["osquery-2", "osquery-1"],
        {"osquery-4": KEPT_HEAD, "osquery-3": KEPT_ROLLBACK},
        {},
    )
    assert registry.retention("osquery", keep=5, max_age_days=30) == plan.names
    assert [r.name for r in registry.list("osquery")] == ["osquery-4", "osquery-3"]
    assert leftovers(registry) == []


def test_retention_needs_keep_of_at_least_one(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1")
    with pytest.raises(ConfigError, match="keep=0"):
        registry.retention("osquery", keep=0)


def test_duplicate_name_is_refused(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1")
    with pytest.raises(RegistryError, match="'osquery-1' already exists"):
        registry.insert("osquery-1", "other", disk, labels={}, description="")
    assert registry.get("osquery-1").family == "osquery"
    assert leftovers(registry) == []


@pytest.mark.parametrize(
    "name", ["", "1abc", "Osquery", "osquery-", "os_query", "a" * 64, "osquery.1", "-osquery", "os query"]
)
def test_invalid_image_names_are_refused(registry: LocalRegistry, disk: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid image name"):
        registry.insert(name, "osquery", disk, labels={}, description="")
    assert not (registry.root / "images").exists() or not any((registry.root / "images").iterdir())


@pytest.mark.parametrize("name", ["a", "a" * 63, "osquery-20261127-1", "a-b-c1"])
def test_valid_image_names(registry: LocalRegistry, disk: Path, name: str) -> None:
    assert registry.insert(name, "osquery", disk, labels={}, description="").name == name


def test_invalid_family_and_labels_are_refused(registry: LocalRegistry, disk: Path) -> None:
    with pytest.raises(ConfigError, match="invalid family name 'Prod'"):
        registry.insert("osquery-1", "Prod", disk, labels={}, description="")
    with pytest.raises(ConfigError, match="invalid label key 'Git'"):
        registry.insert("osquery-1", "osquery", disk, labels={"Git": "x"}, description="")
    with pytest.raises(ConfigError, match=r"invalid value 'A\.B'"):
        registry.insert("osquery-1", "osquery", disk, labels={"k": "A.B"}, description="")
    with pytest.raises(ConfigError, match="too many image labels"):
        registry.insert("osquery-1", "osquery", disk, labels={f"k{i}": "v" for i in range(65)}, description="")


def test_missing_source_disk(registry: LocalRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        registry.insert("osquery-1", "osquery", tmp_path / "nope.qcow2", labels={}, description="")


def test_failed_insert_leaves_nothing(registry: LocalRegistry, disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(registry, disk, "osquery-1")

    def broken_copy(src: object, dst: object) -> None:
        Path(str(dst)).write_bytes(b"half a disk")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="No space left"):
        publish(registry, disk, "osquery-2")
    assert leftovers(registry) == []
    assert sorted(p.name for p in (registry.root / "images").iterdir()) == ["osquery-1"]
    assert registry.get_from_family("osquery").name == "osquery-1"


def test_interrupted_insert_leaves_nothing(
    registry: LocalRegistry, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_copy(src: object, dst: object) -> None:
        Path(str(dst)).write_bytes(b"half a disk")
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        publish(registry, disk, "osquery-1")
    assert leftovers(registry) == []
    assert registry.list() == []


def test_staging_left_by_a_killed_process_is_swept(registry: LocalRegistry, disk: Path) -> None:
    stale = registry.root / ".tmp" / "insert-osquery-9-abc"
    stale.mkdir(parents=True)
    (stale / "disk.qcow2").write_bytes(b"x")
    publish(registry, disk, "osquery-1")
    assert leftovers(registry) == []
    assert [r.name for r in registry.list()] == ["osquery-1"]


def test_delete(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1", "osquery-2")
    registry.delete("osquery-1")
    assert [r.name for r in registry.list()] == ["osquery-2"]
    with pytest.raises(RegistryError, match="not found"):
        registry.delete("osquery-1")
    assert leftovers(registry) == []


def test_promote_copies_into_another_family(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "candidate-1", family="osquery-candidate")
    promoted = registry.promote("candidate-1", "osquery", new_name="osquery-1")
    assert promoted.family == "osquery"
    assert promoted.labels == {"variant": "default", "promoted-from": "candidate-1"}
    assert registry.get_from_family("osquery").name == "osquery-1"
    assert registry.get_from_family("osquery-candidate").name == "candidate-1"
    registry.deprecate("candidate-1", "DEPRECATED")
    with pytest.raises(RegistryError, match="refusing to promote image 'candidate-1': it is DEPRECATED"):
        registry.promote("candidate-1", "osquery", new_name="osquery-2")


def test_unreadable_record_is_a_registry_error(registry: LocalRegistry, disk: Path) -> None:
    publish(registry, disk, "osquery-1")
    (registry.root / "images" / "osquery-1" / "image.json").write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable"):
        registry.get("osquery-1")


def _hold_lock(root: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    from bakery.local.files import file_lock

    with file_lock(Path(root) / ".lock", timeout=5, what="test"):
        ready.set()
        release.wait(10)


def test_mutations_wait_for_the_lock(tmp_path: Path, disk: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry", lock_timeout=0.5)
    registry.root.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(registry.root), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(BakeryError, match="locked by another process"):
            publish(registry, disk, "osquery-1")
    finally:
        release.set()
        holder.join(10)
    publish(registry, disk, "osquery-1")
    assert registry.get_from_family("osquery").name == "osquery-1"
