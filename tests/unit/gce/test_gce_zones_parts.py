"""Pure parts of the zone fallback, each against an exact expectation: which error texts mean "no capacity"
and which mean "quota" (bakery/gce/zones.py, with the sources it names), Packer's instance-creation error
as the real machine-readable parser and tail assembly see it, the one-line messages, the summary, and the
``gce.zones`` rules (the same rules through the real CLI: tests/unit/test_bad_input_corpus.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bakery.config import GceSettings, zone_region
from bakery.gce import zones
from bakery.gce.zones import Failure
from bakery.packer import parse_line
from bakery.pipeline import zones_summary
from bakery.target import ZoneAttempt

STOCKOUT = (
    "The zone 'projects/p-1/zones/us-east1-c' does not have enough resources available to fulfill the request. "
    "Try a different zone, or try again later."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a failed insert operation, as bakery.gce.client.check_operation words it
        (
            f"instance 'bakery-test-r1' failed: ZONE_RESOURCE_POOL_EXHAUSTED: {STOCKOUT} (operation op-1, HTTP 503)",
            Failure("capacity", f"ZONE_RESOURCE_POOL_EXHAUSTED: {STOCKOUT}"),
        ),
        (
            "instance 'x' failed: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone 'projects/p/zones/z' does "
            "not have enough resources available to fulfill the request. '(resource type:compute)'. (operation o)",
            Failure(
                "capacity",
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone 'projects/p/zones/z' does not have enough "
                "resources available to fulfill the request. '(resource type:compute)'.",
            ),
        ),
        # the messages alone (the googlecompute plugin drops the code)
        (STOCKOUT, Failure("capacity", STOCKOUT)),
        (
            "A e2-standard-2 VM instance is currently unavailable in the europe-west4-a zone. Alternatively, you "
            "can try your request again with a different VM hardware configuration or at a later time.",
            Failure(
                "capacity",
                "A e2-standard-2 VM instance is currently unavailable in the europe-west4-a zone. Alternatively, "
                "you can try your request again with a different VM hardware configuration or at a later time.",
            ),
        ),
        # a machine type the zone does not offer: insert's 400, and the plugin's machineTypes.get 404
        (
            "Compute Engine rejected the request for instance 'x': 400 Invalid value for field "
            "'resource.machineType': 'zones/us-east1-b/machineTypes/n2-standard-2'. Machine type with name "
            "'n2-standard-2' does not exist in zone 'us-east1-b'.",
            Failure("capacity", "Machine type with name 'n2-standard-2' does not exist in zone 'us-east1-b'."),
        ),
        (
            "googleapi: Error 404: The resource 'projects/p-1/zones/us-east1-b/machineTypes/n2-standard-2' was not "
            "found, notFound",
            Failure(
                "capacity",
                "The resource 'projects/p-1/zones/us-east1-b/machineTypes/n2-standard-2' was not found, notFound",
            ),
        ),
        # quota: the operation's code, the HTTP reason, the message
        (
            "instance 'x' failed: QUOTA_EXCEEDED: Quota 'CPUS' exceeded. Limit: 8.0 in region us-east1. (operation o)",
            Failure("quota", "QUOTA_EXCEEDED: Quota 'CPUS' exceeded. Limit: 8.0 in region us-east1."),
        ),
        (
            "googleapi: Error 403: Quota 'CPUS' exceeded.  Limit: 24.0 in region us-east1., quotaExceeded",
            Failure("quota", "Quota 'CPUS' exceeded. Limit: 24.0 in region us-east1., quotaExceeded"),
        ),
        (
            "Quota 'SSD_TOTAL_GB' exceeded. Limit: 500.0 in region us-east1.",
            Failure("quota", "Quota 'SSD_TOTAL_GB' exceeded. Limit: 500.0 in region us-east1."),
        ),
        # anything else: not a reason to move
        ("permission denied for instance 'x' in project p: 403 Required 'compute.instances.create'", None),
        ("The resource 'projects/p/global/images/x' was not found", None),
        ("Compute Engine failed for instance 'x' in project p after 6 attempts: 503 backendError", None),
        ("", None),
    ],
)
def test_classify(text: str, expected: Failure | None) -> None:
    assert zones.classify(text) == expected


def packer_tail(lines: list[str]) -> str:
    """What bakery.packer.Packer.build keeps of machine-readable output for a PackerError (ui messages)."""
    events = [parse_line(line) for line in lines]
    return "\n".join(e.message.rstrip("\n") for e in events if e is not None and e.type == "ui")


def test_packer_creation_error_reads_the_plugin_error_through_packer_s_prefixes() -> None:
    """The plugin's ui.Error as Packer's TargetedUI prefixes every line and MachineReadableUi escapes it."""
    target = "googlecompute.osquery"
    error = f"Error creating instance: 1 error(s) occurred:\n\n* {STOCKOUT.replace(',', '%!(PACKER_COMMA)')}"
    prefixed = "\\n".join(f"==> {target}: {line}" for line in error.split("\n"))
    tail = packer_tail(
        [
            f"1700000000,,ui,message,    {target}: Waiting for creation operation to complete...",
            f"1700000001,,ui,error,{prefixed}",
            f"1700000001,{target},error,{error.replace(chr(10), chr(92) + 'n')}",
            f"1700000001,,ui,error,Build '{target}' errored after 4 seconds: {error.replace(chr(10), chr(92) + 'n')}",
        ]
    )
    assert f"==> {target}: * The zone" in tail  # the prefix is there to be stripped
    assert zones.packer_creation_error(tail) == STOCKOUT


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "==> g: Error creating instance: googleapi: Error 403: Quota 'CPUS' exceeded., quotaExceeded\nBuild 'g'",
            "googleapi: Error 403: Quota 'CPUS' exceeded., quotaExceeded",
        ),
        ("Error creating instance: 2 error(s) occurred:\n\n* first\n* second\n\nmore", "first second"),
        (
            "Error creating instance: time out while waiting for instance to create",
            "time out while waiting for instance to create",
        ),
        ("==> g: Script exited with non-zero exit status: 1", None),
    ],
)
def test_packer_creation_error(output: str, expected: str | None) -> None:
    assert zones.packer_creation_error(output) == expected


def test_one_line_messages() -> None:
    attempts = [
        ZoneAttempt("test", "us-east1-c", "ZONE_RESOURCE_POOL_EXHAUSTED: m1"),
        ZoneAttempt("test", "us-east1-b", "m2"),
    ]
    assert zones.exhausted_message("test instance", attempts) == (
        "test instance: no zone of gce.zones had capacity (us-east1-c: ZONE_RESOURCE_POOL_EXHAUSTED: m1; "
        "us-east1-b: m2): add zones of the region to gce.zones, check that gce.machine_type is offered there, "
        "or try again later"
    )
    assert zones.quota_message("builder VM", "us-east1-c", "Quota 'CPUS' exceeded.") == (
        "builder VM: quota exceeded in zone us-east1-c (Quota 'CPUS' exceeded.); not retried in another zone "
        "(quotas are per region or project): request a quota increase or free the quota"
    )


def test_zones_summary_only_when_a_stage_moved() -> None:
    assert zones_summary([]) == ""
    assert zones_summary([ZoneAttempt("build", "a-b1-c", ""), ZoneAttempt("test", "a-b1-c", "")]) == ""
    moved = [
        ZoneAttempt("build", "a-b1-c", "R1"),
        ZoneAttempt("build", "a-b1-b", ""),
        ZoneAttempt("test", "a-b1-c", ""),
    ]
    assert zones_summary(moved) == "zones: build a-b1-c (R1) then a-b1-b; test a-b1-c"


def gce(**overrides: object) -> GceSettings:
    return GceSettings.model_validate({"project": "gitlab-staging-1", "zone": "us-east1-c", **overrides})


def test_zone_order_and_region() -> None:
    assert gce().zone_order == ("us-east1-c",)
    assert gce(zones=("us-east1-c", "us-east1-b", "us-east1-d")).zone_order == (
        "us-east1-c",
        "us-east1-b",
        "us-east1-d",
    )
    assert zone_region("europe-west1-b") == "europe-west1"


@pytest.mark.parametrize(
    ("zones_", "message"),
    [
        (("us-east1-c", "us-west1-a"), "'us-west1-a' is not in region us-east1 of zone 'us-east1-c'"),
        (("us-east1-c", "us-east1-b", "us-east1-b"), "'us-east1-b' is listed twice"),
        (("us-east1-b", "us-east1-c"), "['us-east1-b', 'us-east1-c'] must start with zone 'us-east1-c'"),
        (("us-east1-c", "US-EAST1-B"), "'US-EAST1-B' is not a Compute Engine zone"),
    ],
)
def test_zones_rules(zones_: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        gce(zones=zones_)
    (error,) = caught.value.errors()
    assert error["loc"] == ("zones",) and message in error["msg"]
