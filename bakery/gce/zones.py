"""Zone fallback: which failures to create a VM mean "this zone has no capacity now" (try the next zone of
``gce.zones``), which mean "quota" (fail at once: another zone of the same region has the same regional
quota), and the one-line errors when no zone is left.

The builder VM is created by Packer's googlecompute plugin, so its failure is read from Packer's output;
the test VM is created by bakery, so its failure is read from the Compute API error (an HTTP error, or a
failed insert operation as :func:`bakery.gce.client.check_operation` words it: ``CODE: message``).

Facts, from upstream (read 2026-11-29):

* Capacity: Google's Compute Engine docs, "Troubleshoot resource availability errors"
  (https://cloud.google.com/compute/docs/resource-error, "Common error messages"): the operation error codes
  ``ZONE_RESOURCE_POOL_EXHAUSTED`` and ``ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS``, and the messages
  "The zone 'projects/PROJECT_ID/zones/ZONE' does not have enough resources available to fulfill the
  request. Try a different zone, or try again later." and "A VM_TYPE_AND_SIZE VM instance with
  RESOURCE_ATTACHMENT is currently unavailable in the ZONE zone." The same page says these errors are not
  quota errors and a quota increase does not resolve them.
* A machine type that a zone does not offer: instances.insert answers HTTP 400 "Invalid value for field
  'resource.machineType': '…'. Machine type with name 'M' does not exist in zone 'Z'." (as reported by
  gcloud in GoogleCloudPlatform/bank-of-anthos issue #1234; not in Google's reference docs: NOT verified
  against a primary source). The googlecompute plugin looks the machine type up first
  (hashicorp/packer-plugin-googlecompute v1.2.7, lib/common/driver_gce.go:639 ``MachineTypes.Get``), so
  through Packer it is the 404 "The resource 'projects/P/zones/Z/machineTypes/M' was not found".
* Quota: the operation error code ``QUOTA_EXCEEDED`` with "Quota 'METRIC' exceeded. Limit: N in region R."
  and HTTP 403 reason ``quotaExceeded`` (Google's "Troubleshooting bulk VM creation" page, "Quota
  exceeded"; the message form as GoogleCloudPlatform/ai-on-gke issue #849 quotes it).
* Packer: packer-plugin-googlecompute v1.2.7 (commit 1fbf6a099c72b18b0a9360362514b42d88c358d1),
  builder/googlecompute/step_create_instance.go:229-233 reports every failure of ``RunInstance`` (the zone
  and machine type look-ups, the insert call, the insert operation) as ``ui.Error("Error creating
  instance: " + err)``; an operation's errors come as their MESSAGES only, without the code
  (lib/common/driver_gce.go:1022-1040 ``refreshZoneOp`` → packer-plugin-sdk v0.6.10 packer/multi_error.go:
  "N error(s) occurred:\\n\\n* MESSAGE"). The step stores ``instance_name`` only after the instance was
  created (step_create_instance.go:245), and its Cleanup (:285-291) returns at once without it: after a
  failed creation Packer has nothing of that attempt to delete (the failed insert operation created no
  instance; its boot disk is created with the instance), and the re-run starts from scratch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bakery.errors import RegistryError
from bakery.target import ZoneAttempt

#: Operation error codes of a zone without capacity (Google's "Troubleshoot resource availability errors").
CAPACITY_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "ZONE_RESOURCE_POOL_EXHAUSTED")
#: Messages of the same (the same page), and of a machine type the zone does not offer (see above).
CAPACITY_MESSAGES = (
    re.compile(r"The zone '[^']*' does not have enough resources available to fulfill the request"),
    re.compile(r"\bA \S+ VM instance .*?is currently unavailable in the [a-z0-9-]+ zone"),
    re.compile(r"Machine type with name '[^']*' does not exist in zone '[^']*'"),
    re.compile(r"The resource '[^']*/zones/[^']*/machineTypes/[^']*' was not found"),
)
#: Quota: the operation error code, the HTTP reason, and the message.
QUOTA_CODES = ("QUOTA_EXCEEDED", "quotaExceeded")
QUOTA_MESSAGE = re.compile(r"Quota '[^']*' exceeded")
#: How the googlecompute plugin prefixes a failed instance creation (step_create_instance.go:230).
PACKER_CREATE_ERROR = "Error creating instance: "
#: The prefix Packer's TargetedUI puts on every line of a builder's message ("==> NAME: " on say/error,
#: "    NAME: " otherwise; Packer v1.6.6 and v1.14.3 packer/ui.go ``prefixLines``).
PACKER_LINE_PREFIX = re.compile(r"^(?:==>| {3}) [^\s:]+: ?")

Kind = Literal["capacity", "quota"]


@dataclass(frozen=True)
class Failure:
    """A VM creation failure that decides the fallback: ``reason`` is ``CODE: message`` where known."""

    kind: Kind
    reason: str


class NoCapacityError(RegistryError):
    """Every zone of ``gce.zones`` was tried and none had capacity."""


class QuotaExceededError(RegistryError):
    """A quota stopped a VM creation: another zone of the region would not help."""


def classify(text: str) -> Failure | None:
    """The capacity or quota failure ``text`` (one API error, or Packer's instance-creation error) reports,
    or None (anything else: not a reason to try another zone)."""
    flat = " ".join(text.split())
    code = next((c for c in CAPACITY_CODES if re.search(rf"\b{c}\b", flat)), None)
    if code is not None or any(p.search(flat) for p in CAPACITY_MESSAGES):
        return Failure("capacity", _reason(flat, code))
    code = next((c for c in QUOTA_CODES if re.search(rf"\b{c}\b", flat)), None)
    if code is not None or QUOTA_MESSAGE.search(flat):
        return Failure("quota", _reason(flat, code))
    return None


def _reason(flat: str, code: str | None) -> str:
    """``CODE: message`` from an error line (``check_operation``'s form: the part from the code on, without
    the trailing operation details), else the part from the matching message on, else the whole line."""
    if code is not None and f"{code}: " in flat:
        start = flat.index(f"{code}: ")
        return re.sub(r" \(operation [^)]*\)$", "", flat[start:]).strip()
    for pattern in (*CAPACITY_MESSAGES, QUOTA_MESSAGE):
        found = pattern.search(flat)
        if found:
            return flat[found.start() :].strip()
    return flat


def packer_creation_error(output: str) -> str | None:
    """The googlecompute plugin's "Error creating instance: …" text in Packer's output (the first one: the
    build's summary repeats it), on one line, or None when the build failed otherwise. The multi-error form
    "N error(s) occurred:" followed by "* MESSAGE" lines is reduced to its messages."""
    start = output.find(PACKER_CREATE_ERROR)
    if start < 0:
        return None
    first, *rest = output[start + len(PACKER_CREATE_ERROR) :].splitlines() or [""]
    if not re.fullmatch(r"\s*\d+ error\(s\) occurred:\s*", first):
        return " ".join(first.split())
    messages: list[str] = []
    for line in rest:
        stripped = PACKER_LINE_PREFIX.sub("", line, count=1).strip()
        if stripped.startswith("* "):
            messages.append(stripped.removeprefix("* "))
        elif stripped or messages:  # the list ends at the first other line after it began
            break
    return " ".join(" ".join(messages).split())


def exhausted_message(what: str, attempts: list[ZoneAttempt]) -> str:
    """One line: ``what`` could not be created in any zone, each zone with its reason."""
    tried = "; ".join(f"{a.zone}: {a.reason}" for a in attempts)
    return (
        f"{what}: no zone of gce.zones had capacity ({tried}): add zones of the region to gce.zones, check "
        "that gce.machine_type is offered there, or try again later"
    )


def quota_message(what: str, zone: str, reason: str) -> str:
    """One line for a quota failure (not retried in another zone of the same region)."""
    return (
        f"{what}: quota exceeded in zone {zone} ({reason}); not retried in another zone (quotas are per region "
        "or project): request a quota increase or free the quota"
    )
