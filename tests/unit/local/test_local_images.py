"""The target-independent family rules in bakery.images (the GCE store plans with them too)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from bakery.errors import ConfigError, RegistryError
from bakery.images import (
    KEPT_HEAD,
    KEPT_ROLLBACK,
    DeprecationState,
    ImageRecord,
    RetentionPlan,
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


NOW = datetime.datetime(2026, 11, 27, 16, 0, 0, tzinfo=datetime.UTC)


def plan_names(plan: RetentionPlan) -> list[str]:
    return [r.name for r in plan.delete]


@pytest.mark.parametrize(
    ("keep", "deleted", "kept"),
    [
        (1, ["img-2", "img-1"], {"img-4": KEPT_ROLLBACK}),
        (2, ["img-2", "img-1"], {}),
        (4, [], {}),
        (10, [], {}),
    ],
)
def test_retention_plan_orders_by_instant(keep: int, deleted: list[str], kept: dict[str, str]) -> None:
    plan = retention_plan(IMAGES, "f", keep, now=NOW)
    assert (plan_names(plan), plan.kept, plan.skipped) == (deleted, kept, {})


def test_retention_plan_keeps_an_old_head() -> None:
    records = [rec(r.name, r.creation_timestamp, D if r.name != "img-1" else A) for r in IMAGES[:4]]
    plan = retention_plan(records, "f", 1, now=NOW)
    assert (plan_names(plan), plan.kept) == (["img-4", "img-2"], {"img-1": KEPT_HEAD})


STATES = {"A": A, "D": D, "O": OBS, "X": X}


def family(spec: str) -> list[ImageRecord]:
    """``"a:1 b:95:D g/c:3"``: image a one day old, b 95 days old and DEPRECATED, c of family g."""
    records = []
    for item in spec.split():
        where, _, image = item.rpartition("/")
        name, days, *state = image.split(":")
        created = NOW - datetime.timedelta(days=float(days))
        records.append(rec(name, created.isoformat(), STATES[state[0] if state else "A"], where or "f"))
    return records


H, R, WEB = KEPT_HEAD, KEPT_ROLLBACK, "instance templates boot from it (api, web)"
AGED = {"keep": 5, "max_age_days": 90}
RULES = [
    # id, images, retention_plan options, deleted, kept (with the reason)
    ("keep-n", "a:1 b:2 c:3 d:4", {"keep": 3}, "d", {}),
    ("keep-1-keeps-rollback-target", "a:1 b:2 c:3", {"keep": 1}, "c", {"b": R}),
    ("age-deletes-within-keep-n", "a:1 b:2 c:100 d:200", AGED, "c d", {}),
    ("age-cutoff", "a:1 b:89 c:91", AGED, "c", {}),
    ("head-kept-whatever-its-age", "a:100 b:200", AGED, "", {"a": H, "b": R}),
    ("rollback-target-kept-past-max-age", "a:1 b:95 c:96", AGED, "c", {"b": R}),
    ("deprecated-past-max-age-deleted", "a:1:D b:95 c:96:D d:97 e:98:O", AGED, "c e", {"b": H, "d": R}),
    ("deprecated-newer-than-head-count", "x:1:D y:2:D h:3 r:4 o:5", {"keep": 2}, "o", {"h": H, "r": R}),
    ("no-active-image-nothing-guarded", "a:1:D b:2:O c:3:X", {"keep": 1}, "b c", {}),
    (
        "template-protected-skipped",
        "a:1 b:2 c:3 d:4 e:100",
        {**AGED, "keep": 1, "templates": {"c": ["web", "api"], "d": []}},
        "d e",
        {"b": R, "c": WEB},
    ),
    ("incoming-is-the-new-head", "a:1 b:2 c:3", {"keep": 2, "incoming": "new"}, "b c", {}),
    ("incoming-makes-old-head-rollback-target", "a:100 b:200", {**AGED, "incoming": "new"}, "b", {"a": R}),
    ("other-families-ignored", "a:1 g/b:200 c:300", {**AGED, "keep": 1}, "", {"c": R}),
]


@pytest.mark.parametrize(("images", "options", "deleted", "kept"), [pytest.param(*r[1:], id=r[0]) for r in RULES])
def test_retention_plan_rules(images: str, options: dict[str, Any], deleted: str, kept: dict[str, str]) -> None:
    plan = retention_plan(family(images), "f", now=NOW, **options)
    assert plan_names(plan) == deleted.split()
    assert plan.kept == kept
    assert plan.skipped == ({"c": ["web", "api"]} if kept.get("c") == WEB else {})


@pytest.mark.parametrize(
    ("keep", "max_age", "message"),
    [(0, None, "retention keep=0 is invalid: keep at least 1"), (1, 0, "max_age_days=0 is invalid")],
)
def test_retention_plan_rejects_invalid_settings(keep: int, max_age: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        retention_plan(IMAGES, "f", keep, now=NOW, max_age_days=max_age)


def test_validate_name_message_names_value_and_rule() -> None:
    with pytest.raises(ConfigError) as info:
        validate_name("Bad_Name", "family name")
    assert str(info.value) == (
        "invalid family name 'Bad_Name': use 1-63 lowercase letters, digits and hyphens, "
        "starting with a letter and not ending with a hyphen"
    )
