"""The fake Compute API itself, driven through the real google-cloud-compute client: Google's error
shapes, validation, fingerprints, filters, paging, request-id dedup, instances, zonal operations, and
the discovery validator failing a malformed response."""

from __future__ import annotations

import json
import urllib.request

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from bakery.errors import RegistryError
from bakery.gce.client import ComputeApiError, ComputeClients
from bakery.gce.store import GceImageStore
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, ZONE

BASE = "debian-12-base"


def insert(clients: ComputeClients, name: str, **fields: object) -> compute_v1.Operation:
    image = compute_v1.Image(name=name, source_image=f"global/images/{BASE}", **fields)
    return clients.images.insert_unary(project=PROJECT, image_resource=image, timeout=5, retry=None)


def test_error_bodies_have_google_s_shape(fake: FakeCompute) -> None:
    url = f"{fake.endpoint}/compute/v1/projects/{PROJECT}/global/images/missing"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=5)
    assert caught.value.code == 404
    assert json.loads(caught.value.read()) == {
        "error": {
            "code": 404,
            "message": f"The resource 'projects/{PROJECT}/global/images/missing' was not found",
            "errors": [
                {
                    "domain": "global",
                    "reason": "notFound",
                    "message": f"The resource 'projects/{PROJECT}/global/images/missing' was not found",
                }
            ],
        }
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Bad_Name"}, "Invalid value for field 'resource.name': 'Bad_Name'"),
        ({"name": "ok", "family": "-x"}, "Invalid value for field 'resource.family'"),
        ({"name": "ok", "labels": {"Key": "v"}}, "Invalid value for field 'resource.labels'"),
    ],
)
def test_invalid_names_and_labels_are_400(clients: ComputeClients, fields: dict[str, object], message: str) -> None:
    name = str(fields.pop("name"))
    with pytest.raises(api_exceptions.BadRequest, match=message) as caught:
        insert(clients, name, **fields)
    assert caught.value.errors[0]["reason"] == "invalid"


def test_set_labels_checks_the_fingerprint(clients: ComputeClients) -> None:
    insert(clients, "img-1", labels={"a": "1"})
    image = clients.images.get(project=PROJECT, image="img-1", timeout=5)
    request = compute_v1.GlobalSetLabelsRequest(labels={"a": "2"}, label_fingerprint=image.label_fingerprint)
    clients.images.set_labels_unary(
        project=PROJECT, resource="img-1", global_set_labels_request_resource=request, timeout=5
    )
    with pytest.raises(api_exceptions.PreconditionFailed) as caught:  # the same, now stale, fingerprint
        clients.images.set_labels_unary(
            project=PROJECT, resource="img-1", global_set_labels_request_resource=request, timeout=5
        )
    assert caught.value.errors[0]["reason"] == "conditionNotMet"
    updated = clients.images.get(project=PROJECT, image="img-1", timeout=5)
    assert dict(updated.labels) == {"a": "2"} and updated.label_fingerprint != image.label_fingerprint


def test_list_filters_and_pages(clients: ComputeClients) -> None:
    for index in range(5):
        insert(clients, f"img-{index}", family="fam" if index % 2 else "other", labels={"n": str(index)})

    def names(filter_: str, max_results: int = 500) -> list[str]:
        request = compute_v1.ListImagesRequest(project=PROJECT, filter=filter_, max_results=max_results)
        return [i.name for i in clients.images.list(request=request, timeout=5)]  # follows nextPageToken

    assert names('family = "fam"', max_results=1) == ["img-1", "img-3"]
    assert names('labels.n = "4"') == ["img-4"]
    assert names('name = "img-0"') == ["img-0"]
    with pytest.raises(api_exceptions.BadRequest, match="Invalid list filter expression"):
        names("family != fam")


def test_same_request_id_gives_the_same_operation_and_one_insert(clients: ComputeClients, fake: FakeCompute) -> None:
    image = compute_v1.Image(name="img-1", source_image=f"global/images/{BASE}")
    request = compute_v1.InsertImageRequest(
        project=PROJECT, image_resource=image, request_id="4e5b0c1c-0000-4000-8000-000000000001"
    )
    first = clients.images.insert_unary(request=request, timeout=5)
    second = clients.images.insert_unary(request=request, timeout=5)
    assert first.name == second.name and second.client_operation_id == request.request_id
    request.request_id = "4e5b0c1c-0000-4000-8000-000000000002"
    with pytest.raises(api_exceptions.Conflict):
        clients.images.insert_unary(request=request, timeout=5)
    assert sorted(fake.images) == [BASE, "img-1"]


def test_store_retry_of_a_slow_insert_is_deduplicated(clients: ComputeClients, fake: FakeCompute) -> None:
    store = GceImageStore(
        ComputeClients.create(PROJECT, ZONE, endpoint=fake.endpoint, timeout=0.2, retry=clients.retry)
    )
    fake.inject("compute.images.insert", delay=0.4)  # carried out, but the answer comes after the timeout
    store.insert("img-1", "fam", BASE, labels={}, description="")
    calls = fake.calls_of("compute.images.insert")
    assert len(calls) == 2 and calls[0].query["requestId"] == calls[1].query["requestId"]
    assert len(fake.operations) == 1


def test_failed_operation_carries_google_s_error_fields(clients: ComputeClients, fake: FakeCompute) -> None:
    fake.op_polls = 2
    fake.inject("compute.images.insert", op_error=("QUOTA_EXCEEDED", "Quota 'IMAGES' exceeded.", 403))
    operation = insert(clients, "img-1")
    assert operation.status == compute_v1.Operation.Status.PENDING
    done = clients.global_operations.wait(project=PROJECT, operation=operation.name, timeout=5)
    done = clients.global_operations.wait(project=PROJECT, operation=operation.name, timeout=5)
    assert done.status == compute_v1.Operation.Status.DONE
    assert (done.http_error_status_code, done.http_error_message) == (403, "FORBIDDEN")
    assert [(e.code, e.message) for e in done.error.errors] == [("QUOTA_EXCEEDED", "Quota 'IMAGES' exceeded.")]
    assert "img-1" not in fake.images


def test_instances_zonal_operations_serial_port_and_aggregated_list(clients: ComputeClients, fake: FakeCompute) -> None:
    fake.op_polls = 2
    fake.instance_ips["vm-1"] = "127.0.0.2"
    fake.serial_output["vm-1"] = "boot...\nosquery ready\n"
    instance = compute_v1.Instance(
        name="vm-1",
        machine_type=f"zones/{ZONE}/machineTypes/e2-small",
        labels={"role": "image-test"},
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"global/images/{BASE}"),
            )
        ],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
    )
    request = compute_v1.InsertInstanceRequest(project=PROJECT, zone=ZONE, instance_resource=instance)
    operation = clients.mutate("instance 'vm-1'", clients.instances.insert_unary, request)
    assert operation.zone.endswith(f"/zones/{ZONE}")
    assert len(fake.calls_of("compute.zoneOperations.wait")) == 2
    got = clients.instances.get(project=PROJECT, zone=ZONE, instance="vm-1", timeout=5)
    assert got.status == "RUNNING" and got.network_interfaces[0].network_i_p == "127.0.0.2"
    serial_request = compute_v1.GetSerialPortOutputInstanceRequest(project=PROJECT, zone=ZONE, instance="vm-1", start=8)
    serial = clients.instances.get_serial_port_output(request=serial_request, timeout=5)
    assert (serial.contents, serial.next_) == ("osquery ready\n", 22)
    aggregated = dict(clients.instances.aggregated_list(project=PROJECT, timeout=5))
    assert [i.name for i in aggregated[f"zones/{ZONE}"].instances] == ["vm-1"]
    assert [i.name for i in clients.instances.list(project=PROJECT, zone=ZONE, timeout=5)] == ["vm-1"]
    delete = compute_v1.DeleteInstanceRequest(project=PROJECT, zone=ZONE, instance="vm-1")
    clients.mutate("instance 'vm-1'", clients.instances.delete_unary, delete)
    with pytest.raises(ComputeApiError, match=rf"^instance 'vm-1' not found in project {PROJECT}$"):
        clients.call(
            "instance 'vm-1'",
            clients.instances.get,
            compute_v1.GetInstanceRequest(project=PROJECT, zone=ZONE, instance="vm-1"),
        )


def test_instance_templates_are_seedable(clients: ComputeClients, fake: FakeCompute) -> None:
    fake.seed_template("web", f"projects/{PROJECT}/global/images/{BASE}")
    template = clients.instance_templates.get(project=PROJECT, instance_template="web", timeout=5)
    assert template.properties.disks[0].initialize_params.source_image.endswith(BASE)


def test_the_validator_fails_a_malformed_response(store: GceImageStore, fake: FakeCompute) -> None:
    fake.inject("compute.images.get", corrupt=lambda image: {**image, "sizeGb": "10"})
    fake.inject("compute.images.get", corrupt=lambda image: {**image, "diskSizeGb": 10})
    for _ in range(2):
        with pytest.raises(
            RegistryError, match=r"rejected the request for image 'debian-12-base': 400 .*: fake: discovery"
        ):
            store.get(BASE)
    assert fake.violations == [
        "Image: unknown property 'sizeGb'",
        "Image.diskSizeGb: 10 is not a valid string (int64)",
    ]
    fake.violations.clear()  # proven; let the fixture's teardown pass
