"""A local fake of the Compute Engine v1 REST API, for the real google-cloud-compute client.

Implemented subset (routes come from the official discovery document, see ``discovery.py``): images
insert/get/list/getFromFamily/deprecate/delete/setLabels; instances insert/get/delete/list/aggregatedList/
getSerialPortOutput; globalOperations and zoneOperations get/wait; instanceTemplates get/list/aggregatedList
and instanceGroupManagers aggregatedList (seeded by tests, zonal or regional); public images of other projects
(``seed_public_image``: images.get/getFromFamily/list only, as for debian-cloud; anything else there is a 403).
More projects of the fleet (``add_project``: another fake with the full API, served by the same server; any
project the fake does not hold answers 403); VMs as the fleet's are (``seed_vm``: an instance with its boot
disk, labels and metadata, e.g. a MIG's ``created-by``/``instance-template``). What ``invoke doctor`` reads:
networks.get and getEffectiveFirewalls (``seed_firewall_policy``: a policy in effect on every network),
subnetworks.get, firewalls.list, routers.list (regional; ``seed_network``/``seed_subnetwork``/
``seed_firewall``/``seed_router``, a router's Cloud NAT covering all subnetworks), projects.get (``id`` = the
project number, ``commonInstanceMetadata`` from ``project_metadata``, project ``quotas``), regions.get (any
well-formed region name: UP, zones ``REGION-b/c/d``, region ``quotas``), zones.get (UP unless ``zone_status``
says DOWN), machineTypes.get (``MACHINE_TYPES``; unknown or ``unavailable_machine_types`` in that zone: 404);
quotas default to ``DEFAULT_*_QUOTAS`` (a bake fits), ``set_quota`` replaces one. ``api_disabled``: every
Compute call answers Google's 403 accessNotConfigured / SERVICE_DISABLED (``api_disabled_error``).
Resource Manager, IAM and Pub/Sub fakes (``cloudapis.py``) are served on the same port and attached as
``resourcemanager``, ``iam`` and ``pubsub``, sharing ``calls``, ``violations`` and the lock.
As the discovery document says of ``Disk.sourceImage`` ("If the source image is deleted, this field will not
be set"), deleting an image clears that field from the disks made from it (``sourceImageId`` stays).
Google's semantics where this project depends on them: name and label validation (400 invalid),
404 notFound / 409 alreadyExists / 412 conditionNotMet error bodies, label fingerprints, list filters
(``name``/``family``/``labels.KEY`` equality only; anything else is a 400), ``maxResults`` + ``pageToken``
paging, ``requestId`` deduplication (same id: same operation, no second effect), operations that finish
after ``op_polls`` polls, failed operations with ``error.errors[]``, ``httpErrorStatusCode`` and
``httpErrorMessage``.

Effects are applied when a mutation is accepted (a failed operation applies none); a new instance is
PROVISIONING until its operation is DONE, then RUNNING. ``wait`` advances an operation by one poll and
returns (the real one returns when DONE or after about two minutes).

Every request body, query and response is validated against the discovery document; a violation is
recorded in ``violations`` and answered with a 400, and the pytest fixture fails the test on any.
``inject`` queues faults per method id: an HTTP error status, a delay before the answer (the mutation
is still applied: the slow-response case that request ids exist for), a failed operation, or a
corrupted response. ``calls`` records every request.
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import http.server
import ipaddress
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.errors import BakeryError
from tests.fakes.base import Call, Fault, project_number
from tests.fakes.cloudapis import CloudApis, FakeIam, FakePubSub, FakeResourceManager
from tests.fakes.discovery import Discovery, Method, compute_v1

if TYPE_CHECKING:
    from tests.fakes.vmbackend import VmBackend

__all__ = ["ApiError", "Call", "FakeCompute", "Fault", "fingerprint"]

LINK_BASE = "https://www.googleapis.com/compute/v1/"
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_RE_TEXT = "(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)"
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
FILTER_RE = re.compile(r'^\s*(name|family|labels\.[a-z][a-z0-9_-]*)\s*=\s*"([^"]*)"\s*$')
IMAGE_REF_RE = re.compile(
    r"^(?:(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?projects/(?P<project>[^/]+)/)?"
    r"global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))$"
)
REASONS = {
    400: "invalid",
    403: "forbidden",
    404: "notFound",
    409: "alreadyExists",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "backendError",
    503: "backendError",
    504: "backendError",
}
METHODS = {
    "images": ("insert", "get", "list", "getFromFamily", "deprecate", "delete", "setLabels"),
    "instances": ("insert", "get", "delete", "list", "aggregatedList", "getSerialPortOutput"),
    "instanceTemplates": ("get", "list", "aggregatedList"),
    "instanceGroupManagers": ("aggregatedList",),
    "disks": ("get", "list", "aggregatedList", "delete"),
    "globalOperations": ("get", "wait"),
    "zoneOperations": ("get", "wait"),
    "networks": ("get", "getEffectiveFirewalls"),
    "subnetworks": ("get",),
    "firewalls": ("list",),
    "routers": ("list",),
    "projects": ("get",),
    "regions": ("get",),
    "zones": ("get",),
    "machineTypes": ("get",),
}
#: (guestCpus, memoryMb) of the machine types the fake knows; others are 404. From
#: https://cloud.google.com/compute/docs/general-purpose-machines (E2: e2-medium 2 shared vCPUs / 4 GB, standard
#: types 4 GB per vCPU; N2 standard 4 GB per vCPU); the table rows were not re-read for this fake.
MACHINE_TYPES = {
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n2-standard-2": (2, 8192),
    "n2-standard-4": (4, 16384),
}
SHARED_CORE_TYPES = {"e2-small", "e2-medium"}
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")  # us-east1, europe-west1, northamerica-northeast1
REGION_ZONES = ("b", "c", "d")
#: Quotas a bake fits in (``set_quota`` replaces them); metric names are ``Quota.metric`` enum values.
DEFAULT_REGION_QUOTAS = {
    "CPUS": 24.0,
    "DISKS_TOTAL_GB": 4096.0,
    "SSD_TOTAL_GB": 500.0,
    "IN_USE_ADDRESSES": 8.0,
    "INSTANCES": 24.0,
}
DEFAULT_PROJECT_QUOTAS = {"IMAGES": 2000.0, "FIREWALLS": 200.0, "NETWORKS": 5.0}
PUBLIC_READS = {"compute.images.get", "compute.images.getFromFamily", "compute.images.list"}


class ApiError(Exception):
    """An error answer: HTTP status, Google ``reason`` and message; ``domain``, ``extended_help``,
    ``status`` and ``details`` where Google's answer has them (e.g. a disabled API's)."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        *,
        domain: str = "global",
        extended_help: str = "",
        status: str = "",
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "invalid")
        self.message = message
        self.domain, self.extended_help, self.status, self.details = domain, extended_help, status, details

    def body(self) -> dict[str, Any]:
        detail = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.extended_help:
            detail["extendedHelp"] = self.extended_help
        error: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [detail]}
        if self.status:
            error["status"] = self.status
        if self.details:
            error["details"] = self.details
        return {"error": error}


def api_disabled_error(project: str) -> ApiError:
    """What Compute answers every call when the API is disabled in the calling project. Message and
    reason as quoted in vmware-archive/gcp-pcf-quickstart#12 (Compute, 2018: "googleapi: Error 403: ...,
    accessNotConfigured"; it still had an "Access Not Configured." prefix that later answers of the same kind
    lack: terraform-google-modules/terraform-google-project-factory#718, 2022); domain ``usageLimits`` and
    ``extendedHelp`` as in Spencer-Easton/Apps-Script-Gmail-Push-Notifications-v2#3; ``status`` and the
    ``ErrorInfo`` reason SERVICE_DISABLED as in google-gemini/gemini-cli#25226 ("403 PERMISSION_DENIED: ...
    SERVICE_DISABLED"). The ErrorInfo metadata keys are not verified against a captured answer."""
    number = project_number(project)
    url = f"https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project={number}"
    message = (
        f"Compute Engine API has not been used in project {number} before or it is disabled. Enable it by "
        f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for the action to "
        "propagate to our systems and retry."
    )
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
        "metadata": {"service": "compute.googleapis.com", "consumer": f"projects/{number}", "activationUrl": url},
    }
    return ApiError(
        403,
        message,
        "accessNotConfigured",
        domain="usageLimits",
        extended_help="https://console.developers.google.com",
        status="PERMISSION_DENIED",
        details=[info],
    )


@dataclass
class _Operation:
    resource: dict[str, Any]
    polls_left: int
    error: tuple[str, str, int] | None
    on_done: Callable[[], None] | None = None
    zone: str | None = None


@dataclass
class FakeCompute:
    """The fake's state and logic; ``serve()`` runs it on 127.0.0.1 (see the module docstring)."""

    project: str = "bakery-test"
    op_polls: int = 0
    default_ip: str = "127.0.0.1"
    discovery: Discovery = field(default_factory=compute_v1)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    disks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    migs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (zones/Z or regions/R, name)
    public_images: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # project -> name -> image
    projects: dict[str, FakeCompute] = field(default_factory=dict)  # other projects of the fleet (add_project)
    operations: dict[str, _Operation] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)
    instance_ips: dict[str, str] = field(default_factory=dict)
    serial_output: dict[str, str] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnetworks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (region, name)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    firewall_policies: list[dict[str, Any]] = field(default_factory=list)  # in effect on every network
    routers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (region, name)
    project_metadata: dict[str, str] = field(default_factory=dict)  # commonInstanceMetadata.items
    quotas: dict[tuple[str | None, str], tuple[float, float]] = field(default_factory=dict)  # set_quota
    zone_status: dict[str, str] = field(default_factory=dict)  # zone -> UP/DOWN (default UP)
    unavailable_machine_types: set[tuple[str, str]] = field(default_factory=set)  # (zone, machine type)
    api_disabled: bool = False
    # The opt-in VM backend (vmbackend.py): instances of an image with a local disk boot as QEMU VMs.
    vm_backend: VmBackend | None = None
    image_disks: dict[str, Path] = field(default_factory=dict)  # image id -> its local qcow2 disk
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: dict[str, collections.deque[Fault]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )
    endpoint: str = ""

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1_000_000_001)
        self._last_time = datetime.datetime.now(datetime.UTC)
        self.routes: list[tuple[Method, Callable[..., dict[str, Any]]]] = []
        for resource, names in METHODS.items():
            for name in names:
                handler = getattr(self, f"_{resource}_{name}".replace("Operations", "_operations").lower())
                self.routes.append((self.discovery.method(resource, name), handler))
        self.cloudapis = CloudApis.create(self.project, self.calls, self.violations, self.lock)

    @property
    def resourcemanager(self) -> FakeResourceManager:
        """The Resource Manager v3 fake on this fake's server (``cloudapis.py``)."""
        return self.cloudapis.resourcemanager

    @property
    def iam(self) -> FakeIam:
        """The IAM v1 fake on this fake's server (``cloudapis.py``)."""
        return self.cloudapis.iam

    @property
    def pubsub(self) -> FakePubSub:
        """The Pub/Sub v1 fake on this fake's server (``cloudapis.py``)."""
        return self.cloudapis.pubsub

    # --- test controls -------------------------------------------------------------------------------

    def inject(
        self,
        method: str,
        status: int | None = None,
        *,
        times: int = 1,
        delay: float = 0.0,
        op_error: tuple[str, str, int] | None = None,
        corrupt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Queue a fault for the next ``times`` calls of ``method`` (e.g. ``compute.images.get``)."""
        if method not in {m.id for m, _ in self.routes}:
            raise ValueError(f"the fake does not implement {method}")
        with self.lock:
            self.faults[method].extend([Fault(status, delay, op_error, corrupt)] * times)

    def seed_image(
        self,
        name: str,
        family: str = "",
        *,
        created: datetime.datetime | None = None,
        state: str = "",
        local_disk: Path | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a READY image directly (e.g. a base image to copy from); ``created`` backdates it, ``state``
        (DEPRECATED, OBSOLETE, DELETED) deprecates it; ``local_disk`` (a qcow2 file) is what its instances
        boot with the VM backend (its copies carry it too)."""
        with self.lock:
            image = self._new_image(name, {"name": name, "family": family, **extra} if family else {"name": name})
            if local_disk is not None:
                self.image_disks[image["id"]] = local_disk
            if created is not None:
                image["creationTimestamp"] = _rfc3339(created)
            if state:
                image["deprecated"] = {"state": state}
            self.images[name] = image
            return image

    def add_project(self, project: str) -> FakeCompute:
        """Another project of the fleet, with the full API, served by this fake's server (its calls and
        violations are recorded here); seed it like this one."""
        with self.lock:
            if project not in self.projects:
                other = FakeCompute(project=project, op_polls=self.op_polls, discovery=self.discovery)
                other._ids = self._ids  # ids stay unique across projects, as Google's are
                self.projects[project] = other
                self.resourcemanager.seed_project(project)
            return self.projects[project]

    def seed_vm(
        self,
        zone: str,
        name: str,
        *,
        image: str = "",
        image_id: str = "",
        snapshot: str = "",
        labels: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        status: str = "RUNNING",
        boot_disk: bool = True,
    ) -> dict[str, Any]:
        """Add an instance whose boot disk (named like it) was created from ``image`` (a full or partial
        image URL, of any project: the image may not exist, e.g. when the VM's project cannot read it),
        or from ``snapshot``, or blank; ``image_id`` is the disk's ``sourceImageId`` (default: the image's
        id if the fake holds it). ``metadata`` becomes ``metadata.items``, e.g. a MIG's ``created-by``."""
        with self.lock:
            link = self._link(f"zones/{zone}/instances/{name}")
            attached: list[dict[str, Any]] = []
            if boot_disk:
                disk = self._new_disk(zone, name, {}, "")
                if image:
                    full = image if image.startswith(LINK_BASE) else LINK_BASE + image.removeprefix("/")
                    disk["sourceImage"] = full
                    found = self._find_image(full)
                    image_id = image_id or (found["id"] if found else self._id())
                if image_id:
                    disk["sourceImageId"] = image_id
                if snapshot:
                    disk["sourceSnapshot"] = self._link(f"global/snapshots/{snapshot}")
                    disk["sourceSnapshotId"] = self._id()
                disk["users"] = [link]
                self.disks[zone, name] = disk
                attached.append(
                    {
                        "kind": "compute#attachedDisk",
                        "type": "PERSISTENT",
                        "mode": "READ_WRITE",
                        "boot": True,
                        "autoDelete": True,
                        "deviceName": "persistent-disk-0",
                        "index": 0,
                        "source": disk["selfLink"],
                    }
                )
            instance: dict[str, Any] = {
                "kind": "compute#instance",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "name": name,
                "machineType": self._link(f"zones/{zone}/machineTypes/e2-small"),
                "status": status,
                "zone": self._link(f"zones/{zone}"),
                "selfLink": link,
                "disks": attached,
                "labelFingerprint": fingerprint(labels or {}),
                "networkInterfaces": [{"name": "nic0", "networkIP": self.default_ip}],
            }
            if labels:
                instance["labels"] = dict(labels)
            if metadata:
                instance["metadata"] = {
                    "kind": "compute#metadata",
                    "fingerprint": fingerprint(metadata),
                    "items": [{"key": k, "value": v} for k, v in metadata.items()],
                }
            self.instances[zone, name] = instance
            return instance

    def delete_image(self, name: str) -> None:
        """What images.delete does to an image of this project (see the module docstring)."""
        with self.lock:
            self._forget_image(self.images.pop(name)["selfLink"])

    def seed_public_image(
        self, project: str, name: str, family: str, *, deprecated: bool = False, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Add an image to another (public) project, e.g. ``debian-cloud``; only readable from here."""
        with self.lock:
            image = self._new_image(name, {"name": name, "family": family, "labels": labels or {}})
            image["selfLink"] = f"{LINK_BASE}projects/{project}/global/images/{name}"
            if deprecated:
                image["deprecated"] = {"state": "DEPRECATED"}
            self.public_images.setdefault(project, {})[name] = image
            return image

    def seed_template(self, name: str, source_image: str, *, region: str = "") -> dict[str, Any]:
        """Add an instance template (global, or regional with ``region``) whose boot disk is created from
        ``source_image``."""
        with self.lock:
            scope = f"regions/{region}" if region else "global"
            template = {
                "kind": "compute#instanceTemplate",
                "id": self._id(),
                "name": name,
                "creationTimestamp": self._timestamp(),
                "selfLink": self._link(f"{scope}/instanceTemplates/{name}"),
                "properties": {
                    "machineType": "e2-small",
                    "disks": [{"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": source_image}}],
                },
            }
            if region:
                template["region"] = self._link(scope)
            self.templates[name] = template
            return template

    def seed_mig(
        self, name: str, template: str, *, zone: str = "", region: str = "", size: int = 2, canary: str = ""
    ) -> dict[str, Any]:
        """Add a managed instance group (zonal or regional) whose instances are created from ``template``
        (a template name of this fake); with ``canary``, a canary rollout: two ``versions`` and no top-level
        ``instanceTemplate``, as the API returns it then."""
        with self.lock:
            scope = f"zones/{zone}" if zone else f"regions/{region}"
            link = self.templates[template]["selfLink"]
            mig = {
                "kind": "compute#instanceGroupManager",
                "id": self._id(),
                "name": name,
                "creationTimestamp": self._timestamp(),
                "selfLink": self._link(f"{scope}/instanceGroupManagers/{name}"),
                "baseInstanceName": name,
                "instanceTemplate": link,
                "versions": [{"instanceTemplate": link, "targetSize": {"fixed": size, "calculated": size}}],
                "targetSize": size,
                ("zone" if zone else "region"): self._link(scope),
            }
            if canary:
                del mig["instanceTemplate"]
                mig["versions"] = [
                    {"name": "stable", "instanceTemplate": link},
                    {
                        "name": "canary",
                        "instanceTemplate": self.templates[canary]["selfLink"],
                        "targetSize": {"fixed": 1, "calculated": 1},
                    },
                ]
            self.migs[scope, name] = mig
            return mig

    def seed_disk(self, zone: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Add a detached disk (e.g. one a killed Packer run left behind)."""
        with self.lock:
            disk = self._new_disk(zone, name, labels or {}, "")
            self.disks[zone, name] = disk
            return disk

    def seed_network(self, name: str) -> dict[str, Any]:
        """Add a custom-mode VPC network (its ``subnetworks`` are the seeded ones that name it)."""
        with self.lock:
            network = {
                "kind": "compute#network",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "name": name,
                "selfLink": self._link(f"global/networks/{name}"),
                "autoCreateSubnetworks": False,
                "routingConfig": {"routingMode": "REGIONAL"},
            }
            self.networks[name] = network
            return network

    def seed_subnetwork(
        self,
        region: str,
        name: str,
        *,
        network: str,
        private_google_access: bool = True,
        ip_cidr_range: str = "10.0.0.0/24",
    ) -> dict[str, Any]:
        """Add a subnetwork of ``network`` (a network name) in ``region``."""
        with self.lock:
            cidr = ipaddress.ip_network(ip_cidr_range)
            subnetwork = {
                "kind": "compute#subnetwork",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "name": name,
                "network": self._link(f"global/networks/{network}"),
                "ipCidrRange": str(cidr),
                "gatewayAddress": str(next(cidr.hosts())),
                "region": self._link(f"regions/{region}"),
                "selfLink": self._link(f"regions/{region}/subnetworks/{name}"),
                "privateIpGoogleAccess": private_google_access,
                "fingerprint": fingerprint({"name": name, "cidr": str(cidr)}),
                "stackType": "IPV4_ONLY",
            }
            self.subnetworks[region, name] = subnetwork
            return subnetwork

    def seed_firewall(
        self,
        name: str,
        *,
        network: str,
        source_ranges: Iterable[str],
        allowed: Iterable[tuple[str, Iterable[str]]] = (("tcp", ("22",)),),
        direction: str = "INGRESS",
        disabled: bool = False,
        target_tags: Iterable[str] = (),
        target_service_accounts: Iterable[str] = (),
        priority: int = 1000,
    ) -> dict[str, Any]:
        """Add a firewall rule of ``network``; ``allowed``: (protocol, ports) pairs, no ports = all ports;
        an EGRESS rule's ``source_ranges`` become its ``destinationRanges``."""
        with self.lock:
            rule: dict[str, Any] = {
                "kind": "compute#firewall",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "name": name,
                "network": self._link(f"global/networks/{network}"),
                "priority": priority,
                "direction": direction,
                "allowed": [
                    {"IPProtocol": protocol, **({"ports": list(ports)} if ports else {})}
                    for protocol, ports in ((p, tuple(ports)) for p, ports in allowed)
                ],
                "disabled": disabled,
                "selfLink": self._link(f"global/firewalls/{name}"),
                "logConfig": {"enable": False},
                ("sourceRanges" if direction == "INGRESS" else "destinationRanges"): list(source_ranges),
            }
            if tags := list(target_tags):
                rule["targetTags"] = tags
            if accounts := list(target_service_accounts):
                rule["targetServiceAccounts"] = accounts
            self.firewalls[name] = rule
            return rule

    def seed_firewall_policy(
        self,
        name: str,
        *,
        src_ip_ranges: Iterable[str],
        ports: Iterable[str] = ("22",),
        action: str = "allow",
        target_service_accounts: Iterable[str] = (),
        policy_type: str = "HIERARCHY",
        priority: int = 1000,
    ) -> dict[str, Any]:
        """Add a firewall policy in effect on every network, with one INGRESS TCP rule (as
        networks.getEffectiveFirewalls shows it: ``NetworksGetEffectiveFirewallsResponseEffectiveFirewallPolicy``)."""
        with self.lock:
            rule: dict[str, Any] = {
                "kind": "compute#firewallPolicyRule",
                "priority": priority,
                "direction": "INGRESS",
                "action": action,
                "match": {
                    "srcIpRanges": list(src_ip_ranges),
                    "layer4Configs": [{"ipProtocol": "tcp", "ports": list(ports)}],
                },
            }
            if accounts := list(target_service_accounts):
                rule["targetServiceAccounts"] = accounts
            policy = {"name": self._id(), "shortName": name, "displayName": name, "type": policy_type, "rules": [rule]}
            self.firewall_policies.append(policy)
            return policy

    def seed_router(self, region: str, name: str, *, network: str, nat: bool = True) -> dict[str, Any]:
        """Add a Cloud Router of ``network`` in ``region``; ``nat``: with a Cloud NAT for every subnetwork's
        ranges and automatically allocated addresses."""
        with self.lock:
            router: dict[str, Any] = {
                "kind": "compute#router",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "name": name,
                "region": self._link(f"regions/{region}"),
                "network": self._link(f"global/networks/{network}"),
                "selfLink": self._link(f"regions/{region}/routers/{name}"),
            }
            if nat:
                router["nats"] = [
                    {
                        "name": f"{name}-nat",
                        "sourceSubnetworkIpRangesToNat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
                        "natIpAllocateOption": "AUTO_ONLY",
                    }
                ]
            self.routers[region, name] = router
            return router

    def set_quota(self, metric: str, *, limit: float, usage: float = 0.0, region: str | None = None) -> None:
        """Set a quota of the project (``region`` None, e.g. IMAGES) or of one region (e.g. CPUS), replacing
        the default (``DEFAULT_*_QUOTAS``); ``metric`` must be a value of the document's ``Quota.metric``."""
        if metric not in self.discovery.schemas["Quota"]["properties"]["metric"]["enum"]:
            raise ValueError(f"{metric!r} is not a Compute quota metric (Quota.metric enum)")
        with self.lock:
            self.quotas[region, metric] = (float(limit), float(usage))

    def calls_of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    @contextmanager
    def serve(self) -> Iterator[FakeCompute]:
        """Listen on 127.0.0.1 (a free port) for the duration; ``endpoint`` is its http:// URL."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="fake-compute", daemon=True)
        thread.start()
        self.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    # --- dispatch ------------------------------------------------------------------------------------

    def handle(self, http_method: str, target: str, raw_body: bytes) -> tuple[int, dict[str, Any], float]:
        """Answer one request: (HTTP status, JSON body, seconds to wait before answering)."""
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = json.loads(raw_body) if raw_body else None
        route = next(
            (
                (m, h, found)
                for m, h in self.routes
                if m.http_method == http_method and (found := m.path.match(url.path))
            ),
            None,
        )
        if route is None:
            elsewhere = self.cloudapis.route(http_method, url.path)
            with self.lock:
                if elsewhere is not None:  # Resource Manager, IAM or Pub/Sub (cloudapis.py)
                    api, api_method, api_handler, params = elsewhere
                    return api.answer(api_method, api_handler, params, path=url.path, query=query, body=body)
                self.violations.append(f"no such method: {http_method} {url.path}")
            return 404, ApiError(404, f"fake: no route for {http_method} {url.path}").body(), 0.0
        method, handler, match = route
        with self.lock:
            self.calls.append(Call(method.id, http_method, url.path, query, body))
            fault = self.faults[method.id].popleft() if self.faults[method.id] else Fault()
            problems = self.discovery.request_problems(method, query, body)
            if problems:
                return self._violation(problems)
            if self.api_disabled:  # whichever project is read: the caller's (consumer) project is checked
                return 403, api_disabled_error(self.project).body(), fault.delay
            if fault.status:
                return fault.status, ApiError(fault.status, f"fake: injected {fault.status}").body(), fault.delay
            request_id = query.get("requestId", [""])[0]
            if request_id in self.request_ids:  # a retry of an accepted mutation: its operation, no new effect
                return 200, dict(self.operations[self.request_ids[request_id]].resource), fault.delay
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            try:
                project = params.pop("project")
                if project == self.project:
                    response = handler(params=params, query=query, body=body, fault=fault)
                elif project in self.projects:
                    other = self.projects[project]
                    response = getattr(other, handler.__name__)(params=params, query=query, body=body, fault=fault)
                elif project in self.public_images and method.id in PUBLIC_READS:
                    response = self._public_read(project, method.id, params, query)
                else:
                    raise ApiError(403, f"fake: no access to project {project} (not a project it holds)", "forbidden")
            except ApiError as exc:
                return exc.code, exc.body(), fault.delay
            except Exception as exc:  # noqa: BLE001 - a bug in the fake: fail the test loudly, not as a 5xx
                self.violations.append(f"fake crashed in {method.id}: {exc!r}")
                return 400, ApiError(400, f"fake crashed: {exc!r}").body(), 0.0
            if fault.corrupt:
                response = fault.corrupt(response)
            problems = self.discovery.response_problems(method, response)
            if problems:
                return self._violation(problems)
            return 200, response, fault.delay

    def _violation(self, problems: list[str]) -> tuple[int, dict[str, Any], float]:
        self.violations.extend(problems)
        return 400, ApiError(400, "fake: discovery schema violation: " + "; ".join(problems)).body(), 0.0

    # --- images --------------------------------------------------------------------------------------

    def _images_insert(self, *, params: dict[str, str], query: Query, body: dict[str, Any], fault: Fault) -> Json:
        name = body.get("name", "")
        self._check_name(name, "resource.name")
        if body.get("family"):
            self._check_name(body["family"], "resource.family")
        self._check_labels(body.get("labels", {}))
        if not body.get("sourceImage"):
            raise ApiError(400, "fake: only images.insert with 'resource.sourceImage' is implemented")

        def effect() -> None:
            if name in self.images:
                raise ApiError(409, f"The resource '{self._path('global/images', name)}' already exists")
            self.images[name] = self._new_image(name, body)

        return self._mutation(query, "insert", f"global/images/{name}", effect, fault)

    def _images_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._image(params["image"])

    def _images_list(self, *, query: Query, **_: Any) -> Json:
        items = sorted(self.images.values(), key=lambda i: i["name"])
        return self._page(query, items, "compute#imageList", "global/images")

    def _images_getfromfamily(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._family_head(params["family"])

    def _public_read(self, project: str, method: str, params: dict[str, str], query: Query) -> Json:
        images = self.public_images[project]
        if method == "compute.images.list":
            page = self._page(query, sorted(images.values(), key=lambda i: i["name"]), "compute#imageList", "")
            return {**page, "id": f"projects/{project}/global/images", "selfLink": f"{LINK_BASE}projects/{project}"}
        if method == "compute.images.get":
            if params["image"] not in images:
                raise ApiError(404, f"The resource 'projects/{project}/global/images/{params['image']}' was not found")
            return images[params["image"]]
        return self._family_head(params["family"], images.values(), project)

    def _images_deprecate(self, *, params: dict[str, str], query: Query, body: dict[str, Any], fault: Fault) -> Json:
        image = self._image(params["image"])
        replacement = body.get("replacement")
        if replacement is not None:
            ref = IMAGE_REF_RE.match(replacement)
            if not ref or ref["name"] is None or ref["project"] != self.project or ref["name"] not in self.images:
                raise ApiError(400, f"Invalid value for field 'resource.replacement': '{replacement}'.")

        def effect() -> None:
            if body.get("state", "ACTIVE") == "ACTIVE":
                image.pop("deprecated", None)
            else:
                image["deprecated"] = {k: v for k, v in body.items() if k in ("state", "replacement")}

        return self._mutation(query, "deprecate", f"global/images/{image['name']}", effect, fault)

    def _images_delete(self, *, params: dict[str, str], query: Query, fault: Fault, **_: Any) -> Json:
        image = self._image(params["image"])

        def effect() -> None:
            self.images.pop(image["name"])
            self._forget_image(image["selfLink"])

        return self._mutation(query, "delete", f"global/images/{image['name']}", effect, fault)

    def _forget_image(self, link: str) -> None:
        """A deleted image's disks keep ``sourceImageId`` but lose ``sourceImage`` (discovery document)."""
        for fake in (self, *self.projects.values()):
            for disk in fake.disks.values():
                if disk.get("sourceImage") == link:
                    del disk["sourceImage"]

    def _find_image(self, link: str) -> dict[str, Any] | None:
        """The image at ``link`` if this fake (or one of its projects, or a public project) holds it."""
        match = IMAGE_REF_RE.match(link)
        if not match or not match["name"]:
            return None
        project, name = match["project"] or self.project, match["name"]
        pool = (
            self.images
            if project == self.project
            else self.projects[project].images
            if project in self.projects
            else self.public_images.get(project, {})
        )
        return pool.get(name)

    def _images_setlabels(self, *, params: dict[str, str], query: Query, body: dict[str, Any], fault: Fault) -> Json:
        image = self._image(params["resource"])
        labels = body.get("labels", {})
        self._check_labels(labels)
        if body.get("labelFingerprint") != image["labelFingerprint"]:
            raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed")

        def effect() -> None:
            image["labels"] = labels
            image["labelFingerprint"] = fingerprint(labels)
            if not labels:
                image.pop("labels")

        return self._mutation(query, "setLabels", f"global/images/{image['name']}", effect, fault)

    # --- instances -----------------------------------------------------------------------------------

    def _instances_insert(self, *, params: dict[str, str], query: Query, body: dict[str, Any], fault: Fault) -> Json:
        zone, name = params["zone"], body.get("name", "")
        self._check_name(name, "resource.name")
        self._check_labels(body.get("labels", {}))
        for disk in body.get("disks", []):
            params_ = disk.get("initializeParams", {})
            self._check_labels(params_.get("labels", {}))
            if params_.get("sourceImage"):
                self._resolve_image(params_["sourceImage"], "resource.disks[].initializeParams.sourceImage")

        def effect() -> None:
            if (zone, name) in self.instances:
                raise ApiError(409, f"The resource '{self._path(f'zones/{zone}/instances', name)}' already exists")
            nics = body.get("networkInterfaces") or [{}]
            link = self._link(f"zones/{zone}/instances/{name}")
            attached = []
            for index, disk in enumerate(body.get("disks", [])):
                params_ = disk.get("initializeParams")
                if params_ is None:
                    attached.append(disk)
                    continue
                disk_name = params_.get("diskName") or (name if index == 0 else f"{name}-{index}")
                if (zone, disk_name) in self.disks:
                    raise ApiError(409, f"The resource '{self._path(f'zones/{zone}/disks', disk_name)}' already exists")
                created = self._new_disk(zone, disk_name, params_.get("labels", {}), params_.get("sourceImage", ""))
                created["users"] = [link]
                self.disks[zone, disk_name] = created
                attached.append(
                    {
                        "kind": "compute#attachedDisk",
                        "type": "PERSISTENT",
                        "boot": disk.get("boot", False),
                        "autoDelete": disk.get("autoDelete", False),
                        "deviceName": disk_name,
                        "index": index,
                        "source": created["selfLink"],
                    }
                )
            instance = {
                **body,
                "kind": "compute#instance",
                "id": self._id(),
                "creationTimestamp": self._timestamp(),
                "status": "PROVISIONING",
                "zone": self._link(f"zones/{zone}"),
                "selfLink": link,
                "disks": attached,
                "labelFingerprint": fingerprint(body.get("labels", {})),
                "networkInterfaces": [
                    {**nic, "name": f"nic{i}", "networkIP": self.instance_ips.get(name, self.default_ip)}
                    for i, nic in enumerate(nics)
                ],
            }
            self.instances[zone, name] = instance
            self._boot_vm(zone, name, body)

        def running() -> None:
            if (zone, name) in self.instances:
                self.instances[zone, name]["status"] = "RUNNING"

        return self._mutation(
            query, "insert", f"zones/{zone}/instances/{name}", effect, fault, zone=zone, on_done=running
        )

    def _instances_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._instance(params["zone"], params["instance"])

    def _instances_delete(self, *, params: dict[str, str], query: Query, fault: Fault, **_: Any) -> Json:
        zone, name = params["zone"], params["instance"]
        self._instance(zone, name)

        def effect() -> None:
            if self.vm_backend is not None:
                self.vm_backend.stop(zone, name)
            instance = self.instances.pop((zone, name))
            for attached in instance.get("disks", []):
                key = (zone, attached.get("source", "").rsplit("/", 1)[-1])
                if key not in self.disks:
                    continue
                if attached.get("autoDelete"):
                    del self.disks[key]
                else:
                    self.disks[key]["users"] = [
                        u for u in self.disks[key].get("users", []) if u != instance["selfLink"]
                    ]
                    if not self.disks[key]["users"]:
                        del self.disks[key]["users"]

        return self._mutation(query, "delete", f"zones/{zone}/instances/{name}", effect, fault, zone=zone)

    def _instances_list(self, *, params: dict[str, str], query: Query, **_: Any) -> Json:
        items = [i for (zone, _), i in sorted(self.instances.items()) if zone == params["zone"]]
        return self._page(query, items, "compute#instanceList", f"zones/{params['zone']}/instances")

    def _instances_aggregatedlist(self, *, query: Query, **_: Any) -> Json:
        items = [i for _, i in sorted(self.instances.items())]
        return self._aggregated(query, items, "instances", "compute#instanceAggregatedList")

    def _instances_getserialportoutput(self, *, params: dict[str, str], query: Query, **_: Any) -> Json:
        instance = self._instance(params["zone"], params["instance"])
        console = self.vm_backend.serial(params["zone"], params["instance"]) if self.vm_backend else None
        output = self.serial_output.get(params["instance"], "") if console is None else console
        start = min(int(query.get("start", ["0"])[0]), len(output))
        return {
            "kind": "compute#serialPortOutput",
            "contents": output[start:],
            "start": str(start),
            "next": str(len(output)),
            "selfLink": instance["selfLink"] + "/serialPort",
        }

    # --- disks ---------------------------------------------------------------------------------------

    def _disks_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._disk(params["zone"], params["disk"])

    def _disks_list(self, *, params: dict[str, str], query: Query, **_: Any) -> Json:
        items = [d for (zone, _), d in sorted(self.disks.items()) if zone == params["zone"]]
        return self._page(query, items, "compute#diskList", f"zones/{params['zone']}/disks")

    def _disks_aggregatedlist(self, *, query: Query, **_: Any) -> Json:
        items = [d for _, d in sorted(self.disks.items())]
        return self._aggregated(query, items, "disks", "compute#diskAggregatedList")

    def _disks_delete(self, *, params: dict[str, str], query: Query, fault: Fault, **_: Any) -> Json:
        zone, name = params["zone"], params["disk"]
        disk = self._disk(zone, name)
        if disk.get("users"):
            raise ApiError(
                400,
                f"The disk resource '{self._path(f'zones/{zone}/disks', name)}' is already being used by "
                f"'{disk['users'][0].removeprefix(LINK_BASE)}'",
                "resourceInUseByAnotherResource",
            )
        return self._mutation(
            query, "delete", f"zones/{zone}/disks/{name}", lambda: self.disks.pop((zone, name)), fault, zone=zone
        )

    # --- instance templates --------------------------------------------------------------------------

    def _instancetemplates_get(self, *, params: dict[str, str], **_: Any) -> Json:
        name = params["instanceTemplate"]
        if name not in self.templates:
            raise ApiError(404, f"The resource '{self._path('global/instanceTemplates', name)}' was not found")
        return self.templates[name]

    def _instancetemplates_list(self, *, query: Query, **_: Any) -> Json:
        items = sorted((t for t in self.templates.values() if "region" not in t), key=lambda t: t["name"])
        return self._page(query, items, "compute#instanceTemplateList", "global/instanceTemplates")

    def _instancetemplates_aggregatedlist(self, *, query: Query, **_: Any) -> Json:
        items = sorted(self.templates.values(), key=lambda t: t["name"])
        return self._aggregated(query, items, "instanceTemplates", "compute#instanceTemplateAggregatedList")

    # --- managed instance groups ---------------------------------------------------------------------

    def _instancegroupmanagers_aggregatedlist(self, *, query: Query, **_: Any) -> Json:
        items = [m for _, m in sorted(self.migs.items())]
        return self._aggregated(query, items, "instanceGroupManagers", "compute#instanceGroupManagerAggregatedList")

    # --- network, project and capacity reads (for ``invoke doctor``) ------------------------------------

    def _networks_get(self, *, params: dict[str, str], **_: Any) -> Json:
        name = params["network"]
        if name not in self.networks:
            raise ApiError(404, f"The resource '{self._path('global/networks', name)}' was not found")
        subnets = [s["selfLink"] for _, s in sorted(self.subnetworks.items()) if s["network"].endswith(f"/{name}")]
        return {**self.networks[name], **({"subnetworks": subnets} if subnets else {})}

    def _networks_geteffectivefirewalls(self, *, params: dict[str, str], **_: Any) -> Json:
        """The network's VPC rules and the firewall policies seeded with ``seed_firewall_policy`` (Google
        answers with every policy in effect on the network: hierarchical, global and regional)."""
        name = params["network"]
        if name not in self.networks:
            raise ApiError(404, f"The resource '{self._path('global/networks', name)}' was not found")
        rules = [f for _, f in sorted(self.firewalls.items()) if f["network"].endswith(f"/networks/{name}")]
        return {
            **({"firewalls": rules} if rules else {}),
            **({"firewallPolicys": list(self.firewall_policies)} if self.firewall_policies else {}),
        }

    def _subnetworks_get(self, *, params: dict[str, str], **_: Any) -> Json:
        region, name = params["region"], params["subnetwork"]
        if (region, name) not in self.subnetworks:
            raise ApiError(404, f"The resource '{self._path(f'regions/{region}/subnetworks', name)}' was not found")
        return self.subnetworks[region, name]

    def _firewalls_list(self, *, query: Query, **_: Any) -> Json:
        items = [f for _, f in sorted(self.firewalls.items())]
        return self._page(query, items, "compute#firewallList", "global/firewalls")

    def _routers_list(self, *, params: dict[str, str], query: Query, **_: Any) -> Json:
        region = params["region"]
        self._check_region(region)
        items = [r for (where, _), r in sorted(self.routers.items()) if where == region]
        return self._page(query, items, "compute#routerList", f"regions/{region}/routers")

    def _projects_get(self, **_: Any) -> Json:
        metadata: dict[str, Any] = {"kind": "compute#metadata", "fingerprint": fingerprint(self.project_metadata)}
        if self.project_metadata:
            metadata["items"] = [{"key": k, "value": v} for k, v in self.project_metadata.items()]
        number = project_number(self.project)
        return {
            "kind": "compute#project",
            "id": number,
            "creationTimestamp": "2024-01-02T03:04:05.678-08:00",
            "name": self.project,
            "commonInstanceMetadata": metadata,
            "quotas": self._quotas(None),
            "selfLink": self._link("")[:-1],
            "defaultServiceAccount": f"{number}-compute@developer.gserviceaccount.com",
            "defaultNetworkTier": "PREMIUM",
            "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
        }

    def _regions_get(self, *, params: dict[str, str], **_: Any) -> Json:
        region = params["region"]
        self._check_region(region)
        return {
            "kind": "compute#region",
            "id": _stable_id(region),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": region,
            "description": region,
            "status": "UP",
            "zones": [self._link(f"zones/{region}-{letter}") for letter in REGION_ZONES],
            "quotas": self._quotas(region),
            "selfLink": self._link(f"regions/{region}"),
        }

    def _zones_get(self, *, params: dict[str, str], **_: Any) -> Json:
        zone = params["zone"]
        region = self._check_zone(zone)
        return {
            "kind": "compute#zone",
            "id": _stable_id(zone),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": zone,
            "description": zone,
            "status": self.zone_status.get(zone, "UP"),
            "region": self._link(f"regions/{region}"),
            "selfLink": self._link(f"zones/{zone}"),
        }

    def _machinetypes_get(self, *, params: dict[str, str], **_: Any) -> Json:
        zone, name = params["zone"], params["machineType"]
        self._check_zone(zone)
        if name not in MACHINE_TYPES or (zone, name) in self.unavailable_machine_types:
            raise ApiError(404, f"The resource '{self._path(f'zones/{zone}/machineTypes', name)}' was not found")
        cpus, memory_mb = MACHINE_TYPES[name]
        return {
            "kind": "compute#machineType",
            "id": _stable_id(name),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name,
            "description": f"{cpus} vCPUs, {memory_mb / 1024:g} GB RAM",
            "guestCpus": cpus,
            "memoryMb": memory_mb,
            "isSharedCpu": name in SHARED_CORE_TYPES,
            "zone": zone,  # a name, not a link (the document: "The name of the zone ...")
            "selfLink": self._link(f"zones/{zone}/machineTypes/{name}"),
        }

    def _quotas(self, region: str | None) -> list[dict[str, Any]]:
        defaults = DEFAULT_PROJECT_QUOTAS if region is None else DEFAULT_REGION_QUOTAS
        merged = {**{m: (limit, 0.0) for m, limit in defaults.items()}}
        merged.update({m: value for (where, m), value in self.quotas.items() if where == region})
        return [{"metric": m, "limit": limit, "usage": usage} for m, (limit, usage) in sorted(merged.items())]

    def _check_region(self, region: str) -> None:
        if not REGION_RE.match(region):
            raise ApiError(404, f"The resource '{self._path('regions', region)}' was not found")

    def _check_zone(self, zone: str) -> str:
        """The zone's region; 404 unless ``zone`` is a well-formed zone name."""
        region, _, letter = zone.rpartition("-")
        if not REGION_RE.match(region) or not re.fullmatch("[a-z]", letter):
            raise ApiError(404, f"The resource '{self._path('zones', zone)}' was not found")
        return region

    # --- operations ----------------------------------------------------------------------------------

    def _global_operations_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._poll(params["operation"], None)

    _global_operations_wait = _global_operations_get

    def _zone_operations_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._poll(params["operation"], params["zone"])

    _zone_operations_wait = _zone_operations_get

    def _mutation(
        self,
        query: Query,
        kind: str,
        target: str,
        effect: Callable[[], Any],
        fault: Fault,
        *,
        zone: str | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> Json:
        """Start an operation for ``effect`` (applied now unless the fault fails the operation)."""
        request_id = query.get("requestId", [""])[0]
        if fault.op_error is None:
            effect()
        name = f"operation-{int(time.time() * 1000)}-{self._id()}"
        scope = f"zones/{zone}/operations" if zone else "global/operations"
        resource: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self._id(),
            "name": name,
            "operationType": kind,
            "targetLink": self._link(target),
            "targetId": self._id(),
            "status": "PENDING",
            "progress": 0,
            "user": "fake@example.com",
            "insertTime": self._timestamp(),
            "selfLink": self._link(f"{scope}/{name}"),
            **({"zone": self._link(f"zones/{zone}")} if zone else {}),
            **({"clientOperationId": request_id} if request_id else {}),
        }
        self.operations[name] = _Operation(resource, self.op_polls, fault.op_error, on_done, zone)
        if request_id:
            self.request_ids[request_id] = name
        return self._poll(name, zone, advance=self.op_polls == 0)

    def _poll(self, name: str, zone: str | None, *, advance: bool = True) -> Json:
        """The operation, one poll further unless ``advance`` is false."""
        operation = self.operations.get(name)
        if operation is None or operation.zone != zone:
            scope = f"zones/{zone}/operations" if zone else "global/operations"
            raise ApiError(404, f"The resource '{self._path(scope, name)}' was not found")
        resource = operation.resource
        if advance and resource["status"] != "DONE":
            operation.polls_left -= 1
            resource.update(status="RUNNING", progress=50, startTime=resource.get("startTime", self._timestamp()))
            if operation.polls_left <= 0:
                resource.update(status="DONE", progress=100, endTime=self._timestamp())
                if operation.error:
                    code, message, status = operation.error
                    resource["error"] = {"errors": [{"code": code, "message": message}]}
                    resource["httpErrorStatusCode"] = status
                    resource["httpErrorMessage"] = http.HTTPStatus(status).phrase.upper()
                elif operation.on_done:
                    operation.on_done()
        return dict(resource)

    # --- helpers -------------------------------------------------------------------------------------

    def _new_image(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        image: dict[str, Any] = {
            "kind": "compute#image",
            "id": self._id(),
            "creationTimestamp": self._timestamp(),
            "name": name,
            "sourceType": "RAW",
            "status": "READY",
            "archiveSizeBytes": "1073741824",
            "diskSizeGb": "10",
            "selfLink": self._link(f"global/images/{name}"),
            "labelFingerprint": fingerprint(body.get("labels", {})),
            # Whether a copy (sourceImage) inherits the source's storage location and guest OS features is
            # documented nowhere (gcloud's help: without --storage-location "the multi-region location closest
            # to the source is chosen"). The fake takes the pessimistic reading: only what the request gives.
            "storageLocations": ["eu"],
        }
        for key in ("description", "family", "labels", "storageLocations", "guestOsFeatures"):
            if body.get(key):
                image[key] = body[key]
        if body.get("sourceImage"):
            source = self._resolve_image(body["sourceImage"], "resource.sourceImage")
            image.update(sourceImage=source["selfLink"], sourceImageId=source["id"], diskSizeGb=source["diskSizeGb"])
            if source["id"] in self.image_disks:
                self.image_disks[image["id"]] = self.image_disks[source["id"]]
        return image

    def _resolve_image(self, ref: str, field_name: str) -> dict[str, Any]:
        match = IMAGE_REF_RE.match(ref)
        if not match:
            raise ApiError(400, f"Invalid value for field '{field_name}': '{ref}'. The URL is malformed.")
        if (match["project"] or self.project) != self.project:
            raise ApiError(404, f"The resource '{ref}' was not found")
        return self._family_head(match["family"]) if match["family"] else self._image(match["name"])

    def _image(self, name: str) -> dict[str, Any]:
        if name not in self.images:
            raise ApiError(404, f"The resource '{self._path('global/images', name)}' was not found")
        return self.images[name]

    def _family_head(
        self, family: str, images: Iterable[dict[str, Any]] | None = None, project: str = ""
    ) -> dict[str, Any]:
        pool = self.images.values() if images is None else images
        members = [i for i in pool if i.get("family") == family and "deprecated" not in i]
        if not members:
            where = f"projects/{project or self.project}/global/images/family/{family}"
            raise ApiError(404, f"The resource '{where}' was not found")
        return max(members, key=lambda i: datetime.datetime.fromisoformat(i["creationTimestamp"]))

    def _new_disk(self, zone: str, name: str, labels: dict[str, str], source_image: str) -> dict[str, Any]:
        disk: dict[str, Any] = {
            "kind": "compute#disk",
            "id": self._id(),
            "creationTimestamp": self._timestamp(),
            "name": name,
            "sizeGb": "10",
            "zone": self._link(f"zones/{zone}"),
            "status": "READY",
            "selfLink": self._link(f"zones/{zone}/disks/{name}"),
            "type": self._link(f"zones/{zone}/diskTypes/pd-balanced"),
            "labelFingerprint": fingerprint(labels),
        }
        if labels:
            disk["labels"] = dict(labels)
        if source_image:
            source = self._resolve_image(source_image, "sourceImage")
            disk["sourceImage"], disk["sourceImageId"] = source["selfLink"], source["id"]
        return disk

    def _disk(self, zone: str, name: str) -> dict[str, Any]:
        if (zone, name) not in self.disks:
            raise ApiError(404, f"The resource '{self._path(f'zones/{zone}/disks', name)}' was not found")
        return self.disks[zone, name]

    def _instance(self, zone: str, name: str) -> dict[str, Any]:
        if (zone, name) not in self.instances:
            raise ApiError(404, f"The resource '{self._path(f'zones/{zone}/instances', name)}' was not found")
        instance = self.instances[zone, name]
        vm_status = self.vm_backend.status(zone, name) if self.vm_backend else None
        if vm_status == "TERMINATED":  # the guest powered off (or QEMU died): as GCE reports a stopped VM
            instance["status"] = vm_status
        return instance

    def _boot_vm(self, zone: str, name: str, body: dict[str, Any]) -> None:
        """With the VM backend, boot the instance whose boot disk's image has a local disk; its address
        becomes the first interface's ``networkIP``. A VM that cannot start fails the insert (503)."""
        boot = next((d for d in body.get("disks", []) if d.get("boot")), None)
        source = (boot or {}).get("initializeParams", {}).get("sourceImage", "")
        if self.vm_backend is None or not source:
            return
        disk = self.image_disks.get(self._resolve_image(source, "sourceImage")["id"])
        if disk is None:
            return
        try:
            address = self.vm_backend.boot(self, zone, name, disk)
        except BakeryError as exc:  # as if the insert had failed: neither the instance nor its disks exist
            instance = self.instances.pop((zone, name))
            for attached in instance.get("disks", []):
                self.disks.pop((zone, attached.get("source", "").rsplit("/", 1)[-1]), None)
            raise ApiError(503, f"fake VM backend: {exc}") from exc
        self.instances[zone, name]["networkInterfaces"][0]["networkIP"] = address

    def _page(self, query: Query, items: list[dict[str, Any]], kind: str, collection: str) -> Json:
        if query.get("orderBy", [""])[0]:
            raise ApiError(400, "fake: orderBy is not supported")
        items = [i for i in items if _matches(i, query.get("filter", [""])[0])]
        size = int(query.get("maxResults", ["500"])[0])
        if not 0 <= size <= 500:
            raise ApiError(400, f"Invalid value for field 'maxResults': '{size}'. Must be in range [0, 500].")
        size = size or 500
        token = query.get("pageToken", [""])[0]
        try:
            start = int(base64.urlsafe_b64decode(token).decode()) if token else 0
        except ValueError:
            raise ApiError(400, f"Invalid value for field 'pageToken': '{token}'.") from None
        page: dict[str, Any] = {"kind": kind, "id": self._path(collection, "")[:-1], "selfLink": self._link(collection)}
        if items[start : start + size]:
            page["items"] = items[start : start + size]
        if start + size < len(items):
            page["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return page

    def _aggregated(self, query: Query, items: list[dict[str, Any]], collection: str, kind: str) -> Json:
        """One page of an aggregatedList: items grouped under their scope (``zones/Z`` or ``regions/R``
        from the item's ``zone``/``region`` link, else ``global``), each scope holding ``{collection: [...]}``."""
        page = self._page(query, items, "", f"aggregated/{collection}")
        scoped: dict[str, Any] = {}
        for item in page.pop("items", []):
            link = item.get("zone") or item.get("region")
            scope = "/".join(link.rsplit("/", 2)[-2:]) if link else "global"
            scoped.setdefault(scope, {collection: []})[collection].append(item)
        return {**page, "kind": kind, **({"items": scoped} if scoped else {})}

    def _check_name(self, name: str, field_name: str) -> None:
        if not NAME_RE.match(name):
            raise ApiError(
                400, f"Invalid value for field '{field_name}': '{name}'. Must be a match of regex '{NAME_RE_TEXT}'"
            )

    @staticmethod
    def _check_labels(labels: dict[str, str]) -> None:
        if len(labels) > 64:
            raise ApiError(400, "Invalid value for field 'resource.labels': too many labels (at most 64).")
        for key, value in labels.items():
            if not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
                raise ApiError(400, f"Invalid value for field 'resource.labels': '{key}={value}'.")

    def _path(self, collection: str, name: str) -> str:
        return f"projects/{self.project}/{collection}/{name}"

    def _link(self, rest: str) -> str:
        return f"{LINK_BASE}projects/{self.project}/{rest}"

    def _id(self) -> str:
        return str(next(self._ids))

    def _timestamp(self) -> str:
        """Now, in Compute's RFC 3339 style (ms, offset), strictly after the previous timestamp."""
        now = max(datetime.datetime.now(datetime.UTC), self._last_time + datetime.timedelta(milliseconds=1))
        self._last_time = now
        return now.astimezone(datetime.timezone(datetime.timedelta(hours=-8))).isoformat(timespec="milliseconds")


Json = dict[str, Any]
Query = dict[str, list[str]]


def _stable_id(name: str) -> str:
    """A fixed numeric id for a public resource (region, zone, machine type), as Google's are."""
    return str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big"))


def _rfc3339(when: datetime.datetime) -> str:
    """``when`` in Compute's RFC 3339 style (ms, offset), like the fake's own timestamps."""
    return when.astimezone(datetime.timezone(datetime.timedelta(hours=-8))).isoformat(timespec="milliseconds")


def fingerprint(labels: dict[str, str]) -> str:
    """A label fingerprint: changes whenever the labels do."""
    digest = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


def _matches(item: dict[str, Any], expression: str) -> bool:
    if not expression:
        return True
    match = FILTER_RE.match(expression)
    if not match:
        raise ApiError(400, f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.")
    key, value = match.groups()
    actual = item.get("labels", {}).get(key[7:]) if key.startswith("labels.") else item.get(key)
    return actual == value


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCompute


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, body, delay = self.server.fake.handle(self.command, self.path, self.rfile.read(length))
        if delay:
            time.sleep(delay)
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to tell it

    do_GET = do_POST = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in ``FakeCompute.calls``."""
