"""Pure parts of the pipeline: image names, the dry-run plan, free-space refusal."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

from bakery import cli, pipeline, targets
from bakery.config import BuildSpec, Retention
from bakery.errors import VMError
from bakery.images import KEPT_ROLLBACK
from bakery.local.registry import LocalRegistry
from bakery.local.target import check_free_space
from bakery.target import image_name

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NOW = datetime.datetime(2026, 11, 27, 15, 4, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("family", "sha", "expected"),
    [
        ("osquery-debian-12", "44d1c4d", "osquery-debian-12-20261127-150405-44d1c4d"),
        ("osquery-debian-12", "nogit", "osquery-debian-12-20261127-150405-nogit"),
        ("a" * 63, "44D1C4D9", "a" * 39 + "-20261127-150405-44d1c4d"),
        ("fam-" + "b" * 37 + "-x", "0123456", "fam-" + "b" * 35 + "-20261127-150405-0123456"),
    ],
)
def test_image_name_follows_gce_rules(family: str, sha: str, expected: str) -> None:
    name = image_name(family, NOW, sha)
    assert name == expected
    assert NAME_RE.match(name) and len(name) <= 63


def test_free_space_refusal_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(VMError, match=r"GiB free on the filesystem of .*: free space or point build_dir"):
        check_free_space([tmp_path / "not-yet" / "created"], 10**18)
    check_free_space([tmp_path], 1)


def test_dry_run_plan_changes_nothing(tmp_path: Path) -> None:
    settings = cli.project_settings()
    spec = settings.specs("local")[0]
    spec = type(spec)(spec.config, spec.env_name, spec.variant_name, tmp_path)
    target = targets.target_for(spec)
    lines = pipeline.plan(spec, target)
    assert lines[0] == "environment local, variant debian-12, artifact source stand-in"
    assert "publish into family osquery-debian-12 (current head: none)" in lines
    assert list(tmp_path.iterdir()) == [] or all(p.name == "build" for p in tmp_path.iterdir())
    assert not any(tmp_path.rglob("*.qcow2"))


def test_dry_run_plan_names_exactly_what_local_retention_deletes(tmp_path: Path) -> None:
    spec = cli.project_settings().specs("local")[0]
    env = spec.env.model_copy(update={"retention": Retention(keep=3, max_age_days=30)})
    config = spec.config.model_copy(update={"environments": {**spec.config.environments, "local": env}})
    spec = BuildSpec(config, "local", spec.variant_name, tmp_path)
    target = targets.target_for(spec)
    registry = target.store
    assert isinstance(registry, LocalRegistry)
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"qcow")
    now = datetime.datetime.now(datetime.UTC)
    family = spec.family
    for release, days in (("r1", 50), ("r2", 45), ("r3", 40), ("r4", 35), ("r5", 33)):  # r5: the head, old too
        registry.insert(f"{family}-{release}", family, disk)
        record = registry.root / "images" / f"{family}-{release}" / "image.json"
        stamp = (now - datetime.timedelta(days=days)).isoformat()
        record.write_text(
            re.sub(r'"creation_timestamp": "[^"]*"', f'"creation_timestamp": "{stamp}"', record.read_text())
        )

    lines = pipeline.plan(spec, target)
    (name,) = [line.removeprefix("publish as ") for line in lines if line.startswith("publish as ")]
    # once the new image is the head, r5 is rollback's target: kept although older than 30 days
    assert [line for line in lines if line.startswith("retention ")] == [
        f"retention of {family} once {name} is its head (keep 3, max age 30 days): would delete "
        f"{family}-r4, {family}-r3, {family}-r2, {family}-r1",
        f"retention keeps {family}-r5: {KEPT_ROLLBACK}",
    ]
    assert len(registry.list(family)) == 5

    target.publish(str(disk), name, family, labels={}, description="tested", manifest="")  # what bake publishes
    assert pipeline.retain(spec, registry) == [f"{family}-r4", f"{family}-r3", f"{family}-r2", f"{family}-r1"]
    assert [r.name for r in registry.list(family)] == [name, f"{family}-r5"]


def test_gce_environments_get_the_gce_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from bakery.gce.target import GceTarget

    # An http:// endpoint means anonymous credentials: nothing looks for Google credentials or contacts Google.
    monkeypatch.setenv("BAKERY_COMPUTE_ENDPOINT", "http://127.0.0.1:9")
    spec = cli.project_settings().specs("gstg")[0]
    assert isinstance(targets.target_for(spec), GceTarget)


def test_promote_copies_into_the_family(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"qcow")
    registry.insert("old-image", "osquery-debian-12", disk, labels={"git-sha": "abc1234"})
    registry.insert("new-image", "osquery-debian-12", disk, labels={"git-sha": "def5678"})
    settings = cli.project_settings()
    spec = settings.specs("local")[0]
    spec = type(spec)(spec.config, spec.env_name, spec.variant_name, tmp_path)
    target = targets.target_for(spec)
    target.store = registry
    said: list[str] = []
    assert pipeline.promote(spec, target, "old-image", said.append, dry_run=True) is None
    assert registry.get_from_family("osquery-debian-12").name == "new-image"
    record = pipeline.promote(spec, target, "old-image", said.append)
    assert record is not None and record.labels["promoted-from"] == "old-image"
    assert registry.get_from_family("osquery-debian-12").name == record.name
    assert record.name.endswith("-abc1234")
    assert said[0].startswith("plan (dry run): copy old-image as osquery-debian-12-")
