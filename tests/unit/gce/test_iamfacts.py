"""bakery/gce/iamfacts.py against our code and Google's API descriptions: every Compute method bakery/gce
calls has its permissions listed, every permission has a role, and every schema, field and enum name the
facts use exists in the discovery documents shipped with google-api-python-client."""

from __future__ import annotations

import ast
import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
from google.cloud import compute_v1

from bakery.gce import iamfacts
from bakery.gce.client import ComputeClients
from tests.fakes.discovery import compute_v1 as compute_discovery
from tests.fakes.discovery import load

GCE_PACKAGE = Path(iamfacts.__file__).parent


def client_collections() -> dict[str, type]:
    """ComputeClients' API client fields (``images`` -> ImagesClient), read from the dataclass itself so a
    client added there is scanned too."""
    found: dict[str, type] = {}
    for field in dataclasses.fields(ComputeClients):
        name = str(field.type).rsplit(".", 1)[-1]
        if name.endswith("Client") and hasattr(compute_v1, name):
            found[field.name] = getattr(compute_v1, name)
    return found


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def rest_name(collection: str, method: str) -> str:
    """``instance_templates``, ``aggregated_list`` -> ``instanceTemplates.aggregatedList`` (``*_unary``: the
    same REST method)."""
    return f"{_camel(collection)}.{_camel(method.removesuffix('_unary'))}"


def compute_calls(source: str, collections: dict[str, type]) -> dict[str, list[int]]:
    """REST method -> lines, for every ``X.<collection>.<method>`` in ``source`` whose method is a public
    method of that collection's client class (called, or passed on as ``clients.call``/``mutate`` take it)."""
    calls: dict[str, list[int]] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        client = collections.get(node.value.attr)
        if client is None or node.attr.startswith("_") or not callable(getattr(client, node.attr, None)):
            continue
        calls.setdefault(rest_name(node.value.attr, node.attr), []).append(node.lineno)
    return calls


def missing_permissions(calls: dict[str, list[int]]) -> list[str]:
    return sorted(method for method in calls if method not in iamfacts.METHOD_PERMISSIONS)


# --- our code's calls ------------------------------------------------------------------------------------------


def scan_package(directory: Path) -> dict[str, list[str]]:
    """REST method -> ``file:line`` of every Compute client method referenced in ``directory/*.py``."""
    collections = client_collections()
    calls: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.py")):
        for method, lines in compute_calls(path.read_text(), collections).items():
            calls.setdefault(method, []).extend(f"{path.name}:{line}" for line in lines)
    return calls


def test_every_compute_call_in_bakery_gce_has_its_permissions() -> None:
    assert {"images", "instances", "disks", "zone_operations", "global_operations"} <= set(client_collections())
    calls = scan_package(GCE_PACKAGE)
    # The scanner sees what we know the code calls (a scanner finding nothing would pass vacuously).
    assert {
        "images.insert",
        "images.deprecate",
        "images.setLabels",
        "instances.insert",
        "instances.aggregatedList",
        "disks.aggregatedList",
        "instanceTemplates.aggregatedList",
        "zoneOperations.wait",
        "globalOperations.wait",
    } <= set(calls)
    unknown = {method: calls[method] for method in missing_permissions(calls)}
    assert unknown == {}, f"Compute calls without permissions in iamfacts.METHOD_FACTS: {unknown}"


def test_a_new_call_in_a_copy_of_the_package_fails(tmp_path: Path) -> None:
    for path in GCE_PACKAGE.glob("*.py"):
        (tmp_path / path.name).write_text(path.read_text())
    assert missing_permissions(scan_package(tmp_path)) == []
    with (tmp_path / "instances.py").open("a") as module:
        module.write(
            "\n\ndef suspend(clients, request):\n    clients.mutate('x', clients.instances.suspend_unary, request)\n"
        )
    calls = scan_package(tmp_path)
    assert missing_permissions(calls) == ["instances.suspend"]
    assert calls["instances.suspend"] == [f"instances.py:{len((tmp_path / 'instances.py').read_text().splitlines())}"]


def test_scanner_reports_a_call_with_no_permission() -> None:
    snippet = (
        "def stop(clients):\n"
        "    method = clients.instances.stop_unary\n"
        "    clients.mutate('x', method, request)\n"
        "    clients.images.get(request=r)\n"
        "    instance.disks.append(d)\n"  # not a client method: ignored
    )
    calls = compute_calls(snippet, client_collections())
    assert calls == {"instances.stop": [2], "images.get": [4]}
    assert missing_permissions(calls) == ["instances.stop"]


@pytest.mark.parametrize(
    ("collection", "method", "expected"),
    [
        ("images", "get_from_family", "images.getFromFamily"),
        ("instances", "insert_unary", "instances.insert"),
        ("instances", "get_serial_port_output", "instances.getSerialPortOutput"),
        ("instance_group_managers", "aggregated_list", "instanceGroupManagers.aggregatedList"),
        ("images", "set_labels_unary", "images.setLabels"),
    ],
)
def test_rest_names(collection: str, method: str, expected: str) -> None:
    assert rest_name(collection, method) == expected


def test_every_method_fact_is_a_compute_v1_method() -> None:
    resources = compute_discovery().document["resources"]
    for fact in iamfacts.METHOD_FACTS:
        collection, method = fact.method.split(".")
        assert method in resources[collection]["methods"], fact.method
        assert fact.steps and set(fact.steps) <= set(iamfacts.STEPS), fact


# --- permissions and roles --------------------------------------------------------------------------------------


def all_needs() -> list[iamfacts.Need]:
    return [
        *iamfacts.PROJECT_PERMISSIONS,
        iamfacts.SERVICE_ACCOUNT_NEED,
        iamfacts.IAP_NEED,
        iamfacts.TOPIC_POLICY_NEED,
        iamfacts.PROJECT_POLICY_NEED,
    ]


def test_permissions_are_well_formed() -> None:
    named = {p for perms in iamfacts.ROLE_GRANTS.values() for p in perms}
    named |= {n.permission for n in all_needs()} | iamfacts.PUBLISH_PERMISSIONS
    named |= {p for fact in iamfacts.METHOD_FACTS for p in fact.permissions}
    bad = sorted(p for p in named if not iamfacts.PERMISSION_RE.match(p))
    assert bad == []
    assert not iamfacts.PERMISSION_RE.match("compute.*")
    assert not iamfacts.PERMISSION_RE.match("compute.images")


def test_every_need_has_a_role_and_a_source() -> None:
    for need in all_needs():
        assert need.granted_by, need.permission
        assert need.granted_by == iamfacts.granted_by(need.permission)
        assert iamfacts.role_for(need.permission) == need.granted_by[0]
        assert need.source and need.steps and set(need.steps) <= set(iamfacts.STEPS)


def test_every_method_permission_is_asked_of_the_project() -> None:
    asked = set(iamfacts.permissions_for(iamfacts.STEPS, use_iap=True, external_ip=True))
    assert {p for fact in iamfacts.METHOD_FACTS for p in fact.permissions} <= asked
    assert "iam.serviceAccounts.actAs" not in asked  # asked on each service account instead


def test_role_for_picks_the_narrowest_recommended_role() -> None:
    assert iamfacts.role_for("compute.images.get") == "roles/compute.viewer"
    assert iamfacts.role_for("compute.images.create") == "roles/compute.storageAdmin"
    assert iamfacts.role_for("compute.instances.create") == "roles/compute.instanceAdmin.v1"
    assert iamfacts.role_for("iam.serviceAccounts.actAs") == "roles/iam.serviceAccountUser"
    assert iamfacts.role_for("iap.tunnelInstances.accessViaIAP") == "roles/iap.tunnelResourceAccessor"
    with pytest.raises(KeyError, match=r"no known predefined role grants compute\.instances\.stop"):
        iamfacts.role_for("compute.instances.stop")


def test_a_full_bake_needs_only_the_readme_roles() -> None:
    asked = iamfacts.permissions_for(iamfacts.BAKE_PIPELINE, use_iap=True, external_ip=False)
    readme = {p for role in iamfacts.RECOMMENDED_ROLES for p in iamfacts.ROLE_GRANTS[role]}
    assert set(asked) <= readme


def test_permissions_for_follows_the_configuration() -> None:
    reap = iamfacts.permissions_for(["reap"], use_iap=True, external_ip=True)
    assert reap == [
        "compute.disks.delete",
        "compute.disks.list",
        "compute.globalOperations.get",
        "compute.images.delete",
        "compute.images.list",
        "compute.instances.delete",
        "compute.instances.list",
        "compute.zoneOperations.get",
    ]
    test_step = set(iamfacts.permissions_for(["test"], use_iap=False, external_ip=False, test_service_account=False))
    assert "compute.instances.create" in test_step
    assert "iap.tunnelInstances.accessViaIAP" not in test_step
    assert "compute.subnetworks.useExternalIp" not in test_step
    assert "compute.instances.setServiceAccount" not in test_step
    with_all = set(iamfacts.permissions_for(["test"], use_iap=True, external_ip=True))
    assert with_all - test_step == {
        "iap.tunnelInstances.accessViaIAP",
        "compute.subnetworks.useExternalIp",
        "compute.instances.setServiceAccount",
    }
    # Packer always attaches a service account to the builder.
    bake = iamfacts.permissions_for(["bake"], use_iap=False, external_ip=False, test_service_account=False)
    assert "compute.instances.setServiceAccount" in bake
    assert "compute.images.deprecate" in bake  # Packer's StepCreateImage always calls images.deprecate
    with pytest.raises(ValueError, match="unknown step"):
        iamfacts.permissions_for(["bakee"], use_iap=False, external_ip=False)  # type: ignore[list-item]


def test_permission_batches() -> None:
    perms = [f"compute.images.p{i}" for i in range(iamfacts.MAX_PERMISSIONS_PER_TEST + 1)]
    batches = iamfacts.permission_batches(perms)
    assert [len(b) for b in batches] == [iamfacts.MAX_PERMISSIONS_PER_TEST, 1]
    assert [p for b in batches for p in b] == perms


def test_test_iam_permissions_request_takes_a_list_of_permissions() -> None:
    for version in ("v1", "v3"):
        document = load(f"cloudresourcemanager.{version}").document
        assert "testIamPermissions" in document["resources"]["projects"]["methods"]
        field = document["schemas"]["TestIamPermissionsRequest"]["properties"]["permissions"]
        assert field["type"] == "array" and "wildcards" in field["description"]


# --- Pub/Sub -------------------------------------------------------------------------------------------------


def test_topic_roles() -> None:
    for role, granted in iamfacts.TOPIC_ROLES.items():
        assert re.match(r"^roles/[a-z]+(\.[a-zA-Z0-9]+)?$", role), role
        assert granted and granted <= iamfacts.PUBLISH_PERMISSIONS, role
    assert not iamfacts.may_publish(["roles/pubsub.publisher"])  # the lookup needs pubsub.topics.get
    assert not iamfacts.may_publish(["roles/pubsub.viewer"])
    assert not iamfacts.may_publish(["roles/pubsub.subscriber", "projects/p/roles/custom"])
    assert iamfacts.may_publish(["roles/pubsub.publisher", "roles/pubsub.viewer"])
    assert iamfacts.may_publish(["roles/pubsub.editor"])
    assert iamfacts.may_publish(iamfacts.PUBLISHER_ROLES)
    assert all(not iamfacts.may_publish([role]) for role in iamfacts.PUBLISHER_ROLES)
    assert set(iamfacts.PUBLISHER_PERMISSIONS) == iamfacts.PUBLISH_PERMISSIONS
    assert iamfacts.topic_permissions(["roles/viewer"]) == {"pubsub.topics.get"}


def test_pubsub_methods_exist() -> None:
    topics = load("pubsub.v1").document["resources"]["projects"]["resources"]["topics"]["methods"]
    assert {"get", "publish", "getIamPolicy"} <= set(topics)


# --- network -------------------------------------------------------------------------------------------------


def test_network_facts_name_real_fields_and_values() -> None:
    schemas = compute_discovery().schemas
    assert iamfacts.PRIVATE_GOOGLE_ACCESS_FIELD in schemas["Subnetwork"]["properties"]
    nat = schemas["RouterNat"]["properties"]
    assert set(nat["sourceSubnetworkIpRangesToNat"]["enum"]) == {
        *iamfacts.NAT_ALL_SUBNETWORKS,
        iamfacts.NAT_LIST_OF_SUBNETWORKS,
    }
    assert iamfacts.NAT_PUBLIC in nat["type"]["enum"]
    assert schemas["Router"]["properties"]["nats"]["items"]["$ref"] == "RouterNat"
    assert nat["subnetworks"]["items"]["$ref"] == "RouterNatSubnetworkToNat"
    per_subnet = schemas["RouterNatSubnetworkToNat"]["properties"]
    assert "name" in per_subnet
    assert set(per_subnet["sourceIpRangesToNat"]["items"]["enum"]) >= iamfacts.NAT_PRIMARY_RANGE_OPTIONS
    network = ipaddress.ip_network(iamfacts.IAP_SOURCE_RANGE)
    assert network.prefixlen == 20 and not network.is_private


SUBNET = "https://www.googleapis.com/compute/v1/projects/p/regions/europe-west1/subnetworks/bake"


def _nat(**fields: object) -> dict[str, object]:
    """A RouterNat built with the real client's message, as the doctor would get it, in JSON names, and
    checked against the discovery document."""
    nat = compute_v1.RouterNat(name="nat", **fields)
    as_json = compute_v1.RouterNat.to_dict(nat, preserving_proto_field_name=False)
    assert compute_discovery().validate(as_json, "RouterNat") == []
    return as_json


def _entry(name: str, *ranges: str) -> compute_v1.RouterNatSubnetworkToNat:
    return compute_v1.RouterNatSubnetworkToNat(name=name, source_ip_ranges_to_nat=list(ranges))


@pytest.mark.parametrize(
    ("fields", "covered"),
    [
        ({"source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_IP_RANGES"}, True),
        ({"source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES"}, True),
        (
            {"source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_IP_RANGES", "type_": "PRIVATE"},
            False,
        ),
        (
            {"source_subnetwork_ip_ranges_to_nat": "LIST_OF_SUBNETWORKS", "subnetworks": [_entry(SUBNET)]},
            True,
        ),
        (
            {
                "source_subnetwork_ip_ranges_to_nat": "LIST_OF_SUBNETWORKS",
                "subnetworks": [_entry("projects/p/regions/europe-west1/subnetworks/bake", "PRIMARY_IP_RANGE")],
            },
            True,
        ),
        (
            {
                "source_subnetwork_ip_ranges_to_nat": "LIST_OF_SUBNETWORKS",
                "subnetworks": [_entry(SUBNET, "LIST_OF_SECONDARY_IP_RANGES")],
            },
            False,
        ),
        (
            {
                "source_subnetwork_ip_ranges_to_nat": "LIST_OF_SUBNETWORKS",
                "subnetworks": [_entry(SUBNET.replace("/bake", "/other"))],
            },
            False,
        ),
        ({}, False),
    ],
)
def test_nat_covers(fields: dict[str, object], covered: bool) -> None:
    assert iamfacts.nat_covers(_nat(**fields), SUBNET) is covered
    # The client's message as the doctor reads it from routers.list, and the subnetwork as configured.
    message = compute_v1.RouterNat(name="nat", **fields)
    assert iamfacts.nat_covers(message, SUBNET) is covered
    assert iamfacts.nat_covers(message, "bake") is covered
    assert iamfacts.nat_covers(message, "projects/p/regions/europe-west1/subnetworks/bake") is covered


def test_only_an_all_subnetworks_nat_covers_an_unnamed_subnetwork() -> None:
    listed = compute_v1.RouterNat(
        source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS", subnetworks=[_entry(SUBNET)]
    )
    assert not iamfacts.nat_covers(listed, "")
    assert iamfacts.nat_covers(
        compute_v1.RouterNat(source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES"), ""
    )
    assert not iamfacts.nat_covers(listed, "other")


# --- quotas --------------------------------------------------------------------------------------------------


def test_quota_metrics_are_in_the_discovery_enum() -> None:
    metrics = set(compute_discovery().schemas["Quota"]["properties"]["metric"]["enum"])
    named = {
        *iamfacts.CPU_QUOTA_BY_SERIES.values(),
        *iamfacts.DISK_QUOTA_BY_TYPE.values(),
        iamfacts.INSTANCES_QUOTA,
        iamfacts.EXTERNAL_IP_QUOTA,
        iamfacts.IMAGES_QUOTA,
        iamfacts.ALL_REGIONS_CPU_QUOTA,
    }
    assert named - metrics == set()
    assert "BOGUS_CPUS" not in metrics  # the enum is a real constraint


def test_disk_types_are_the_configs() -> None:
    from bakery.config import GceSettings

    allowed = GceSettings.model_fields["disk_type"].annotation
    assert set(iamfacts.DISK_QUOTA_BY_TYPE) == set(allowed.__args__)  # type: ignore[union-attr]


def test_quota_needs() -> None:
    assert iamfacts.quota_needs(2, "pd-balanced", 20) == {"CPUS": 2.0, "SSD_TOTAL_GB": 20.0, "INSTANCES": 1.0}
    assert iamfacts.quota_needs(4, "pd-standard", 30, 2, machine_type="n2-standard-4", external_ip=True) == {
        "N2_CPUS": 8.0,
        "DISKS_TOTAL_GB": 60.0,
        "INSTANCES": 2.0,
        "IN_USE_ADDRESSES": 2.0,
    }
    assert iamfacts.project_quota_needs(2) == {"IMAGES": 2.0, "CPUS_ALL_REGIONS": 2.0}
    with pytest.raises(KeyError, match="disk type 'pd-extreme'"):
        iamfacts.quota_needs(2, "pd-extreme", 20)
    with pytest.raises(KeyError, match="series 'z9'"):
        iamfacts.cpu_quota_metric("z9-standard-2")


def test_the_builder_always_has_a_service_account() -> None:
    assert iamfacts.builder_service_account("b@p.iam.gserviceaccount.com", "123") == "b@p.iam.gserviceaccount.com"
    assert iamfacts.builder_service_account("", "123") == "123-compute@developer.gserviceaccount.com"
