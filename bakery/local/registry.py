"""The local image registry: a directory with Compute Engine's image-family semantics (``ImageStore``).

Layout::

    <root>/images/<name>/disk.qcow2    the image (never modified after insert)
    <root>/images/<name>/image.json    the ImageRecord
    <root>/images/<name>/manifest.json its provenance manifest (bakery/provenance.py), if it has one
    <root>/.lock                       flock held by every mutation
    <root>/.tmp/                       staging; an insert or delete is one rename, so readers never
                                       see half an image, and leftovers of a killed process are swept

Retention is ``bakery.images.retention_plan``, the GCE store's rule (keep-N, ``max_age_days``, never the
head nor rollback's target), with nothing protected by instance templates here.
"""

from __future__ import annotations

import builtins
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bakery.errors import CorruptRecordError, ImageNotFoundError, RegistryError
from bakery.images import (
    DeprecationState,
    ImageRecord,
    RetentionPlan,
    family_head,
    in_family,
    newest_first,
    parse_state,
    parse_timestamp,
    retention_plan,
    rollback_plan,
    validate_labels,
    validate_name,
)
from bakery.local.files import file_lock, remove_tree, write_json_atomic

DISK_NAME = "disk.qcow2"
RECORD_NAME = "image.json"
MANIFEST_NAME = "manifest.json"
LOCK_TIMEOUT = 60.0


class LocalRegistry:
    """Images in a directory; see the module docstring. Reads need no lock (records change by rename)."""

    def __init__(self, root: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        self.images_dir = root / "images"
        self.tmp_dir = root / ".tmp"

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, name: str) -> ImageRecord:
        validate_name(name)
        path = self.images_dir / name / RECORD_NAME
        try:
            return _record_from_json(json.loads(path.read_text()), self.images_dir / name / DISK_NAME)
        except FileNotFoundError:
            raise ImageNotFoundError(f"image {name!r} not found in registry {self.root}") from None
        except OSError as exc:
            raise CorruptRecordError(
                f"image record {path} cannot be read ({exc.strerror}): make it a readable file, or remove the "
                f"directory {path.parent} to drop image {name!r} from the registry"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
            raise CorruptRecordError(
                f"image record {path} is unreadable ({detail}): restore it from a backup, or remove the directory "
                f"{path.parent} to drop image {name!r} from the registry"
            ) from None

    def list(self, family: str | None = None) -> builtins.list[ImageRecord]:
        if family is not None:
            validate_name(family, "family name")
        if not self.images_dir.is_dir():
            return []
        records = [self.get(p.parent.name) for p in self.images_dir.glob(f"*/{RECORD_NAME}")]
        return in_family(records, family) if family is not None else newest_first(records)

    def get_from_family(self, family: str) -> ImageRecord:
        head = family_head(self.list(family), family)
        if head is None:
            raise RegistryError(f"family {family!r} has no ACTIVE image in registry {self.root}")
        return head

    # --- mutations -----------------------------------------------------------------------------------

    def insert(
        self,
        name: str,
        family: str,
        source: str | os.PathLike[str],
        *,
        labels: Mapping[str, str] | None = None,
        description: str = "",
        manifest: str = "",
    ) -> ImageRecord:
        """Copy the qcow2 ``source`` in as image ``name`` of ``family`` (all or nothing); the ``manifest``
        file, if given, is stored with it."""
        validate_name(name)
        validate_name(family, "family name")
        checked_labels = validate_labels(labels or {})
        disk = Path(source)
        if not disk.is_file():
            raise RegistryError(f"cannot insert image {name!r}: disk {disk} does not exist")
        if manifest and not Path(manifest).is_file():
            raise RegistryError(f"cannot insert image {name!r}: manifest {manifest} does not exist")
        with self._locked():
            target = self.images_dir / name
            if target.exists():
                raise RegistryError(
                    f"image {name!r} already exists in registry {self.root}: image names are unique, "
                    "choose another name"
                )
            staging = Path(tempfile.mkdtemp(prefix=f"insert-{name}-", dir=self.tmp_dir))
            try:
                shutil.copyfile(disk, staging / DISK_NAME)
                if manifest:
                    shutil.copyfile(manifest, staging / MANIFEST_NAME)
                record = ImageRecord(
                    name=name,
                    family=family,
                    creation_timestamp=self._next_timestamp(),
                    labels=checked_labels,
                    description=description,
                    location=str(target / DISK_NAME),
                    manifest=str(target / MANIFEST_NAME) if manifest else "",
                )
                write_json_atomic(staging / RECORD_NAME, _record_to_json(record))
                self.images_dir.mkdir(parents=True, exist_ok=True)
                staging.rename(target)
            except BaseException:
                remove_tree(staging)
                raise
        return record

    def deprecate(self, name: str, state: str, *, replacement: str | None = None) -> ImageRecord:
        """Set the deprecation state (DEPRECATED, OBSOLETE or DELETED) and optional replacement image."""
        new_state = parse_state(state)
        with self._locked():
            return self._deprecate(name, new_state, replacement)

    def delete(self, name: str) -> None:
        with self._locked():
            self._delete(name)

    def rollback(self, family: str) -> tuple[ImageRecord, ImageRecord]:
        validate_name(family, "family name")
        with self._locked():
            old_head, new_head = rollback_plan(self.list(family), family)
            deprecated = self._deprecate(old_head.name, DeprecationState.DEPRECATED, new_head.name)
        return deprecated, new_head

    def plan_retention(
        self,
        family: str,
        keep: int,
        *,
        max_age_days: int | None = None,
        now: datetime.datetime | None = None,
        incoming: str | None = None,
    ) -> RetentionPlan:
        """``retention_plan`` of the family's images (``now``: default the current time). Changes nothing."""
        validate_name(family, "family name")
        return retention_plan(
            self.list(family),
            family,
            keep,
            now=now or datetime.datetime.now(datetime.UTC),
            max_age_days=max_age_days,
            incoming=incoming,
        )

    def retention(
        self, family: str, keep: int, *, max_age_days: int | None = None, now: datetime.datetime | None = None
    ) -> builtins.list[str]:
        """Delete what :meth:`plan_retention` plans (planned under the lock), nothing else."""
        validate_name(family, "family name")
        with self._locked():
            plan = self.plan_retention(family, keep, max_age_days=max_age_days, now=now)
            for record in plan.delete:
                self._delete(record.name)
        return plan.names

    def promote(self, name: str, family: str, *, new_name: str) -> ImageRecord:
        """Copy ACTIVE image ``name`` as ``new_name`` into ``family``, labelled ``promoted-from=name``."""
        source = self.get(name)
        if not source.active:
            raise RegistryError(f"refusing to promote image {name!r}: it is {source.state}")
        return self.insert(
            new_name,
            family,
            source.location,
            labels={**source.labels, "promoted-from": name},
            description=source.description,
            manifest=source.manifest,
        )

    # --- internals -----------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry lock; sweep staging leftovers of killed processes (no one else is inside)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / ".lock", timeout=self.lock_timeout, what=f"image registry {self.root}"):
            if self.tmp_dir.exists():
                for leftover in self.tmp_dir.iterdir():
                    remove_tree(leftover)
            self.tmp_dir.mkdir(exist_ok=True)
            yield

    def _deprecate(self, name: str, state: DeprecationState, replacement: str | None) -> ImageRecord:
        record = self.get(name)
        if replacement is not None:
            if replacement == name:
                raise RegistryError(f"image {name!r} cannot replace itself")
            self.get(replacement)
        updated = ImageRecord(
            name=record.name,
            family=record.family,
            creation_timestamp=record.creation_timestamp,
            state=state,
            replacement=replacement,
            labels=record.labels,
            description=record.description,
            location=record.location,
            manifest=record.manifest,
        )
        write_json_atomic(self.images_dir / name / RECORD_NAME, _record_to_json(updated))
        return updated

    def _delete(self, name: str) -> None:
        self.get(name)
        doomed = self.tmp_dir / f"delete-{name}"
        (self.images_dir / name).rename(doomed)  # gone for readers in one step
        remove_tree(doomed)

    def _next_timestamp(self) -> str:
        """Now (UTC, microseconds), but strictly after every existing image so the order is total."""
        now = datetime.datetime.now(datetime.UTC)
        newest = max((r.created for r in self.list()), default=None)
        if newest is not None and now <= newest:
            now = newest + datetime.timedelta(microseconds=1)
        return now.isoformat(timespec="microseconds")


def _record_to_json(record: ImageRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "family": record.family,
        "creation_timestamp": record.creation_timestamp,
        "state": record.state.value,
        "replacement": record.replacement,
        "labels": dict(record.labels),
        "description": record.description,
        "disk": DISK_NAME,
        "manifest": record.manifest,
    }


def _record_from_json(data: dict[str, Any], disk: Path) -> ImageRecord:
    parse_timestamp(data["creation_timestamp"])
    return ImageRecord(
        name=data["name"],
        family=data["family"],
        creation_timestamp=data["creation_timestamp"],
        state=DeprecationState(data["state"]),
        replacement=data.get("replacement"),
        labels=dict(data.get("labels", {})),
        description=data.get("description", ""),
        location=str(disk),
        manifest=data.get("manifest", ""),
    )
