"""Images and image families, the same for every target: the record, the store interface, the rules.

The rules follow Compute Engine: a family's head is its newest image (by creation time) that is not
DEPRECATED, OBSOLETE or DELETED; rollback deprecates the head; un-deprecating is not relied upon, so a
store refuses a rollback that would leave the family without an ACTIVE image. The pure functions here
plan; a store (local registry, GCE) carries the plan out.

Retention is decided by :func:`retention_plan` alone, for the ``--dry-run`` plan and for the act: it keeps
the ``keep`` newest images and deletes the rest and, with ``max_age_days``, every image older than that;
but never the head, never the ACTIVE image right behind it (rollback's target, which a publish keeps
ACTIVE for that purpose), whatever their age, and never an image an instance template boots from.
"""

from __future__ import annotations

import builtins
import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bakery import config
from bakery.errors import ConfigError, RegistryError

NAME_RE = re.compile(config.GCE_NAME_RE)
LABEL_KEY_RE = re.compile(config.LABEL_KEY_RE)
LABEL_VALUE_RE = re.compile(config.LABEL_VALUE_RE)
MAX_LABELS = config.MAX_LABELS


class DeprecationState(StrEnum):
    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"
    OBSOLETE = "OBSOLETE"
    DELETED = "DELETED"


@dataclass(frozen=True)
class ImageRecord:
    """One image as a store reports it. ``creation_timestamp`` is RFC 3339; ``location`` is where the
    image lives (a qcow2 path locally, a selfLink on GCE); ``manifest`` names the bake's manifest."""

    name: str
    family: str
    creation_timestamp: str
    state: DeprecationState = DeprecationState.ACTIVE
    replacement: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    location: str = ""
    manifest: str = ""
    guest_os_features: tuple[str, ...] = ()  # GCE: carried over explicitly when an image is copied
    storage_locations: tuple[str, ...] = ()

    @property
    def created(self) -> datetime.datetime:
        return parse_timestamp(self.creation_timestamp)

    @property
    def active(self) -> bool:
        """Eligible to be a family's head."""
        return self.state is DeprecationState.ACTIVE


class ImageStore(Protocol):
    """Where images are published, with Compute Engine's family semantics (local registry, GCE)."""

    def insert(
        self,
        name: str,
        family: str,
        source: str,
        *,
        labels: Mapping[str, str],
        description: str,
        manifest: str = "",
    ) -> ImageRecord:
        """Create ``name`` in ``family`` from ``source`` (a disk path locally; a source image on GCE);
        ``manifest`` names the bake's manifest file."""
        ...

    def get(self, name: str) -> ImageRecord: ...

    def list(self, family: str | None = None) -> builtins.list[ImageRecord]:
        """Images, newest first, optionally of one family."""
        ...

    def get_from_family(self, family: str) -> ImageRecord:
        """The family's head; RegistryError if it has none."""
        ...

    def deprecate(self, name: str, state: str, *, replacement: str | None = None) -> ImageRecord: ...

    def delete(self, name: str) -> None: ...

    def rollback(self, family: str) -> tuple[ImageRecord, ImageRecord]:
        """Deprecate the head (replacement: the next ACTIVE image); return (old head, new head)."""
        ...

    def plan_retention(
        self,
        family: str,
        keep: int,
        *,
        max_age_days: int | None = None,
        now: datetime.datetime | None = None,
        incoming: str | None = None,
    ) -> RetentionPlan:
        """:func:`retention_plan` of ``family`` as it is (``now``: default the current time), with the
        store's protections (GCE: images instance templates boot from); ``incoming``: as if that image
        had just been published into the family. Changes nothing."""
        ...

    def retention(
        self, family: str, keep: int, *, max_age_days: int | None = None, now: datetime.datetime | None = None
    ) -> builtins.list[str]:
        """Delete exactly what :meth:`plan_retention` plans (same arguments); return the deleted names."""
        ...

    def promote(self, name: str, family: str, *, new_name: str) -> ImageRecord:
        """Copy tested image ``name`` as ``new_name`` into ``family`` (e.g. candidate -> production)."""
        ...


def parse_state(state: str) -> DeprecationState:
    """A deprecation state to set; ACTIVE (un-deprecating) is refused by every store."""
    try:
        parsed = DeprecationState(state.upper())
    except ValueError:
        choices = ", ".join(s.value for s in DeprecationState if s is not DeprecationState.ACTIVE)
        raise RegistryError(f"unknown deprecation state {state!r}: use one of {choices}") from None
    if parsed is DeprecationState.ACTIVE:
        raise RegistryError(
            "un-deprecating (state ACTIVE) is not supported: Compute Engine documents it inconsistently; "
            "publish or promote a new image instead"
        )
    return parsed


def parse_timestamp(value: str) -> datetime.datetime:
    """An RFC 3339 timestamp (``Z`` or offset, any sub-second precision) as an aware datetime."""
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return parsed


def validate_name(value: str, what: str = "image name") -> str:
    """Return ``value`` if it is a valid Compute Engine image or family name, else ConfigError."""
    if not NAME_RE.fullmatch(value):
        raise ConfigError(
            f"invalid {what} {value!r}: use 1-63 lowercase letters, digits and hyphens, starting with a "
            "letter and not ending with a hyphen"
        )
    return value


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return ``labels`` as a dict if they satisfy Compute Engine's label rules, else ConfigError."""
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"too many image labels ({len(labels)}): at most {MAX_LABELS}")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise ConfigError(
                f"invalid label key {key!r}: lowercase letters, digits, '_' and '-', starting with a letter"
            )
        if not LABEL_VALUE_RE.fullmatch(value):
            raise ConfigError(
                f"invalid value {value!r} for label {key!r}: at most 63 lowercase letters, digits, '_' and '-'"
            )
    return dict(labels)


def newest_first(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Sorted by creation time, newest first (ties broken by name, for a stable order)."""
    return sorted(records, key=lambda r: (r.created, r.name), reverse=True)


def in_family(records: Iterable[ImageRecord], family: str) -> list[ImageRecord]:
    return newest_first(r for r in records if r.family == family)


def family_head(records: Iterable[ImageRecord], family: str) -> ImageRecord | None:
    """What ``images.getFromFamily`` returns: the newest ACTIVE image of ``family``, or None."""
    return next((r for r in in_family(records, family) if r.active), None)


def rollback_plan(records: Iterable[ImageRecord], family: str) -> tuple[ImageRecord, ImageRecord]:
    """(head to deprecate, image that becomes the head); RegistryError if that would empty the family."""
    active = [r for r in in_family(records, family) if r.active]
    if not active:
        raise RegistryError(f"cannot roll back family {family!r}: it has no ACTIVE image")
    if len(active) == 1:
        raise RegistryError(
            f"refusing to roll back family {family!r}: {active[0].name} is its only ACTIVE image, "
            "so the family would resolve to nothing; publish a fixed image instead"
        )
    return active[0], active[1]


#: Why retention keeps an image its keep/age rules would delete (``RetentionPlan.kept``).
KEPT_HEAD = "the family's head"
KEPT_ROLLBACK = "rollback's target (the ACTIVE image right behind the head)"


@dataclass(frozen=True)
class RetentionPlan:
    """What retention does to a family. ``delete``: newest first. ``kept``: the images the keep/age rules
    would delete but a protection keeps, with the reason (newest first). ``skipped``: those of them kept
    only because instance templates boot from them, with the template names."""

    delete: list[ImageRecord]
    kept: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.delete]


def retention_plan(
    records: Iterable[ImageRecord],
    family: str,
    keep: int,
    *,
    now: datetime.datetime,
    max_age_days: int | None = None,
    templates: Mapping[str, Sequence[str]] | None = None,
    incoming: str | None = None,
) -> RetentionPlan:
    """The one rule of retention (see the module docstring). An image of ``family`` is deleted if it is not
    one of the ``keep`` newest, or (with ``max_age_days``) was created more than ``max_age_days`` before
    ``now``; unless it is the head, rollback's target (the newest ACTIVE image after the head), or in
    ``templates`` (image name -> the instance templates that boot from it). ``incoming``: plan as if an
    image of that name had just been published into the family (created ``now``, ACTIVE)."""
    if keep < 1:
        raise ConfigError(f"retention keep={keep} is invalid: keep at least 1 image per family")
    if max_age_days is not None and max_age_days < 1:
        raise ConfigError(f"retention max_age_days={max_age_days} is invalid: use at least 1 day")
    members = list(records)
    if incoming is not None:
        members.append(ImageRecord(name=incoming, family=family, creation_timestamp=now.isoformat()))
    members = in_family(members, family)
    active = [r for r in members if r.active]
    guarded = dict(zip((r.name for r in active[:2]), (KEPT_HEAD, KEPT_ROLLBACK), strict=False))
    cutoff = now - datetime.timedelta(days=max_age_days) if max_age_days is not None else None
    users = templates or {}
    plan = RetentionPlan(delete=[])
    for index, record in enumerate(members):
        if index < keep and (cutoff is None or record.created >= cutoff):
            continue
        if record.name in guarded:
            plan.kept[record.name] = guarded[record.name]
        elif users.get(record.name):
            plan.skipped[record.name] = list(users[record.name])
            plan.kept[record.name] = f"instance templates boot from it ({', '.join(sorted(users[record.name]))})"
        else:
            plan.delete.append(record)
    return plan
