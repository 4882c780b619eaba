"""Pure parts of the GCE target: names, labels, the test instance resource, ssh_config (internal and IAP),
and the reaper's expiry rule, each against an exact expectation (retention's rule: test_local_images.py)."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
from google.cloud import compute_v1

from bakery.config import GCE_NAME_RE, LABEL_VALUE_RE, GceSettings
from bakery.errors import VMError
from bakery.gce import instances, reaper
from bakery.gce.target import candidate_name, expires_label, new_run_id

NOW = datetime.datetime(2026, 11, 27, 16, 0, 0, tzinfo=datetime.UTC)
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyKeyKey bakery-test@run\n"


def settings(**overrides: object) -> GceSettings:
    return GceSettings.model_validate({"project": "gitlab-staging-1", "zone": "us-east1-c", **overrides})


@pytest.mark.parametrize(
    ("family", "image", "expected"),
    [
        ("gl-osquery-debian-12-candidate", "gl-osquery-debian-12-20261127-160000-abc1234",
         "gl-osquery-debian-12-candidate-20261127-160000-abc1234"),
        ("c" * 60, "f-20261127-160000-abc1234", "c" * 39 + "-20261127-160000-abc1234"),
    ],
)  # fmt: skip
def test_candidate_name_keeps_the_suffix_under_the_candidate_family(family: str, image: str, expected: str) -> None:
    name = candidate_name(family, image)
    assert name == expected
    assert re.fullmatch(GCE_NAME_RE, name)


def test_run_id_and_expiry_are_valid_label_values() -> None:
    run_id = new_run_id(NOW)
    assert re.fullmatch(r"20261127-160000-[0-9a-f]{6}", run_id)
    assert re.fullmatch(LABEL_VALUE_RE, run_id)
    assert expires_label(NOW, 5400) == str(int(NOW.timestamp()) + 5400) == "1795800600"
    assert re.fullmatch(GCE_NAME_RE, instances.instance_name(run_id))


def test_ssh_keys_metadata_names_the_user_and_drops_the_comment() -> None:
    assert instances.ssh_keys_metadata("bakery-test", PUBKEY) == (
        "bakery-test:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyKeyKey bakery-test"
    )
    with pytest.raises(VMError, match="not an OpenSSH public key"):
        instances.ssh_keys_metadata("bakery-test", "garbage")


def resource_json(**overrides: object) -> dict[str, object]:
    resource = instances.instance_resource(
        name="bakery-test-r1",
        zone="us-east1-c",
        source_image="https://www.googleapis.com/compute/v1/projects/p/global/images/cand-1",
        settings=settings(**overrides),
        labels={"bakery-role": "test", "bakery-run-id": "r1", "bakery-expires": "1796234400"},
        user="bakery-test",
        public_key=PUBKEY,
        max_run_seconds=1800,
    )
    data: dict[str, object] = json.loads(
        compute_v1.Instance.to_json(resource, always_print_fields_with_no_presence=False)
    )
    return data


def test_test_instance_has_no_external_ip_only_our_key_and_a_time_limit() -> None:
    labels = {"bakery-expires": "1796234400", "bakery-role": "test", "bakery-run-id": "r1"}
    assert resource_json(network="gstg", subnetwork="gstg-image-builder") == {
        "name": "bakery-test-r1",
        "machineType": "zones/us-east1-c/machineTypes/e2-standard-2",
        "labels": labels,
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "initializeParams": {
                    "sourceImage": "https://www.googleapis.com/compute/v1/projects/p/global/images/cand-1",
                    "diskSizeGb": "20",
                    "diskType": "zones/us-east1-c/diskTypes/pd-balanced",
                    "labels": labels,
                },
            }
        ],
        "networkInterfaces": [
            {"network": "global/networks/gstg", "subnetwork": "regions/us-east1/subnetworks/gstg-image-builder"}
        ],
        "metadata": {
            "items": [
                {"key": "ssh-keys", "value": "bakery-test:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyKeyKey bakery-test"},
                {"key": "block-project-ssh-keys", "value": "true"},
                {"key": "enable-oslogin", "value": "false"},
            ]
        },
        "shieldedInstanceConfig": {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True},
        "scheduling": {"maxRunDuration": {"seconds": "1800"}, "instanceTerminationAction": "DELETE"},
    }


def test_test_vm_never_runs_as_the_builder() -> None:
    """Without test_service_account the test VM has no service account (and so no credentials for Pub/Sub),
    whatever the builder's account is."""
    assert "serviceAccounts" not in resource_json(service_account="builder@p.iam.gserviceaccount.com")


def test_external_ip_and_service_account_when_configured() -> None:
    data = resource_json(
        omit_external_ip=False,
        service_account="builder@p.iam.gserviceaccount.com",
        test_service_account="sa@p.iam.gserviceaccount.com",
    )
    assert data["networkInterfaces"] == [
        {"network": "global/networks/default", "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]}
    ]
    assert data["serviceAccounts"] == [
        {"email": "sa@p.iam.gserviceaccount.com", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    ]


def test_iap_proxy_command_and_ssh_config_are_exact() -> None:
    proxy = instances.iap_proxy_command("bakery-test-r1", "us-east1-c", "gitlab-staging-1", {})
    assert proxy == [
        "gcloud", "compute", "start-iap-tunnel", "bakery-test-r1", "22", "--listen-on-stdin",
        "--zone=us-east1-c", "--project=gitlab-staging-1", "--verbosity=warning",
    ]  # fmt: skip
    config = instances.render_ssh_config(
        alias="bakery-gce-test",
        hostname="bakery-test-r1",
        port=22,
        user="bakery-test",
        identity=Path("/run/ssh/id_ed25519"),
        control_path=Path("/run/ssh.sock"),
        proxy_command=proxy,
    )
    assert config == (
        "Host bakery-gce-test\n"
        "  HostName bakery-test-r1\n"
        "  ProxyCommand gcloud compute start-iap-tunnel bakery-test-r1 22 --listen-on-stdin --zone=us-east1-c "
        "--project=gitlab-staging-1 --verbosity=warning\n"
        "  Port 22\n"
        "  User bakery-test\n"
        "  IdentityFile /run/ssh/id_ed25519\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  ConnectTimeout 10\n"
        "  ServerAliveInterval 10\n"
        "  ServerAliveCountMax 3\n"
        "  ControlMaster auto\n"
        "  ControlPath /run/ssh.sock\n"
        "  ControlPersist 60s\n"
    )


def test_instance_address_internal_or_external() -> None:
    nic = compute_v1.NetworkInterface(
        network_i_p="10.0.0.5", access_configs=[compute_v1.AccessConfig(nat_i_p="34.1.2.3")]
    )
    instance = compute_v1.Instance(name="i", network_interfaces=[nic])
    assert instances.instance_address(instance, external=False) == "10.0.0.5"
    assert instances.instance_address(instance, external=True) == "34.1.2.3"
    with pytest.raises(VMError, match="no network interface"):
        instances.instance_address(compute_v1.Instance(name="i"), external=False)


@pytest.mark.parametrize(
    ("labels", "due"),
    [
        ({"bakery-run-id": "r1", "bakery-expires": str(int(NOW.timestamp()) - 1)}, True),
        ({"bakery-run-id": "r1", "bakery-expires": str(int(NOW.timestamp()) + 60)}, False),
        ({"bakery-expires": "1"}, False),  # not one of our runs
        ({"bakery-run-id": "r1"}, False),  # no expiry: never guessed
        ({"bakery-run-id": "r1", "bakery-expires": "soon"}, False),
    ],
)
def test_reaper_expiry_rule(labels: dict[str, str], due: bool) -> None:
    assert (reaper.expired(labels, NOW) is not None) is due
