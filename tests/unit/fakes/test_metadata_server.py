"""The metadata server fake (tests/fakes/metadata.py) over real HTTP on 127.0.0.1, for an instance created
through the Compute fake's own instances.insert with the body the GCE target sends."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.base import project_number
from tests.fakes.compute import FakeCompute
from tests.fakes.metadata import FAKE_TOKEN_NOTE, MetadataServer

PROJECT, ZONE, NAME = "bakery-test", "us-east1-b", "bakery-test-vm"
SA = "tester@bakery-test.iam.gserviceaccount.com"
KEY = "bakery-test:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake bakery-test"
#: The agent's own URLs, byte for byte: google_guest_agent/metadata.go:34-36,250-254 (guest-agent 20211116.00;
#: note the double slash) and google_metadata_script_runner/main.go:49-50,208-211.
AGENT_FIRST = "/computeMetadata/v1//?recursive=true&alt=json&last_etag=NONE"
AGENT_WATCH = "/computeMetadata/v1//?recursive=true&alt=json&wait_for_change=true&timeout_sec=60&last_etag="
SCRIPT_RUNNER = "/computeMetadata/v1/instance/attributes/?recursive=true&alt=json&timeout_sec=10&last_etag=NONE"
FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def fake() -> FakeCompute:
    """A project with one instance as bakery's test stage creates it (bakery/gce/instances.py)."""
    fake = FakeCompute(project=PROJECT)
    fake.project_metadata.update({"ssh-keys": "other:ssh-rsa AAAAB3Nza other", "enable-oslogin": "TRUE"})
    fake.seed_image("candidate", "osquery")
    body = {
        "name": NAME,
        "machineType": f"zones/{ZONE}/machineTypes/e2-medium",
        "disks": [{"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": "global/images/candidate"}}],
        "networkInterfaces": [
            {
                "network": "global/networks/default",
                "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
            }
        ],
        "metadata": {
            "items": [
                {"key": "ssh-keys", "value": KEY},
                {"key": "block-project-ssh-keys", "value": "true"},
                {"key": "enable-oslogin", "value": "false"},
            ]
        },
        "serviceAccounts": [{"email": SA, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
        "tags": {"items": ["bakery"]},
    }
    status, answer, _ = fake.handle(
        "POST", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances", json.dumps(body).encode()
    )
    assert (status, answer.get("status"), fake.violations) == (200, "DONE", [])
    return fake


@pytest.fixture
def server(fake: FakeCompute) -> Iterator[MetadataServer]:
    with MetadataServer(fake, ZONE, NAME).serve() as server:
        yield server


def get(
    server: MetadataServer,
    target: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    body: str = "",
    timeout: float = 10,
) -> tuple[int, dict[str, str], str]:
    """One request (a new connection, redirects not followed): status, headers, body text."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, target, body=body.encode() or None, headers=FLAVOR if headers is None else headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def set_instance_metadata(fake: FakeCompute, key: str, value: str) -> None:
    with fake.lock:
        items = fake.instances[ZONE, NAME]["metadata"]["items"]
        items[:] = [i for i in items if i["key"] != key] + [{"key": key, "value": value}]


def test_requests_without_metadata_flavor_are_refused(server: MetadataServer) -> None:
    status, headers, body = get(server, "/computeMetadata/v1/instance/name", {})
    assert status == 403
    assert "Missing Metadata-Flavor:Google header." in body
    assert headers["Metadata-Flavor"] == "Google"
    assert len(server.violations) == 1
    assert [(r.target, r.status) for r in server.requests] == [("/computeMetadata/v1/instance/name", 403)]


def test_answers_echo_metadata_flavor_and_name_the_server(server: MetadataServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/computeMetadata/v1/instance/name", headers=FLAVOR)
    response = connection.getresponse()
    assert response.headers.get_all("Metadata-Flavor") == ["Google"]
    assert response.headers.get_all("Server") == ["Metadata Server for VM"]
    connection.close()
    status, headers, body = get(server, "/computeMetadata/v1/instance/name")
    assert (status, body) == (200, NAME)
    assert headers["Content-Type"] == "application/text"
    assert len(headers["ETag"]) == 16
    assert server.violations == []


def test_x_forwarded_for_is_refused(server: MetadataServer) -> None:
    status, _, _ = get(server, "/computeMetadata/v1/instance/name", {**FLAVOR, "X-Forwarded-For": "10.0.0.9"})
    assert status == 403
    assert len(server.violations) == 1


def test_recursive_json_has_what_the_guest_agent_decodes(server: MetadataServer) -> None:
    # The Go structs the agent decodes into (guest-agent 20211116.00 google_guest_agent/metadata.go): metadata
    # {Instance, Project} :41-44; instance {ID json.Number, MachineType, Attributes, NetworkInterfaces,
    # VirtualClock} :83-89; networkInterfaces {ForwardedIps, ForwardedIpv6s, TargetInstanceIps, IPAliases, Mac,
    # DHCPv6Refresh} :91-98; project {Attributes, ProjectID, NumericProjectID json.Number} :100-104; attributes
    # decoded as JSON strings under their metadata keys :163-178. Go matches field names case-insensitively.
    status, headers, body = get(server, AGENT_FIRST)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    document = json.loads(body)
    instance, project = document["instance"], document["project"]
    assert isinstance(instance["id"], int)
    assert instance["machineType"] == f"projects/{project_number(PROJECT)}/machineTypes/e2-medium"
    assert instance["attributes"] == {"ssh-keys": KEY, "block-project-ssh-keys": "true", "enable-oslogin": "false"}
    nic = instance["networkInterfaces"][0]
    assert {"forwardedIps", "targetInstanceIps", "ipAliases", "mac"} <= nic.keys()
    assert (nic["forwardedIps"], nic["targetInstanceIps"], nic["ipAliases"]) == ([], [], [])
    assert nic["mac"] == server.mac_address
    assert project["projectId"] == PROJECT
    assert project["numericProjectId"] == int(project_number(PROJECT))
    assert project["attributes"] == {"ssh-keys": "other:ssh-rsa AAAAB3Nza other", "enable-oslogin": "TRUE"}
    assert "token" not in json.dumps(instance["serviceAccounts"])
    assert server.violations == []


def test_script_runner_reads_attributes_as_a_string_map(server: MetadataServer) -> None:
    # google_metadata_script_runner/main.go:194-201 decodes the answer into map[string]string.
    status, _, body = get(server, SCRIPT_RUNNER)
    attributes = json.loads(body)
    assert status == 200
    assert all(isinstance(v, str) for v in attributes.values())
    assert attributes["ssh-keys"] == KEY


def test_instance_values(server: MetadataServer) -> None:
    number = project_number(PROJECT)
    expected = {
        "instance/hostname": f"{NAME}.{ZONE}.c.{PROJECT}.internal",
        "instance/zone": f"projects/{number}/zones/{ZONE}",
        "instance/image": f"projects/{PROJECT}/global/images/candidate",
        "instance/network-interfaces/0/network": f"projects/{number}/networks/default",
        "instance/network-interfaces/0/ip": "127.0.0.1",
        "instance/service-accounts/default/email": SA,
        "project/project-id": PROJECT,
        "project/numeric-project-id": number,
        "project/attributes/enable-oslogin": "TRUE",
    }
    assert {path: get(server, f"/computeMetadata/v1/{path}")[2] for path in expected} == expected
    assert get(server, "/computeMetadata/v1/instance/network-interfaces/0/mac")[2] == server.mac_address
    assert int(server.mac_address[:2], 16) & 0b11 == 0b10  # locally administered, unicast: QEMU accepts it


def test_directories_list_with_slashes_and_redirect_without(server: MetadataServer) -> None:
    status, _, body = get(server, "/computeMetadata/v1/instance/network-interfaces/0/")
    assert status == 200
    assert "access-configs/\n" in body.splitlines(keepends=True)
    assert "ip\n" in body.splitlines(keepends=True)
    status, headers, _ = get(server, "/computeMetadata/v1/instance?recursive=true")
    assert status == 301
    assert headers["Location"] == f"http://127.0.0.1:{server.port}/computeMetadata/v1/instance/?recursive=true"


def test_alt_text_and_the_default_formats(server: MetadataServer) -> None:
    _, _, text = get(server, "/computeMetadata/v1/instance/disks/?recursive=true&alt=text")
    assert "0/index 0" in text.splitlines()
    _, headers, tags = get(server, "/computeMetadata/v1/instance/tags")
    assert (headers["Content-Type"], json.loads(tags)) == ("application/json", ["bakery"])
    assert get(server, "/computeMetadata/v1/instance/tags?alt=text")[2] == "bakery\n"
    assert get(server, "/computeMetadata/v1/instance/id?alt=json")[2].isdigit()
    assert get(server, "/computeMetadata/v1/instance/name?alt=json")[2] == json.dumps(NAME)


def test_missing_keys_are_404(server: MetadataServer) -> None:
    assert get(server, "/computeMetadata/v1/instance/attributes/startup-script")[0] == 404
    assert get(server, "/computeMetadata/v1/instance/name/")[0] == 404
    assert get(server, "/computeMetadata/v1/instance/network-interfaces/1/ip")[0] == 404
    assert server.violations == []


def test_etag_changes_when_metadata_changes(fake: FakeCompute, server: MetadataServer) -> None:
    before = get(server, "/computeMetadata/v1/instance/attributes/?recursive=true")[1]["ETag"]
    assert get(server, "/computeMetadata/v1/instance/attributes/?recursive=true&alt=text")[1]["ETag"] == before
    set_instance_metadata(fake, "startup-script", "#!/bin/sh\ntrue\n")
    assert get(server, "/computeMetadata/v1/instance/attributes/?recursive=true")[1]["ETag"] != before


def test_wait_for_change_answers_at_once_when_last_etag_differs(server: MetadataServer) -> None:
    status, headers, body = get(server, AGENT_WATCH + "NONE", timeout=5)
    assert status == 200
    assert headers["ETag"] != "NONE"
    assert json.loads(body)["instance"]["name"] == NAME


def test_wait_for_change_holds_until_changed(fake: FakeCompute, server: MetadataServer) -> None:
    etag = get(server, AGENT_FIRST)[1]["ETag"]
    answers: list[tuple[int, dict[str, str], str]] = []
    waiter = threading.Thread(target=lambda: answers.append(get(server, AGENT_WATCH + etag, timeout=30)))
    waiter.start()
    time.sleep(0.5)
    assert answers == []  # still held: nothing changed
    set_instance_metadata(fake, "ssh-keys", KEY + "\nsecond:ssh-ed25519 AAAA second")
    server.changed()
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    status, headers, body = answers[0]
    assert status == 200
    assert headers["ETag"] != etag
    assert "second:ssh-ed25519" in json.loads(body)["instance"]["attributes"]["ssh-keys"]


def test_wait_for_change_returns_the_same_content_after_timeout_sec(server: MetadataServer) -> None:
    etag = get(server, AGENT_FIRST)[1]["ETag"]
    target = AGENT_WATCH.replace("timeout_sec=60", "timeout_sec=1") + etag
    status, headers, _ = get(server, target, timeout=20)
    assert (status, headers["ETag"]) == (200, etag)


def test_wait_for_change_on_a_directory_listing_is_refused(server: MetadataServer) -> None:
    assert get(server, "/computeMetadata/v1/instance/attributes/?wait_for_change=true")[0] == 400
    assert len(server.violations) == 1


def test_guest_attributes_put_then_get(fake: FakeCompute, server: MetadataServer) -> None:
    set_instance_metadata(fake, "enable-guest-attributes", "TRUE")
    # what google_guest_agent/instance_setup.go:258-270,288-300 sends for each new host key
    put = get(
        server, "/computeMetadata/v1/instance/guest-attributes/hostkeys/ssh-ed25519", method="PUT", body="AAAAC3Nz"
    )
    assert put[0] == 200
    assert server.guest_attributes == {"hostkeys/ssh-ed25519": "AAAAC3Nz"}
    assert get(server, "/computeMetadata/v1/instance/guest-attributes/hostkeys/ssh-ed25519")[2] == "AAAAC3Nz"
    assert get(server, "/computeMetadata/v1/instance/guest-attributes/hostkeys/")[2] == "ssh-ed25519\n"


def test_guest_attributes_are_refused_unless_enabled(server: MetadataServer) -> None:
    put = get(server, "/computeMetadata/v1/instance/guest-attributes/hostkeys/ssh-rsa", method="PUT", body="AAAAB3")
    assert put[0] == 403
    assert server.guest_attributes == {}


def test_oslogin_calls_are_recorded_and_404(server: MetadataServer) -> None:
    target = "/computeMetadata/v1/oslogin/users?username=bakery-test"
    assert get(server, target)[0] == 404
    assert server.oslogin_calls == [target]


def test_service_account_token_is_a_marked_stub(server: MetadataServer) -> None:
    status, headers, body = get(server, f"/computeMetadata/v1/instance/service-accounts/{SA}/token")
    token: dict[str, Any] = json.loads(body)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert token["access_token"].startswith(FAKE_TOKEN_NOTE)
    assert (token["expires_in"], token["token_type"]) == (3599, "Bearer")
    assert get(server, "/computeMetadata/v1/instance/service-accounts/default/")[2].splitlines() == [
        "aliases",
        "email",
        "scopes",
        "token",
    ]


def test_wait_for_change_on_a_token_is_refused(server: MetadataServer) -> None:
    target = "/computeMetadata/v1/instance/service-accounts/default/token?wait_for_change=true"
    assert get(server, target)[0] == 400
    assert len(server.violations) == 1


def test_a_bug_in_the_fake_is_a_500_and_a_violation(fake: FakeCompute, server: MetadataServer) -> None:
    with fake.lock:
        del fake.instances[ZONE, NAME]["id"]
    assert get(server, "/computeMetadata/v1/instance/name")[0] == 500
    assert "KeyError" in server.violations[0]


def test_a_wait_released_by_the_instances_deletion_is_a_503_not_a_crash(fake: FakeCompute) -> None:
    """The VM backend stops the server when the instance is deleted; the record may go before a held wait
    wakes (seen in the rehearsal: a 500 and a violation before this was handled)."""
    answers: list[tuple[int, dict[str, str], str]] = []
    with MetadataServer(fake, ZONE, NAME).serve() as server:
        etag = get(server, AGENT_FIRST)[1]["ETag"]
        waiter = threading.Thread(target=lambda: answers.append(get(server, AGENT_WATCH + etag, timeout=30)))
        waiter.start()
        time.sleep(0.5)
        del fake.instances[ZONE, NAME]
    waiter.join(timeout=20)
    assert answers and answers[0][0] == 503
    assert server.violations == []
