"""The target-independent family rules in bakery.images (the GCE store plans with them too)."""

from __future__ import annotations

import pytest

from bakery.errors import ConfigError, RegistryError
from bakery.images import (
    DeprecationState,
    ImageRecord,
    family_head,
    newest_first,
    retention_plan,
    rollback_plan,
    validate_name,
)

A, D, OBS, X = (
    DeprecationState.ACTIVE,
    DeprecationState.DEPRECATED,
    DeprecationState.OBSOLETE,
    DeprecationState.DELETED,
)


def rec(name: str, stamp: str, state: DeprecationState = A, family: str = "f") -> ImageRecord:
    return ImageRecord(name=name, family=family, creation_timestamp=stamp, state=state)


# Compute Engine style timestamps with offsets: the order is by instant, not by string.
IMAGES = [
    rec("img-1", "2026-11-01T10:00:00.000-08:00"),  # 18:00Z
    rec("img-2", "2026-11-01T19:00:00.000+00:00"),
    rec("img-3", "2026-11-01T20:30:00.500+01:00"),  # 19:30:00.5Z
    rec("img-4", "2026-11-01T19:30:00.250Z"),
    rec("other", "2026-12-01T00:00:00Z", family="g"),
]


def test_newest_first_orders_by_instant() -> None:
    assert [r.name for r in newest_first(IMAGES)] == ["other", "img-3", "img-4", "img-2", "img-1"]


@pytest.mark.parametrize(
    ("states", "head"),
    [
        ((A, A, A, A), "img-3"),
        ((A, A, D, A), "img-4"),
        ((A, A, OBS, X), "img-2"),
        ((A, D, D, D), "img-1"),
        ((D, OBS, X, D), None),
    ],
)
def test_family_head(states: tuple[DeprecationState, ...], head: str | None) -> None:
    records = [rec(r.name, r.creation_timestamp, s) for r, s in zip(IMAGES[:4], states, strict=True)]
    found = family_head(records, "f")
    assert (found.name if found else None) == head


def test_rollback_plan() -> None:
    old, new = rollback_plan(IMAGES, "f")
    assert (old.name, new.name) == ("img-3", "img-4")
    with pytest.raises(RegistryError, match="other is its only ACTIVE image"):
        rollback_plan(IMAGES, "g")


@pytest.mark.parametrize(
    ("keep", "deleted"),
    [(1, ["img-4", "img-2", "img-1"]), (2, ["img-2", "img-1"]), (4, []), (10, [])],
)
def test_retention_plan(keep: int, deleted: list[str]) -> None:
    assert [r.name for r in retention_plan(IMAGES, "f", keep)] == deleted


def test_retention_plan_keeps_an_old_head() -> None:
    records = [rec(r.name, r.creation_timestamp, D if r.name != "img-1" else A) for r in IMAGES[:4]]
    assert [r.name for r in retention_plan(records, "f", 1)] == ["img-4", "img-2"]


def test_retention_plan_rejects_keep_zero() -> None:
    with pytest.raises(ConfigError, match="keep at least 1"):
        retention_plan(IMAGES, "f", 0)


def test_validate_name_message_names_value_and_rule() -> None:
    with pytest.raises(ConfigError) as info:
        validate_name("Bad_Name", "family name")
    assert str(info.value) == (
        "invalid family name 'Bad_Name': use 1-63 lowercase letters, digits and hyphens, "
        "starting with a letter and not ending with a hyphen"
    )
