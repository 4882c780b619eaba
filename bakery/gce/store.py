"""Compute Engine images as an ``ImageStore`` (bakery/images.py): the same family rules as the local registry.

Choices:

* The manifest name goes into the image description, after a final line ``bakery-manifest: NAME`` (label
  values cannot hold a path); :func:`to_record` splits it off again.
* Every mutation goes through :meth:`GceImageStore._mutate`. With ``dry_run=`` set, it reports the exact
  call (``images.deprecate project=P image=X body={...}``) instead of making it.
* Races. A family's head is whatever ``images.getFromFamily`` says: the newest ACTIVE image. Promotion only
  inserts (it never deprecates the old head), so two promotions racing for one family both succeed in
  creating their image, the newer one is the single head, and nothing is deprecated by mistake; the loser
  re-checks the head after its insert and raises, naming the winner. Rollback re-reads the head just
  before deprecating it and refuses if another promotion changed it in between.
* Retention is ``bakery.images.retention_plan`` (the same rule as the local registry's), given the images
  instance templates name as their boot source: never the head, never the ACTIVE image right behind it
  (rollback's target), never a template's image; with ``max_age_days`` also images older than that.
  :meth:`GceImageStore.retention` deletes exactly what :meth:`GceImageStore.plan_retention` plans.
* :meth:`GceImageStore.publish` (the GCE pipeline's publish step) is a promotion that then deprecates the
  family's older ACTIVE images, except the ``keep_active`` newest (default 2: the new head and the
  previous one, which ``rollback`` needs: un-deprecating is never relied upon). It deprecates only after
  re-checking that the new image is the head, so a lost race deprecates nothing.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery.errors import ImageNotFoundError, RegistryError
from bakery.gce import consumers
from bakery.gce.client import ComputeApiError, ComputeClients, ComputeNotFound
from bakery.images import (
    DeprecationState,
    ImageRecord,
    RetentionPlan,
    in_family,
    newest_first,
    parse_state,
    retention_plan,
    rollback_plan,
    validate_labels,
    validate_name,
)

MANIFEST_MARKER = "\nbakery-manifest: "
PAGE_SIZE = 500


class GceImageStore:
    """The images of one project. ``dry_run``: a callable that receives each mutation instead of it running."""

    def __init__(
        self,
        clients: ComputeClients,
        *,
        dry_run: Callable[[str], None] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.clients = clients
        self.project = clients.project
        self.dry_run = dry_run
        self.page_size = page_size

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, name: str) -> ImageRecord:
        validate_name(name)
        request = compute_v1.GetImageRequest(project=self.project, image=name)
        try:
            return to_record(self.clients.call(f"image {name!r}", self.clients.images.get, request))
        except ComputeNotFound as exc:
            raise ImageNotFoundError(str(exc)) from None

    def list(self, family: str | None = None) -> builtins.list[ImageRecord]:
        request = compute_v1.ListImagesRequest(project=self.project, max_results=self.page_size)
        if family is not None:
            validate_name(family, "family name")
            request.filter = f'family = "{family}"'
        images = self.clients.list_all("the image list", self.clients.images.list, request)
        records = [to_record(image) for image in images]
        return in_family(records, family) if family is not None else newest_first(records)

    def get_from_family(self, family: str) -> ImageRecord:
        validate_name(family, "family name")
        request = compute_v1.GetFromFamilyImageRequest(project=self.project, family=family)
        image = self.clients.call(f"an ACTIVE image of family {family!r}", self.clients.images.get_from_family, request)
        return to_record(image)

    # --- mutations -----------------------------------------------------------------------------------

    def insert(
        self,
        name: str,
        family: str,
        source: str,
        *,
        labels: Mapping[str, str],
        description: str,
        manifest: str = "",
        guest_os_features: Sequence[str] = (),
        storage_locations: Sequence[str] = (),
    ) -> ImageRecord:
        """Copy source image ``source`` (a name in this project, or a selfLink) as ``name`` into ``family``.

        ``guest_os_features`` and ``storage_locations`` are set explicitly: whether a copy inherits them from
        its source is documented nowhere (the Image schema in Compute v1's discovery document does not say),
        so publish and promote pass the tested candidate's own values."""
        validate_name(name)
        validate_name(family, "family name")
        image = compute_v1.Image(
            name=name,
            family=family,
            source_image=source if "/" in source else self._link(validate_name(source)),
            labels=validate_labels(labels),
            description=description + (MANIFEST_MARKER + manifest if manifest else ""),
            guest_os_features=[compute_v1.GuestOsFeature(type_=feature) for feature in guest_os_features],
            storage_locations=list(storage_locations),
        )
        request = compute_v1.InsertImageRequest(project=self.project, image_resource=image)
        if self._mutate("images.insert", self.clients.images.insert_unary, request, f"image {name!r}"):
            return self._after(f"created image {name}", lambda: self.get(name))
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        return dataclasses.replace(to_record(image), creation_timestamp=now, location=self._link(name))

    def deprecate(self, name: str, state: str, *, replacement: str | None = None) -> ImageRecord:
        """Set DEPRECATED, OBSOLETE or DELETED, with image ``replacement`` (a name) as the successor."""
        new_state = parse_state(state)
        if replacement == name:
            raise RegistryError(f"image {name!r} cannot replace itself")
        status = compute_v1.DeprecationStatus(state=new_state.value)
        if replacement is not None:
            # A dry run may name an image it only pretended to create.
            link = self._link(validate_name(replacement)) if self.dry_run else self.get(replacement).location
            status.replacement = link
        request = compute_v1.DeprecateImageRequest(
            project=self.project, image=validate_name(name), deprecation_status_resource=status
        )
        if self._mutate("images.deprecate", self.clients.images.deprecate_unary, request, f"image {name!r}"):
            return self._after(f"set image {name} {new_state}", lambda: self.get(name))
        return dataclasses.replace(self.get(name), state=new_state, replacement=replacement)

    def delete(self, name: str) -> None:
        request = compute_v1.DeleteImageRequest(project=self.project, image=validate_name(name))
        self._mutate("images.delete", self.clients.images.delete_unary, request, f"image {name!r}")

    def rollback(self, family: str) -> tuple[ImageRecord, ImageRecord]:
        """Deprecate the head (replacement: the next ACTIVE image), if it is still the head right before."""
        validate_name(family, "family name")
        old_head, new_head = rollback_plan(self.list(family), family)
        current = self.get_from_family(family)
        if current.name != old_head.name:
            raise RegistryError(
                f"family {family!r} changed during rollback: its head is now {current.name}, not "
                f"{old_head.name}; nothing was deprecated, check the family and retry"
            )
        deprecated = self.deprecate(old_head.name, DeprecationState.DEPRECATED, replacement=new_head.name)
        return deprecated, new_head

    def set_labels(self, name: str, labels: Mapping[str, str]) -> None:
        """Replace image ``name``'s labels (sent with its current label fingerprint; a 412 is accepted if the
        labels are already what was asked, i.e. an earlier attempt of this call went through)."""
        image = self.clients.call(
            f"image {name!r}", self.clients.images.get, compute_v1.GetImageRequest(project=self.project, image=name)
        )
        request = compute_v1.SetLabelsImageRequest(
            project=self.project,
            resource=validate_name(name),
            global_set_labels_request_resource=compute_v1.GlobalSetLabelsRequest(
                labels=validate_labels(labels), label_fingerprint=image.label_fingerprint
            ),
        )
        try:
            self._mutate("images.setLabels", self.clients.images.set_labels_unary, request, f"image {name!r}")
        except ComputeApiError as exc:
            # setLabels has no requestId: a retry after a timed-out but applied call meets a new fingerprint.
            if not isinstance(exc.__cause__, api_exceptions.PreconditionFailed) or self.get(name).labels != dict(
                labels
            ):
                raise

    def plan_retention(
        self,
        family: str,
        keep: int,
        *,
        max_age_days: int | None = None,
        now: datetime.datetime | None = None,
        incoming: str | None = None,
    ) -> RetentionPlan:
        """``retention_plan`` of the family's images, protecting those instance templates boot from
        (``max_age_days``: none when not given; ``now``: default the current time). Changes nothing."""
        validate_name(family, "family name")
        return retention_plan(
            self.list(family),
            family,
            keep,
            now=now or datetime.datetime.now(datetime.UTC),
            max_age_days=max_age_days,
            templates=self.template_users(),
            incoming=incoming,
        )

    def retention(
        self, family: str, keep: int, *, max_age_days: int | None = None, now: datetime.datetime | None = None
    ) -> builtins.list[str]:
        """Delete what :meth:`plan_retention` plans, nothing else (a dry run reports the deletes)."""
        plan = self.plan_retention(family, keep, max_age_days=max_age_days, now=now)
        for record in plan.delete:
            self.delete(record.name)
        return plan.names

    def promote(self, name: str, family: str, *, new_name: str) -> ImageRecord:
        """Copy ACTIVE image ``name`` as ``new_name`` into ``family`` (labels + ``promoted-from``), then
        check that it is the family's head (see the module docstring on races)."""
        source = self.get(name)
        if not source.active:
            raise RegistryError(f"refusing to promote image {name!r}: it is {source.state}")
        promoted = self.insert(
            new_name,
            family,
            source.location,
            labels={**source.labels, "promoted-from": name},
            description=source.description,
            manifest=source.manifest,
            guest_os_features=source.guest_os_features,
            storage_locations=source.storage_locations,
        )
        if self.dry_run is None:
            head = self._after(f"created image {new_name}", lambda: self.get_from_family(family))
            if head.name != new_name:
                raise RegistryError(
                    f"promoted {name} as {new_name}, but family {family!r} resolves to {head.name}: a concurrent "
                    f"promotion created a newer image; nothing was deprecated, {new_name} stays ACTIVE"
                )
        return promoted

    def publish(
        self,
        source: str,
        family: str,
        *,
        new_name: str,
        labels: Mapping[str, str],
        description: str,
        manifest: str = "",
        keep_active: int = 2,
    ) -> ImageRecord:
        """Copy ACTIVE image ``source`` as ``new_name`` into ``family`` with exactly ``labels``; once it is
        the head, deprecate the family's older ACTIVE images beyond the ``keep_active`` newest (replacement:
        the new image). A dry run reports the insert and the deprecations it would make."""
        if keep_active < 1:
            raise RegistryError(f"keep_active={keep_active} is invalid: the new head stays ACTIVE")
        record = self.get(source)
        if not record.active:
            raise RegistryError(f"refusing to publish image {source!r}: it is {record.state}")
        before = [r for r in self.list(family) if r.active]
        published = self.insert(
            new_name,
            family,
            record.location,
            labels=labels,
            description=description,
            manifest=manifest,
            guest_os_features=record.guest_os_features,
            storage_locations=record.storage_locations,
        )
        if self.dry_run is None:
            head = self._after(f"created image {new_name}", lambda: self.get_from_family(family))
            if head.name != new_name:
                raise RegistryError(
                    f"published {source} as {new_name}, but family {family!r} resolves to {head.name}: a concurrent "
                    f"publish created a newer image; nothing was deprecated, {new_name} stays ACTIVE"
                )
            active = [r for r in self.list(family) if r.active and r.name != new_name]
        else:
            active = before
        for older in active[keep_active - 1 :]:
            self.deprecate(older.name, DeprecationState.DEPRECATED, replacement=new_name)
        return published

    # --- helpers -------------------------------------------------------------------------------------

    def template_users(self) -> dict[str, builtins.list[str]]:
        """Image name -> names of the instance templates (global and regional) whose disks are created from
        it (templates that follow a family name no image and protect nothing here)."""
        users: dict[str, builtins.list[str]] = {}
        for _scope, template in consumers.templates(self.clients):
            for ref in consumers.boot_images(template, self.project):
                if ref.image and ref.project == self.project:
                    users.setdefault(ref.image, []).append(template.name)
        return users

    def _mutate(self, api: str, method: Callable[..., compute_v1.Operation], request: Any, what: str) -> bool:
        """The one choke point of every mutation: run it (True) or, in a dry run, report it (False)."""
        if self.dry_run is not None:
            self.dry_run(describe_call(api, request))
            return False
        self.clients.mutate(what, method, request)
        return True

    @staticmethod
    def _after(done: str, read: Callable[[], ImageRecord]) -> ImageRecord:
        """A read after a mutation: if it fails, say that the mutation did happen."""
        try:
            return read()
        except RegistryError as exc:
            raise RegistryError(f"{done}, but reading it back failed: {exc}") from exc

    def _link(self, name: str) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/images/{name}"


def describe_call(api: str, request: Any) -> str:
    """``images.deprecate project=P image=X body={...}``: the API method, its parameters and JSON body."""
    params: list[tuple[str, str]] = []
    body = ""
    for descriptor, value in type(request).pb(request).ListFields():
        if descriptor.message_type is not None:
            message = getattr(request, descriptor.name)
            fields = json.loads(type(message).to_json(message, always_print_fields_with_no_presence=False))
            body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        else:
            params.append((descriptor.json_name, str(value)))
    params.sort(key=lambda item: (item[0] != "project", item[0]))
    words = [api, *(f"{key}={value}" for key, value in params)]
    return " ".join([*words, f"body={body}"] if body else words)


def to_record(image: compute_v1.Image) -> ImageRecord:
    """An API Image as an ImageRecord (state from ``deprecated.state``, default ACTIVE)."""
    description, manifest = image.description, ""
    if MANIFEST_MARKER in description:
        description, _, manifest = description.rpartition(MANIFEST_MARKER)
    replacement = image.deprecated.replacement
    return ImageRecord(
        name=image.name,
        family=image.family,
        creation_timestamp=image.creation_timestamp,
        state=DeprecationState(image.deprecated.state) if image.deprecated.state else DeprecationState.ACTIVE,
        replacement=replacement.rsplit("/", 1)[-1] if replacement else None,
        labels=dict(image.labels),
        description=description,
        location=image.self_link,
        manifest=manifest,
        guest_os_features=tuple(feature.type_ for feature in image.guest_os_features),
        storage_locations=tuple(image.storage_locations),
    )
