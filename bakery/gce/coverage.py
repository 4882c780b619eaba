"""Fleet coverage (``invoke coverage``): which VMs of an environment's projects boot from the environment's
image families, and which do not.

Reading and deciding are apart: :func:`read_fleet` makes the API calls and returns a :class:`Fleet`;
:func:`classify` (pure) turns it into a :class:`Report`. Every VM is exactly one of

* ``exempt``: its labels match an exempt rule (checked first; its image is not read);
* ``unknown``: its boot image cannot be told or read (deleted, no permission, a snapshot or blank disk);
* ``current``: booted from the head of one of the environment's families (in the environment's project);
* ``stale``: booted from another image of one of those families (age and state shown; DEPRECATED, OBSOLETE
  or DELETED images and images older than ``max_age_days`` are called out);
* ``uncovered``: booted from any other image.

``coverage_pct`` = (current + stale) / (total − exempt) × 100, one decimal (100.0 when nothing is left to cover).

API facts (Compute v1 discovery document, revision 20261106, as shipped in google-api-python-client 2.202.0
``googleapiclient/discovery_cache/documents/compute.v1.json``): ``AttachedDisk.initializeParams`` is
"[Input Only]", so an instance does not say which image its boot disk came from; ``Disk.sourceImage`` does
("If the source image is deleted, this field will not be set"; ``Disk.sourceImageId`` stays). So each
project costs one ``instances.aggregatedList`` and one ``disks.aggregatedList`` (paged), joined on the boot
disk's URL; then one ``images.get`` per distinct image (of any project) and one ``images.getFromFamily`` per
family. The number of calls follows pages, distinct images and families, never the number of VMs.

A VM made by a managed instance group carries the metadata items ``instance-template`` and ``created-by``
(values like ``projects/NUMBER/global/instanceTemplates/NAME`` and
``projects/NUMBER/regions/R/instanceGroupManagers/NAME``). Source: ``gcloud compute instances describe``
output of a regional MIG's VM in a public repository; not found in Google's reference documentation, so not
verified there. A ``created-by`` that is not a MIG (another creator) names no MIG.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery.config import ANY_VALUE, PROJECT_ID_RE, Settings
from bakery.errors import BakeryError, ConfigError
from bakery.gce.client import ComputeApiError, ComputeClients, resolve_endpoint
from bakery.gce.consumers import parse_image_ref

Status = Literal["current", "stale", "uncovered", "exempt", "unknown"]
#: Output order: what needs fixing first.
ORDER: tuple[Status, ...] = ("uncovered", "stale", "unknown", "current", "exempt")
FORMATS = ("text", "json", "md")
PAGE_SIZE = 500
DAY = datetime.timedelta(days=1)
TEMPLATE_KEY = "instance-template"
CREATED_BY_KEY = "created-by"

#: Exempt rules every environment gets unless ``coverage.builtin_exempt`` is false: VMs that never boot from
#: the fleet's images. Label keys as Google sets them:
BUILTIN_EXEMPT: dict[str, dict[str, str]] = {
    # GKE nodes: "VMs created by GKE ... are labeled goog-gke-node" (CIS Google Cloud Platform Foundation
    # Benchmark, "Exception" of its Compute Engine recommendations, read in a public copy; not in Google's docs).
    "gke-node": {"goog-gke-node": ANY_VALUE},
    # Dataproc cluster VMs: goog-dataproc-cluster-name is one of the "automatically applied labels" (Dataproc
    # guide "Create and manage labels", docs.cloud.google.com/dataproc/docs/guides/creating-managing-labels,
    # read in an indexed copy; terraform-provider-google's google_dataproc_cluster docs: "GCP generates some
    # itself including goog-dataproc-cluster-name").
    "dataproc": {"goog-dataproc-cluster-name": ANY_VALUE},
    # bakery's own builder and test VMs (render.py builder_labels, gce/target.py): transient, booted from a
    # candidate or a public image by design.
    "bakery-build": {"bakery-role": ANY_VALUE},
}

N = TypeVar("N", int, float)
_SCOPED = re.compile(r"projects/[^/]+/(?P<rest>(?:global|regions/[^/]+|zones/[^/]+)/(?P<kind>[A-Za-z]+)/[^/]+)$")


class CoverageBelow(BakeryError):
    """``--fail-under`` was given and coverage is below it (or could not be established)."""


@dataclass(frozen=True)
class Rule:
    """An exempt rule: every label in ``labels`` must match (``*``: present with any value)."""

    name: str
    labels: tuple[tuple[str, str], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(k in labels and (v == ANY_VALUE or labels[k] == v) for k, v in self.labels)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels)


@dataclass(frozen=True)
class Scope:
    """What one coverage run looks at: the environment's families (in ``home_project``), the projects whose
    VMs are counted, the exempt rules and the age limit."""

    env: str
    home_project: str
    families: tuple[str, ...]
    projects: tuple[str, ...]
    rules: tuple[Rule, ...]
    max_age_days: int

    def exempt_by(self, labels: Mapping[str, str]) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(labels)), None)


@dataclass(frozen=True)
class Vm:
    """One instance as read: where it is, its labels, the template/MIG that made it and its boot image
    (``(project, name)``), or why no image is known (``no_image``)."""

    project: str
    zone: str
    name: str
    labels: Mapping[str, str]
    template: str
    mig: str
    image: tuple[str, str] | None
    no_image: str = ""


@dataclass(frozen=True)
class Image:
    """A boot image as read: its family, creation time and deprecation state (ACTIVE if none)."""

    project: str
    name: str
    family: str
    created: datetime.datetime
    state: str


@dataclass(frozen=True)
class Fleet:
    """Everything :func:`classify` needs. ``images``: image or why it could not be read; ``heads``: family →
    head image name (absent: the family has no ACTIVE image); ``errors``: projects not counted, one line each."""

    projects: tuple[str, ...]
    vms: tuple[Vm, ...]
    images: Mapping[tuple[str, str], Image | str]
    heads: Mapping[str, str]
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One VM's verdict (the JSON ``instances`` item)."""

    project: str
    zone: str
    name: str
    status: Status
    image: str
    family: str
    image_age_days: int | None
    template: str
    mig: str
    reason: str


@dataclass(frozen=True)
class Report:
    """The verdicts, in :data:`ORDER`, then by project, zone and name."""

    scope: Scope
    projects: tuple[str, ...]
    instances: tuple[Entry, ...]
    errors: tuple[str, ...] = ()

    def count(self, status: Status) -> int:
        return sum(entry.status == status for entry in self.instances)

    @property
    def coverage_pct(self) -> float:
        counted = len(self.instances) - self.count("exempt")
        if counted == 0:
            return 100.0
        return round((self.count("current") + self.count("stale")) / counted * 100, 1)

    def to_dict(self) -> dict[str, Any]:
        """The ``--format json`` document."""
        return {
            "env": self.scope.env,
            "projects": list(self.projects),
            "total": len(self.instances),
            **{status: self.count(status) for status in ("current", "stale", "uncovered", "exempt", "unknown")},
            "coverage_pct": self.coverage_pct,
            "instances": [dataclasses.asdict(entry) for entry in self.instances],
        }

    def summary(self) -> str:
        """One line: the percentage, the counts, the families and the projects."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in ORDER)
        families = ", ".join(self.scope.families)
        return (
            f"coverage {self.scope.env}: {self.coverage_pct:.1f}% of {len(self.instances)} VMs "
            f"({self.count('exempt')} exempt) boot from {families} of {self.scope.home_project}: {counts}; "
            f"projects {', '.join(self.projects) or 'none'}"
        )


# --- deciding (pure) ---------------------------------------------------------------------------------


def classify(fleet: Fleet, scope: Scope, now: datetime.datetime) -> Report:
    """Every VM of ``fleet`` → one :class:`Entry` (see the module docstring for the classes)."""
    entries = [_verdict(vm, fleet, scope, now) for vm in fleet.vms]
    entries.sort(key=lambda e: (ORDER.index(e.status), e.project, e.zone, e.name))
    return Report(scope, fleet.projects, tuple(entries), fleet.errors)


def _verdict(vm: Vm, fleet: Fleet, scope: Scope, now: datetime.datetime) -> Entry:
    shown = f"{vm.image[0]}/{vm.image[1]}" if vm.image else ""

    def entry(status: Status, reason: str, image: Image | None = None) -> Entry:
        age = (now - image.created) // DAY if image else None
        family = image.family if image else ""
        return Entry(vm.project, vm.zone, vm.name, status, shown, family, age, vm.template, vm.mig, reason)

    rule = scope.exempt_by(vm.labels)
    if rule is not None:
        return entry("exempt", f"exempt by rule {rule.name} ({rule.describe()})")
    if vm.image is None:
        return entry("unknown", vm.no_image)
    image = fleet.images.get(vm.image, f"boot image {shown} was not read")
    if isinstance(image, str):
        return entry("unknown", image)
    if image.project != scope.home_project or image.family not in scope.families:
        where = f"family {image.family} of {image.project}" if image.family else f"{image.project}, in no family"
        return entry("uncovered", f"{where}, not one of the {scope.env} families", image)
    head = fleet.heads.get(image.family)
    if head == image.name:
        return entry("current", "", image)
    age = (now - image.created) // DAY
    reason = f"not the head of {image.family} (head: {head})" if head else f"{image.family} has no ACTIVE head"
    reason = f"{reason}; {age} days old"
    if age > scope.max_age_days:
        reason += f", OLDER THAN {scope.max_age_days} DAYS"
    if image.state != "ACTIVE":
        reason += f"; image is {image.state}"
    return entry("stale", reason, image)


# --- reading (API) -----------------------------------------------------------------------------------


def read_fleet(clients: ComputeClients, scope: Scope, *, page_size: int = PAGE_SIZE) -> Fleet:
    """The heads of the families, every VM of the scope's projects with its boot disk's image, and each
    distinct image that a non-exempt VM boots from. A project that cannot be listed is left out with one
    line in ``errors``; if none can be, ComputeApiError."""
    home = dataclasses.replace(clients, project=scope.home_project)
    heads: dict[str, str] = {}
    for family in scope.families:
        request = compute_v1.GetFromFamilyImageRequest(project=scope.home_project, family=family)
        try:
            heads[family] = home.call(f"the head of family {family!r}", home.images.get_from_family, request).name
        except ComputeApiError as exc:
            if not isinstance(exc.__cause__, api_exceptions.NotFound):
                raise
    vms: list[Vm] = []
    read: list[str] = []
    errors: list[str] = []
    for project in scope.projects:
        try:
            vms.extend(_project_vms(dataclasses.replace(clients, project=project), page_size))
        except ComputeApiError as exc:
            errors.append(f"project {project} not counted: {exc}")
            continue
        read.append(project)
    if not read:
        raise ComputeApiError("coverage: no project could be read: " + "; ".join(errors))
    wanted = sorted({vm.image for vm in vms if vm.image is not None and scope.exempt_by(vm.labels) is None})
    images = {key: _read_image(clients, key) for key in wanted}
    return Fleet(tuple(read), tuple(vms), images, heads, tuple(errors))


def _project_vms(clients: ComputeClients, page_size: int) -> list[Vm]:
    """Every VM of the project with its boot image: both aggregated lists, joined on the boot disk's URL.
    Pages are read as raw protobuf messages (``Message.pb``): proto-plus wrapping of 10,000 instances
    would cost seconds, and only a few fields are needed."""
    project = clients.project
    request: Any = compute_v1.AggregatedListInstancesRequest(project=project, max_results=page_size)
    method = clients.instances.aggregated_list
    instances = clients.aggregated_all("the instance list", method, request, "instances", raw=True)
    disks: dict[str, _BootSource] = {}
    request = compute_v1.AggregatedListDisksRequest(project=project, max_results=page_size)
    for _, disk in clients.aggregated_all("the disk list", clients.disks.aggregated_list, request, "disks", raw=True):
        disks[_path(disk.self_link)] = _BootSource(
            disk.name, disk.source_image, disk.source_image_id, disk.source_snapshot
        )
    return [_vm(project, scope.rsplit("/", 1)[-1], instance, disks) for scope, instance in instances]


class _BootSource(NamedTuple):
    """What a disk says about where it came from."""

    name: str
    source_image: str
    source_image_id: str
    source_snapshot: str


def _vm(project: str, zone: str, instance: Any, disks: Mapping[str, _BootSource]) -> Vm:
    """One VM from a raw ``Instance`` message and the project's disks."""
    metadata = {item.key: item.value for item in instance.metadata.items}
    template = _scoped(metadata.get(TEMPLATE_KEY, ""), "instanceTemplates")
    mig = _scoped(metadata.get(CREATED_BY_KEY, ""), "instanceGroupManagers")
    image: tuple[str, str] | None = None
    boot = next((d for d in instance.disks if d.boot), None)
    disk = disks.get(_path(boot.source)) if boot is not None else None
    if boot is None:
        why = "the instance has no boot disk"
    elif disk is None:
        why = f"boot disk {_path(boot.source)} is not in the disk list"
    elif disk.source_image:
        ref = parse_image_ref(disk.source_image, project)
        image = (ref.project, ref.image) if ref is not None and ref.image else None
        why = "" if image else f"boot disk {disk.name} names no image: {disk.source_image}"
    elif disk.source_image_id:
        why = f"boot disk {disk.name} was created from image id {disk.source_image_id}, which has been deleted"
    elif disk.source_snapshot:
        why = f"boot disk {disk.name} was created from snapshot {disk.source_snapshot.rsplit('/', 1)[-1]}"
    else:
        why = f"boot disk {disk.name} was not created from an image"
    return Vm(project, zone, instance.name, dict(instance.labels), template, mig, image, why)


def _read_image(clients: ComputeClients, key: tuple[str, str]) -> Image | str:
    project, name = key
    owner = dataclasses.replace(clients, project=project)
    request = compute_v1.GetImageRequest(project=project, image=name)
    try:
        image = owner.call(f"image {name!r}", owner.images.get, request)
    except ComputeApiError as exc:
        if isinstance(exc.__cause__, api_exceptions.NotFound):
            return f"boot image {project}/{name} has been deleted"
        if isinstance(exc.__cause__, api_exceptions.Forbidden):
            return f"no permission to read boot image {project}/{name}"
        return f"boot image {project}/{name} could not be read: {exc}"
    try:
        created = datetime.datetime.fromisoformat(image.creation_timestamp)
    except ValueError:
        return f"boot image {project}/{name} has no valid creationTimestamp ({image.creation_timestamp!r})"
    return Image(project, name, image.family, created, image.deprecated.state or "ACTIVE")


def _path(link: str) -> str:
    """``projects/...`` of a full or partial resource URL."""
    at = link.find("projects/")
    return link[at:] if at >= 0 else link


def _scoped(value: str, kind: str) -> str:
    """``global|regions/R|zones/Z/KIND/NAME`` of a ``projects/P/...`` value, or '' if it is not a KIND."""
    match = _SCOPED.search(value)
    return match["rest"] if match and match["kind"] == kind else ""


# --- the command -------------------------------------------------------------------------------------


def scope_for(
    settings: Settings, env: str | None, projects: Sequence[str] = (), max_age_days: int | None = None
) -> Scope:
    """The scope of ``env`` (a gce environment); ``projects`` and ``max_age_days`` override the config."""
    env_name = settings.environment(env)
    environment = settings.config.environments[env_name]
    if environment.target != "gce" or environment.gce is None:
        raise ConfigError(f"environment {env_name!r} is not a gce environment: coverage reads a GCE fleet")
    cov = environment.coverage
    for project in projects:
        if not re.fullmatch(PROJECT_ID_RE, project):
            raise ConfigError(f"--project {project!r} is not a GCP project id: use 6-30 lowercase letters, digits or -")
    rules = {**(BUILTIN_EXEMPT if cov.builtin_exempt else {}), **cov.exempt}
    return Scope(
        env=env_name,
        home_project=environment.gce.project,
        families=tuple(spec.family for spec in settings.specs(env_name)),
        projects=tuple(dict.fromkeys(projects or cov.projects or (environment.gce.project,))),
        rules=tuple(Rule(name, tuple(sorted(labels.items()))) for name, labels in rules.items()),
        max_age_days=max_age_days or cov.max_age_days or environment.retention.max_age_days,
    )


def measure(
    settings: Settings,
    env: str | None,
    *,
    projects: Sequence[str] = (),
    max_age_days: int | None = None,
    clients: ComputeClients | None = None,
    now: datetime.datetime | None = None,
) -> Report:
    """Read and classify ``env``'s fleet (read-only)."""
    scope = scope_for(settings, env, projects, max_age_days)
    gce = settings.config.environments[scope.env].gce
    assert gce is not None  # scope_for checked it
    clients = clients or ComputeClients.create(gce.project, gce.zone, endpoint=resolve_endpoint(gce.api_endpoint))
    return classify(read_fleet(clients, scope), scope, now or datetime.datetime.now(datetime.UTC))


def command(
    settings: Settings,
    env: str | None,
    *,
    projects: Sequence[str],
    fmt: str,
    fail_under: str | None,
    max_age_days: str | None,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    clients: ComputeClients | None = None,
) -> Report:
    """``invoke coverage``: check the flags, measure, print (``say``), warn about projects not counted
    (``warn``, one line each), then raise CoverageBelow if ``fail_under`` is not met."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not known: use one of {', '.join(FORMATS)}")
    threshold = _number("--fail-under", fail_under, float, 0, 100)
    max_age = _number("--max-age-days", max_age_days, int, 1, None)
    report = measure(settings, env, projects=projects, max_age_days=max_age, clients=clients)
    say(render(report, fmt))
    for line in report.errors:
        warn(f"WARNING: {line}")
    if threshold is not None:
        if report.errors:
            raise CoverageBelow(
                f"coverage not established: {len(report.errors)} project(s) could not be read "
                f"(--fail-under {threshold:g})"
            )
        if report.coverage_pct < threshold:
            raise CoverageBelow(f"coverage {report.coverage_pct:.1f}% is below --fail-under {threshold:g}")
    return report


def _number(flag: str, raw: str | None, kind: type[N], low: N, high: N | None) -> N | None:
    """``raw`` (an Invoke flag's string) as ``kind`` within bounds, or one ConfigError line."""
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        word = "whole number" if kind is int else "number"
        raise ConfigError(f"{flag} {raw!r} is not valid: give a {word} {bound}")
    return value


# --- output ------------------------------------------------------------------------------------------


def render(report: Report, fmt: str) -> str:
    """The report as ``text``, ``json`` or ``md``."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "md":
        return to_markdown(report)
    return to_text(report)


def _made_by(entry: Entry) -> str:
    parts = [f"template {entry.template}" if entry.template else "", f"MIG {entry.mig}" if entry.mig else ""]
    return "; ".join(p for p in parts if p)


def to_text(report: Report) -> str:
    """The summary line, then one line per VM: uncovered and stale first."""
    lines = [report.summary()]
    for e in report.instances:
        age = f", {e.image_age_days} d" if e.image_age_days is not None else ""
        made = f" [{_made_by(e)}]" if _made_by(e) else ""
        why = f": {e.reason}" if e.reason else ""
        lines.append(f"{e.status:<9} {e.project}/{e.zone}/{e.name} {e.image or '-'}{age}{made}{why}")
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """A heading with the summary, then a table of the VMs (uncovered and stale first)."""
    lines = [
        f"# Fleet coverage {report.scope.env}: {report.coverage_pct:.1f}%",
        "",
        report.summary(),
        "",
        "| status | project | zone | VM | image | family | age (days) | template | MIG | reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report.instances:
        age = "" if e.image_age_days is None else str(e.image_age_days)
        cells = (e.status, e.project, e.zone, e.name, e.image, e.family, age, e.template, e.mig, e.reason)
        lines.append("| " + " | ".join(_cell(c) or "–" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def nightly_section(report: Report) -> dict[str, Any]:
    """The nightly report's ``coverage`` section: counts, percentage, projects not counted, uncovered VMs."""
    document = report.to_dict()
    del document["instances"]
    document["errors"] = list(report.errors)
    document["uncovered_vms"] = [dataclasses.asdict(e) for e in report.instances if e.status == "uncovered"]
    return document
