"""Images and image families, the same for every target: the record, the store interface, the rules.

The rules follow Compute Engine: a family's head is its newest image (by creation time) that is not
DEPRECATED, OBSOLETE or DELETED; rollback deprecates the head; un-deprecating is not relied upon, so a
store refuses a rollback that would leave the family without an ACTIVE image. The pure functions here
plan; a store (local registry, GCE) carries the plan out.
"""

from __future__ import annotations

import builtins
import datetime
import re
from collections.abc import Iterable, Mapping
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

    def retention(self, family: str, keep: int) -> builtins.list[str]:
        """Delete all but the ``keep`` newest images of ``family`` (never its head); return the names."""
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


def retention_plan(records: Iterable[ImageRecord], family: str, keep: int) -> list[ImageRecord]:
    """Images of ``family`` to delete so that the ``keep`` newest remain, plus the head whatever its age."""
    if keep < 1:
        raise ConfigError(f"retention keep={keep} is invalid: keep at least 1 image per family")
    members = in_family(records, family)
    head = family_head(members, family)
    kept = {r.name for r in members[:keep]} | ({head.name} if head else set())
    return [r for r in members if r.name not in kept]
