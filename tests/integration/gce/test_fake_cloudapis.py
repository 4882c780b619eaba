"""The fakes ``invoke doctor`` reads (Compute network/project/capacity reads, Resource Manager v3, IAM v1,
Pub/Sub v1), driven through Google's real client libraries at the one fake endpoint: answers, Google's
error shapes and the api_core exceptions they become, injected faults, and the discovery validator
failing corrupted responses and unknown query parameters."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import google.auth.credentials
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1, resourcemanager_v3
from google.iam.v1 import iam_policy_pb2
from google.pubsub_v1 import PublisherClient
from googleapiclient import discovery as api_discovery
from googleapiclient import errors as api_errors

from tests.fakes.base import project_number
from tests.fakes.compute import FakeCompute
from tests.fakes.discovery import Discovery
from tests.integration.gce.gce_env import PROJECT

REGION, ZONE = "us-east1", "us-east1-b"
TOPIC = f"projects/{PROJECT}/topics/bake-runs"
SA = f"packer@{PROJECT}.iam.gserviceaccount.com"
PUBLISHER = "serviceAccount:publisher@other-proj.iam.gserviceaccount.com"


def kwargs(fake: FakeCompute) -> dict[str, Any]:
    """What bakery's ``client_kwargs`` gives a client for a local fake: REST, the endpoint, anonymous."""
    credentials = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    return {"credentials": credentials, "transport": "rest", "client_options": {"api_endpoint": fake.endpoint}}


def iam_client(fake: FakeCompute) -> Any:
    """IAM through google-api-python-client's discovery client, as bakery/gce/cloud.py builds it
    (google-cloud-iam 2.27.0's IAMClient has no REST transport)."""
    return api_discovery.build(
        "iam",
        "v1",
        credentials=google.auth.credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": fake.endpoint},
        static_discovery=True,
    )


def raw(fake: FakeCompute, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(fake.endpoint + path, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- Compute -------------------------------------------------------------------------------------------


def test_network_reads(fake: FakeCompute) -> None:
    fake.seed_network("bake-net")
    fake.seed_subnetwork(REGION, "bake-sub", network="bake-net", private_google_access=False)
    fake.seed_firewall("allow-iap", network="bake-net", source_ranges=["35.235.240.0/20"])
    fake.seed_firewall(
        "deny-all", network="bake-net", source_ranges=["0.0.0.0/0"], allowed=[("all", ())], disabled=True
    )
    fake.seed_router(REGION, "nat-router", network="bake-net")
    fake.seed_router(REGION, "plain-router", network="bake-net", nat=False)
    network = compute_v1.NetworksClient(**kwargs(fake)).get(project=PROJECT, network="bake-net", timeout=5)
    assert network.subnetworks == [
        f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/regions/{REGION}/subnetworks/bake-sub"
    ]
    subnet = compute_v1.SubnetworksClient(**kwargs(fake)).get(
        project=PROJECT, region=REGION, subnetwork="bake-sub", timeout=5
    )
    assert (subnet.ip_cidr_range, subnet.private_ip_google_access) == ("10.0.0.0/24", False)
    assert subnet.network.endswith("/global/networks/bake-net")
    request = compute_v1.ListFirewallsRequest(project=PROJECT, max_results=1)
    rules = list(compute_v1.FirewallsClient(**kwargs(fake)).list(request=request, timeout=5))
    assert [(r.name, r.disabled, [(a.I_p_protocol, list(a.ports)) for a in r.allowed]) for r in rules] == [
        ("allow-iap", False, [("tcp", ["22"])]),
        ("deny-all", True, [("all", [])]),
    ]
    assert rules[0].source_ranges == ["35.235.240.0/20"] and rules[0].direction == "INGRESS"
    assert len(fake.calls_of("compute.firewalls.list")) == 2  # paged: one rule per page
    routers = list(compute_v1.RoutersClient(**kwargs(fake)).list(project=PROJECT, region=REGION, timeout=5))
    assert [
        (r.name, [(n.source_subnetwork_ip_ranges_to_nat, n.nat_ip_allocate_option) for n in r.nats]) for r in routers
    ] == [
        ("nat-router", [("ALL_SUBNETWORKS_ALL_IP_RANGES", "AUTO_ONLY")]),
        ("plain-router", []),
    ]
    assert list(compute_v1.RoutersClient(**kwargs(fake)).list(project=PROJECT, region="europe-west1", timeout=5)) == []
    with pytest.raises(api_exceptions.NotFound, match=f"projects/{PROJECT}/global/networks/missing' was not found"):
        compute_v1.NetworksClient(**kwargs(fake)).get(project=PROJECT, network="missing", timeout=5)
    with pytest.raises(api_exceptions.NotFound):
        compute_v1.SubnetworksClient(**kwargs(fake)).get(
            project=PROJECT, region="europe-west1", subnetwork="bake-sub", timeout=5
        )


def test_project_metadata_and_quotas(fake: FakeCompute) -> None:
    fake.project_metadata["enable-oslogin"] = "TRUE"
    fake.set_quota("IMAGES", limit=10, usage=9)
    project = compute_v1.ProjectsClient(**kwargs(fake)).get(project=PROJECT, timeout=5)
    assert project.id == int(project_number(PROJECT))
    assert {i.key: i.value for i in project.common_instance_metadata.items} == {"enable-oslogin": "TRUE"}
    assert {q.metric: (q.limit, q.usage) for q in project.quotas} == {
        "IMAGES": (10.0, 9.0),
        "FIREWALLS": (200.0, 0.0),
        "NETWORKS": (5.0, 0.0),
    }
    with pytest.raises(ValueError, match="not a Compute quota metric"):
        fake.set_quota("CPU", limit=1)


def test_regions_zones_and_machine_types(fake: FakeCompute) -> None:
    fake.set_quota("CPUS", limit=4, usage=3, region=REGION)
    fake.zone_status["us-east1-c"] = "DOWN"
    fake.unavailable_machine_types.add(("us-east1-c", "n2-standard-4"))
    region = compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region=REGION, timeout=5)
    assert region.status == "UP" and [z.rsplit("/", 1)[1] for z in region.zones] == [
        "us-east1-b",
        "us-east1-c",
        "us-east1-d",
    ]
    assert {q.metric: (q.limit, q.usage) for q in region.quotas}["CPUS"] == (4.0, 3.0)
    other = compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region="europe-west1", timeout=5)
    assert {q.metric: q.limit for q in other.quotas} == {
        "CPUS": 24.0,
        "DISKS_TOTAL_GB": 4096.0,
        "IN_USE_ADDRESSES": 8.0,
        "INSTANCES": 24.0,
        "SSD_TOTAL_GB": 500.0,
    }
    zones = compute_v1.ZonesClient(**kwargs(fake))
    assert [zones.get(project=PROJECT, zone=z, timeout=5).status for z in ("us-east1-b", "us-east1-c")] == [
        "UP",
        "DOWN",
    ]
    types = compute_v1.MachineTypesClient(**kwargs(fake))
    sizes = {
        t: types.get(project=PROJECT, zone=ZONE, machine_type=t, timeout=5)
        for t in ("e2-standard-2", "e2-medium", "n2-standard-4")
    }
    assert {t: (m.guest_cpus, m.memory_mb) for t, m in sizes.items()} == {
        "e2-standard-2": (2, 8192),
        "e2-medium": (2, 4096),
        "n2-standard-4": (4, 16384),
    }
    for zone, machine_type in (("us-east1-c", "n2-standard-4"), (ZONE, "e2-imaginary-3")):
        with pytest.raises(api_exceptions.NotFound, match=f"zones/{zone}/machineTypes/{machine_type}' was not found"):
            types.get(project=PROJECT, zone=zone, machine_type=machine_type, timeout=5)
    with pytest.raises(api_exceptions.NotFound):
        compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region="mars", timeout=5)
    with pytest.raises(api_exceptions.NotFound):
        zones.get(project=PROJECT, zone="us-east1", timeout=5)


def test_disabled_compute_api_answers_google_s_403(fake: FakeCompute) -> None:
    fake.api_disabled = True
    number = project_number(PROJECT)
    with pytest.raises(api_exceptions.Forbidden) as caught:
        compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region=REGION, timeout=5, retry=None)
    url = f"https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project={number}"
    assert (  # the client prefixes the message with the request's verb and URL
        f": Compute Engine API has not been used in project {number} before or it is disabled. Enable it by "
        f"visiting {url} then retry." in caught.value.message
    )
    assert caught.value.errors[0]["reason"] == "accessNotConfigured" and caught.value.reason == "SERVICE_DISABLED"
    with pytest.raises(api_exceptions.Forbidden):  # every Compute call, public images too
        compute_v1.ImagesClient(**kwargs(fake)).get_from_family(project="debian-cloud", family="debian-12", timeout=5)
    fake.api_disabled = False
    assert compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region=REGION, timeout=5).status == "UP"


# --- Resource Manager v3 -----------------------------------------------------------------------------


def test_resource_manager_project_permissions_and_policy(fake: FakeCompute) -> None:
    client = resourcemanager_v3.ProjectsClient(**kwargs(fake))
    project = client.get_project(name=f"projects/{PROJECT}", timeout=5)
    assert (project.name, project.project_id, project.state.name) == (
        f"projects/{project_number(PROJECT)}",
        PROJECT,
        "ACTIVE",
    )
    assert client.get_project(name=project.name, timeout=5).project_id == PROJECT  # by number too
    fake.resourcemanager.denied.add("compute.images.create")
    asked = ["compute.images.create", "compute.images.get"]
    request = iam_policy_pb2.TestIamPermissionsRequest(resource=f"projects/{PROJECT}", permissions=asked)
    assert list(client.test_iam_permissions(request=request, timeout=5).permissions) == ["compute.images.get"]
    fake.resourcemanager.denied.add("compute.images.get")
    assert list(client.test_iam_permissions(request=request, timeout=5).permissions) == []
    with pytest.raises(api_exceptions.BadRequest, match="wildcards"):
        client.test_iam_permissions(
            request=iam_policy_pb2.TestIamPermissionsRequest(resource=f"projects/{PROJECT}", permissions=["compute.*"]),
            timeout=5,
        )
    fake.resourcemanager.bindings[PROJECT] = {"roles/pubsub.publisher": [PUBLISHER]}
    policy = client.get_iam_policy(
        request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"), timeout=5
    )
    assert [(b.role, list(b.members)) for b in policy.bindings] == [("roles/pubsub.publisher", [PUBLISHER])]
    fake.resourcemanager.policy_unreadable.add(PROJECT)
    with pytest.raises(api_exceptions.Forbidden, match="The caller does not have permission"):
        client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"), timeout=5)


def test_unknown_project_is_forbidden_not_found(fake: FakeCompute) -> None:
    client = resourcemanager_v3.ProjectsClient(**kwargs(fake))
    with pytest.raises(api_exceptions.Forbidden) as caught:
        client.get_project(name="projects/no-such-project", timeout=5, retry=None)
    # Over REST, api_core picks the class from the HTTP status: Forbidden, never its gRPC subclass.
    assert not isinstance(caught.value, api_exceptions.PermissionDenied)
    assert caught.value.message.endswith(
        ": Permission 'resourcemanager.projects.get' denied on resource "
        "'//cloudresourcemanager.googleapis.com/projects/no-such-project' (or it may not exist)."
    )
    assert raw(fake, "/v3/projects/no-such-project")[1]["error"]["status"] == "PERMISSION_DENIED"
    fake.add_project("fleet-2")
    assert client.get_project(name="projects/fleet-2", timeout=5).state.name == "ACTIVE"


# --- Pub/Sub v1 --------------------------------------------------------------------------------------


def test_pubsub_topic_permissions_and_policy(fake: FakeCompute) -> None:
    fake.pubsub.seed_topic(
        PROJECT, "bake-runs", bindings={"roles/pubsub.publisher": [PUBLISHER]}, denied={"pubsub.topics.publish"}
    )
    fake.pubsub.seed_topic(PROJECT, "empty")
    client = PublisherClient(**kwargs(fake))
    assert client.get_topic(topic=TOPIC, timeout=5).name == TOPIC
    asked = ["pubsub.topics.publish", "pubsub.topics.get"]
    answer = client.test_iam_permissions(request={"resource": TOPIC, "permissions": asked}, timeout=5)
    assert list(answer.permissions) == ["pubsub.topics.get"]
    with pytest.raises(api_exceptions.BadRequest, match="not valid for this resource"):
        client.test_iam_permissions(request={"resource": TOPIC, "permissions": ["compute.images.get"]}, timeout=5)
    policy = client.get_iam_policy(request={"resource": TOPIC}, timeout=5)
    assert [(b.role, list(b.members)) for b in policy.bindings] == [("roles/pubsub.publisher", [PUBLISHER])]
    empty = client.get_iam_policy(request={"resource": f"projects/{PROJECT}/topics/empty"}, timeout=5)
    assert list(empty.bindings) == [] and empty.etag == b"\x00\x20\x01"  # base64 "ACAB"
    with pytest.raises(api_exceptions.NotFound, match=r"Resource not found \(resource=gone\)\."):
        client.get_topic(topic=f"projects/{PROJECT}/topics/gone", timeout=5, retry=None)
    with pytest.raises(api_exceptions.NotFound):
        client.get_iam_policy(request={"resource": f"projects/{PROJECT}/topics/gone"}, timeout=5)


def test_error_bodies_have_the_aip_193_shape(fake: FakeCompute) -> None:
    assert raw(fake, f"/v1/projects/{PROJECT}/topics/gone") == (
        404,
        {"error": {"code": 404, "message": "Resource not found (resource=gone).", "status": "NOT_FOUND"}},
    )


# --- IAM v1 ------------------------------------------------------------------------------------------


def test_iam_service_accounts(fake: FakeCompute) -> None:
    fake.iam.seed_service_account(SA, act_as=False)
    fake.iam.seed_service_account("runner@bakery-test.iam.gserviceaccount.com")
    accounts = iam_client(fake).projects().serviceAccounts()
    got = accounts.get(name=f"projects/-/serviceAccounts/{SA}").execute(num_retries=0)
    assert (got["email"], got["projectId"], got["name"]) == (SA, PROJECT, f"projects/{PROJECT}/serviceAccounts/{SA}")
    assert accounts.get(name=f"projects/{PROJECT}/serviceAccounts/{got['uniqueId']}").execute()["email"] == SA
    asked = {"permissions": ["iam.serviceAccounts.actAs", "iam.serviceAccounts.get"]}
    denied = accounts.testIamPermissions(resource=f"projects/-/serviceAccounts/{SA}", body=asked).execute()
    allowed = accounts.testIamPermissions(
        resource="projects/-/serviceAccounts/runner@bakery-test.iam.gserviceaccount.com", body=asked
    ).execute()
    assert (denied, allowed) == ({"permissions": ["iam.serviceAccounts.get"]}, asked)
    for name in (
        f"projects/-/serviceAccounts/nobody@{PROJECT}.iam.gserviceaccount.com",
        f"projects/other-proj/serviceAccounts/{SA}",
    ):
        with pytest.raises(api_errors.HttpError) as caught:
            accounts.get(name=name).execute(num_retries=0)
        assert caught.value.status_code == 404
        assert json.loads(caught.value.content)["error"] == {
            "code": 404,
            "message": f"Service account {name} does not exist.",
            "status": "NOT_FOUND",
        }


# --- validation and faults ---------------------------------------------------------------------------


def test_corrupt_responses_are_violations_and_400s(fake: FakeCompute) -> None:
    fake.pubsub.seed_topic(PROJECT, "bake-runs")
    fake.inject("compute.regions.get", corrupt=lambda region: {**region, "status": "SIDEWAYS"})
    fake.resourcemanager.inject("cloudresourcemanager.projects.get", corrupt=lambda p: {**p, "owner": "me"})
    fake.pubsub.inject("pubsub.projects.topics.get", corrupt=lambda t: {**t, "labels": ["not", "a", "map"]})
    fake.iam.seed_service_account(SA)
    fake.iam.inject("iam.projects.serviceAccounts.get", corrupt=lambda a: {**a, "disabled": "no"})
    with pytest.raises(api_exceptions.BadRequest, match="schema violation"):
        compute_v1.RegionsClient(**kwargs(fake)).get(project=PROJECT, region=REGION, timeout=5)
    with pytest.raises(api_exceptions.BadRequest, match="schema violation"):
        resourcemanager_v3.ProjectsClient(**kwargs(fake)).get_project(name=f"projects/{PROJECT}", timeout=5)
    with pytest.raises(api_exceptions.BadRequest, match="schema violation"):
        PublisherClient(**kwargs(fake)).get_topic(topic=TOPIC, timeout=5)
    with pytest.raises(api_errors.HttpError):
        iam_client(fake).projects().serviceAccounts().get(name=f"projects/-/serviceAccounts/{SA}").execute(
            num_retries=0
        )
    assert raw(fake, f"/v1/{TOPIC}?bogus=1")[0] == 400
    assert raw(fake, f"/v1/{TOPIC}:publishEverything")[0] == 404
    assert fake.violations == [
        "Region.status: 'SIDEWAYS' is not one of ['DOWN', 'UP']",
        "Project: unknown property 'owner'",
        "Topic.labels: expected an object, got list",
        "ServiceAccount.disabled: 'no' is not a valid boolean",
        "pubsub.projects.topics.get: unknown query parameter 'bogus'",
        f"no such method: GET /v1/{TOPIC}:publishEverything",
    ]
    fake.violations.clear()  # proven; let the fixture's teardown pass


def test_injected_faults(fake: FakeCompute) -> None:
    fake.pubsub.seed_topic(PROJECT, "bake-runs")
    fake.resourcemanager.inject("cloudresourcemanager.projects.get", 503, times=2)
    fake.pubsub.inject("pubsub.projects.topics.get", 403)
    fake.inject("compute.machineTypes.get", 500)
    client = resourcemanager_v3.ProjectsClient(**kwargs(fake))
    for _ in range(2):
        with pytest.raises(api_exceptions.ServiceUnavailable):
            client.get_project(name=f"projects/{PROJECT}", timeout=5, retry=None)
    assert client.get_project(name=f"projects/{PROJECT}", timeout=5).project_id == PROJECT
    with pytest.raises(api_exceptions.Forbidden, match="injected 403"):
        PublisherClient(**kwargs(fake)).get_topic(topic=TOPIC, timeout=5, retry=None)
    with pytest.raises(api_exceptions.InternalServerError):
        compute_v1.MachineTypesClient(**kwargs(fake)).get(
            project=PROJECT, zone=ZONE, machine_type="e2-medium", timeout=5, retry=None
        )
    with pytest.raises(ValueError, match="does not implement"):
        fake.pubsub.inject("pubsub.projects.topics.publish", 500)
    assert len(fake.resourcemanager.calls_of("cloudresourcemanager.projects.get")) == 3


def test_reserved_expansion_and_flat_path_routing() -> None:
    """``{+name}`` spans segments; without a pattern the flatPath decides (a synthetic document)."""
    method = {"httpMethod": "GET", "id": "x.things.get", "path": "v1/{+name}", "flatPath": "v1/things/{thingsId}"}
    document = {"servicePath": "", "schemas": {}, "resources": {"things": {"methods": {"get": method}}}}
    get = Discovery(document).method("things", "get")
    assert get.match("/v1/things/a%40b") == {"name": "things/a%40b"}
    assert get.match("/v1/things/a/b") is None and get.match("/v1/other/a") is None
