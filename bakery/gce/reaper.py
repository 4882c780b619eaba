"""Find and delete what killed runs left behind: builder and test instances, their disks, and candidate
images, once past their ``bakery-expires`` label (unix seconds).

Plan, then act: :func:`plan_reap` only reads (aggregatedList with a ``labels.bakery-role`` equality
filter for instances and disks, the candidate families' image lists); :func:`reap` deletes in the plan's
order (instances first, so a disk they still hold is free by the time its turn comes) or, with
``dry_run``, prints each exact call instead.

Rules: an instance or disk is reaped only if it carries ``bakery-run-id`` and an expired ``bakery-expires``
(a missing or malformed expiry is never guessed). A disk still attached to an instance that is not being
reaped is left alone. A candidate image is reaped when its ``bakery-expires`` has passed or, lacking that
label (e.g. a run killed between Packer's image and the test stage), when it is older than
``candidate_ttl``. Only images of the given candidate families are considered.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery.config import BuildSpec
from bakery.errors import ConfigError
from bakery.gce.client import ComputeApiError, ComputeClients, resolve_endpoint
from bakery.gce.store import GceImageStore, describe_call

ROLES = ("builder", "test")
CANDIDATE_TTL = datetime.timedelta(hours=24)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Doomed:
    """One resource to delete: ``kind`` instance, disk or image; ``zone`` is '' for images."""

    kind: str
    name: str
    zone: str
    reason: str

    def describe(self) -> str:
        where = f" in {self.zone}" if self.zone else ""
        return f"{self.kind} {self.name}{where}: {self.reason}"


def expiry(labels: Mapping[str, str]) -> int | None:
    """The ``bakery-expires`` label as unix seconds, or None if absent or not a number."""
    value = labels.get("bakery-expires", "")
    return int(value) if value.isdigit() else None


def expired(labels: Mapping[str, str], now: datetime.datetime) -> str | None:
    """Why a labelled run resource is due (``expired at ...``), or None if it is not (or not ours)."""
    if "bakery-run-id" not in labels:
        return None
    when = expiry(labels)
    if when is None or when >= now.timestamp():
        return None
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return f"run {labels['bakery-run-id']} expired at {stamp:%Y-%m-%d %H:%M:%S} UTC"


def plan_reap(
    clients: ComputeClients,
    candidate_families: list[str],
    *,
    now: datetime.datetime,
    candidate_ttl: datetime.timedelta = CANDIDATE_TTL,
) -> list[Doomed]:
    """Everything :func:`reap` would delete, instances first, then disks, then images."""
    doomed_instances: list[Doomed] = []
    links: set[str] = set()
    auto_deleted: set[str] = set()  # disks that go with their (doomed) instance
    for zone, instance in _labelled(clients, "instances", clients.instances.aggregated_list):
        reason = expired(instance.labels, now)
        if reason:
            role = instance.labels["bakery-role"]
            doomed_instances.append(Doomed("instance", instance.name, zone, f"{role} {reason}"))
            links.add(instance.self_link)
            auto_deleted |= {d.source for d in instance.disks if d.auto_delete}
    doomed_disks: list[Doomed] = []
    for zone, disk in _labelled(clients, "disks", clients.disks.aggregated_list):
        reason = expired(disk.labels, now)
        if reason and set(disk.users) <= links and disk.self_link not in auto_deleted:
            doomed_disks.append(Doomed("disk", disk.name, zone, reason))
    doomed_images: list[Doomed] = []
    store = GceImageStore(clients)
    for family in candidate_families:
        for image in store.list(family):
            reason = expired(image.labels, now)
            if reason is None and expiry(image.labels) is None and now - image.created > candidate_ttl:
                reason = f"no expiry label and older than {candidate_ttl.total_seconds() / 3600:g} h"
            if reason:
                failed = " (failed its tests)" if image.labels.get("bakery-failed") == "true" else ""
                doomed_images.append(Doomed("image", image.name, "", f"candidate{failed} {reason}"))
    return doomed_instances + doomed_disks + doomed_images


def _labelled(clients: ComputeClients, kind: str, method: Callable[..., Any]) -> list[tuple[str, Any]]:
    """Instances or disks in every zone of the project labelled with one of our roles."""
    found: list[tuple[str, Any]] = []
    for role in ROLES:
        request_type = (
            compute_v1.AggregatedListInstancesRequest if kind == "instances" else compute_v1.AggregatedListDisksRequest
        )
        request = request_type(project=clients.project, filter=f'labels.bakery-role = "{role}"', max_results=500)
        scoped = clients.aggregated_all(f"the {kind} list", method, request, kind)
        found.extend((scope.rsplit("/", 1)[-1], item) for scope, item in scoped)
    return found


def reap(clients: ComputeClients, plan: list[Doomed], say: Say, *, dry_run: Say | None = None) -> list[Doomed]:
    """Delete what ``plan`` lists, in order; with ``dry_run``, report each call instead. A resource that is
    already gone counts as done. Returns what was deleted (or would be)."""
    done: list[Doomed] = []
    for item in plan:
        api, method, request = _delete_call(clients, item)
        if dry_run is not None:
            dry_run(describe_call(api, request))
            done.append(item)
            continue
        try:
            clients.mutate(f"{item.kind} {item.name!r}", method, request)
        except ComputeApiError as exc:
            if not isinstance(exc.__cause__, api_exceptions.NotFound):
                raise
            say(f"already gone: {item.describe()}")
            continue
        say(f"deleted {item.describe()}")
        done.append(item)
    return done


def _delete_call(clients: ComputeClients, item: Doomed) -> tuple[str, Callable[..., compute_v1.Operation], Any]:
    project = clients.project
    if item.kind == "instance":
        request: Any = compute_v1.DeleteInstanceRequest(project=project, zone=item.zone, instance=item.name)
        return "instances.delete", clients.instances.delete_unary, request
    if item.kind == "disk":
        request = compute_v1.DeleteDiskRequest(project=project, zone=item.zone, disk=item.name)
        return "disks.delete", clients.disks.delete_unary, request
    return "images.delete", clients.images.delete_unary, compute_v1.DeleteImageRequest(project=project, image=item.name)


def reap_environment(
    specs: list[BuildSpec],
    say: Say,
    *,
    dry_run: bool = False,
    clients: ComputeClients | None = None,
    now: datetime.datetime | None = None,
) -> list[Doomed]:
    """``invoke reap``: plan and reap one GCE environment (its project; every variant's candidate family)."""
    if not specs or specs[0].env.target != "gce" or specs[0].env.gce is None:
        name = specs[0].env_name if specs else "?"
        raise ConfigError(f"environment {name!r} is not a gce environment: there is nothing to reap locally")
    gce = specs[0].env.gce
    clients = clients or ComputeClients.create(gce.project, gce.zone, endpoint=resolve_endpoint(gce.api_endpoint))
    families = sorted({spec.candidate_family for spec in specs})
    plan = plan_reap(clients, families, now=now or datetime.datetime.now(datetime.UTC))
    say(f"reap project {gce.project} (candidate families {', '.join(families)}): {len(plan)} to delete")
    for item in plan:
        say(f"  {item.describe()}")
    printer = (lambda call: say(f"dry run, would call: {call}")) if dry_run else None
    return reap(clients, plan, say, dry_run=printer)
