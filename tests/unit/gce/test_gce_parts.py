"""Pure parts of the GCE layer: endpoint choice, credentials error, dry-run lines, records, operation errors."""

from __future__ import annotations

import google.auth
import pytest
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import compute_v1

from bakery.errors import ConfigError, RegistryError
from bakery.gce.client import ComputeClients, OperationFailed, check_operation, resolve_endpoint
from bakery.gce.store import describe_call, to_record
from bakery.images import DeprecationState, parse_state

LINK = "https://www.googleapis.com/compute/v1/projects/p-1234/global/images/"


@pytest.mark.parametrize(
    ("configured", "environ", "expected"),
    [
        (None, {}, None),
        ("https://compute-psc.p.googleapis.com", {}, "https://compute-psc.p.googleapis.com"),
        ("https://psc", {"BAKERY_COMPUTE_ENDPOINT": "http://127.0.0.1:1"}, "http://127.0.0.1:1"),
        (None, {"BAKERY_COMPUTE_ENDPOINT": ""}, None),
    ],
)
def test_endpoint_environment_overrides_config(configured: str | None, environ: dict[str, str], expected: str) -> None:
    assert resolve_endpoint(configured, environ) == expected


def test_missing_credentials_is_one_config_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_credentials(**_: object) -> None:
        raise DefaultCredentialsError("Your default credentials were not found.\nSee https://...")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(ConfigError) as caught:
        ComputeClients.create("p-1234", "europe-west1-b", endpoint=None)
    assert str(caught.value) == (
        "no Google Cloud credentials found: run `gcloud auth application-default login` "
        "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
    )


def test_http_endpoint_needs_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google.auth, "default", lambda **_: pytest.fail("google.auth.default() was called"))
    clients = ComputeClients.create("p-1234", "europe-west1-b", endpoint="http://127.0.0.1:9")
    assert clients.images.api_endpoint == "http://127.0.0.1:9"
    assert clients.zone_operations.api_endpoint == "http://127.0.0.1:9"


def test_dry_run_line_names_method_parameters_and_body() -> None:
    request = compute_v1.DeprecateImageRequest(
        project="p-1234",
        image="img-2",
        deprecation_status_resource=compute_v1.DeprecationStatus(state="DEPRECATED", replacement=LINK + "img-1"),
    )
    assert describe_call("images.deprecate", request) == (
        f'images.deprecate project=p-1234 image=img-2 body={{"replacement":"{LINK}img-1","state":"DEPRECATED"}}'
    )
    assert describe_call("images.delete", compute_v1.DeleteImageRequest(project="p-1234", image="x")) == (
        "images.delete project=p-1234 image=x"
    )


def test_record_from_api_image() -> None:
    image = compute_v1.Image(
        name="img-2",
        family="cand",
        creation_timestamp="2026-01-05T10:00:00.123-08:00",
        self_link=LINK + "img-2",
        labels={"osquery": "5-23-1"},
        description="osquery image\nbakery-manifest: build/manifest.json",
        deprecated=compute_v1.DeprecationStatus(state="DEPRECATED", replacement=LINK + "img-1"),
    )
    record = to_record(image)
    assert (record.state, record.replacement, record.description, record.manifest) == (
        DeprecationState.DEPRECATED,
        "img-1",
        "osquery image",
        "build/manifest.json",
    )
    assert record.location == LINK + "img-2" and record.labels == {"osquery": "5-23-1"}
    assert record.created.utcoffset() is not None
    plain = to_record(compute_v1.Image(name="a", creation_timestamp="2026-01-05T10:00:00Z", description="d"))
    assert (plain.state, plain.replacement, plain.description, plain.manifest) == (
        DeprecationState.ACTIVE,
        None,
        "d",
        "",
    )


def test_failed_operation_raises_one_line_with_the_operations_message() -> None:
    done = compute_v1.Operation(name="op-1", status="DONE")
    check_operation("image 'x'", done)
    failed = compute_v1.Operation(
        name="op-2",
        status="DONE",
        error=compute_v1.Error(errors=[compute_v1.Errors(code="QUOTA_EXCEEDED", message="Quota\n'IMAGES' exceeded")]),
        http_error_status_code=403,
        http_error_message="FORBIDDEN",
    )
    with pytest.raises(OperationFailed) as caught:
        check_operation("image 'x'", failed)
    assert str(caught.value) == "image 'x' failed: QUOTA_EXCEEDED: Quota 'IMAGES' exceeded (operation op-2, HTTP 403)"
    only_status = compute_v1.Operation(name="op-3", status="DONE", http_error_status_code=500, http_error_message="E")
    with pytest.raises(OperationFailed, match=r"failed: E \(operation op-3, HTTP 500\)"):
        check_operation("image 'x'", only_status)


@pytest.mark.parametrize("state", ["ACTIVE", "active", "gone"])
def test_invalid_deprecation_states_are_refused(state: str) -> None:
    with pytest.raises(RegistryError):
        parse_state(state)


def test_deprecation_states_are_case_insensitive() -> None:
    assert parse_state("obsolete") is DeprecationState.OBSOLETE
