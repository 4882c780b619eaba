"""The Compute Engine API clients, built once by one factory, and the three ways this project calls them.

* :meth:`ComputeClients.call` — an idempotent read (get, list, getFromFamily, operation get/wait), retried
  on 429/5xx/transport errors with backoff and jitter.
* :meth:`ComputeClients.mutate` — a ``*_unary`` mutation carrying a ``requestId`` that stays the same
  across retries (the server deduplicates a retried insert), then waits for its operation.
* :meth:`ComputeClients.wait` — polls an operation through OUR operations clients, built with the same
  endpoint and credentials. ``ExtendedOperation.result()`` would poll through an operations client the
  transport builds without ``client_options``, i.e. against compute.googleapis.com (docs/facts.md).

Every call passes ``timeout=`` and ``retry=None`` (the library's own retry would stack on ours); every
API error becomes one :class:`ComputeApiError` line.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import google.auth
import google.auth.credentials
from google.api_core import exceptions as api_exceptions
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import compute_v1

from bakery.errors import ConfigError, RegistryError
from bakery.gce.retry import RetriesExhausted, RetryPolicy, call_with_retry

T = TypeVar("T")

ENDPOINT_ENV = "BAKERY_COMPUTE_ENDPOINT"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DONE = compute_v1.Operation.Status.DONE


class ComputeApiError(RegistryError):
    """A Compute Engine call failed (after retries, if the error was transient)."""


class ComputeNotFound(ComputeApiError):
    """The resource does not exist (HTTP 404)."""


class OperationFailed(ComputeApiError):
    """A long-running operation finished with an error."""


def resolve_endpoint(
    configured: str | None, environ: Mapping[str, str] = os.environ, *, variable: str = ENDPOINT_ENV
) -> str | None:
    """An API endpoint: the environment ``variable`` (default ``BAKERY_COMPUTE_ENDPOINT``) if set, else
    ``configured`` (``gce.api_endpoint`` for Compute), else the library's default (Google)."""
    return environ.get(variable) or configured or None


def client_kwargs(
    endpoint: str | None, credentials: google.auth.credentials.Credentials | None = None
) -> dict[str, Any]:
    """Keyword arguments every Google API client of this project is built with: REST transport, the endpoint
    override, and credentials: anonymous for an ``http://`` endpoint (a local fake: no token is ever sent in
    clear text), else ``credentials`` or application default credentials, looked up here."""
    if endpoint is not None and endpoint.startswith("http://"):
        credentials = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    elif credentials is None:
        credentials = default_credentials()
    options: dict[str, Any] = {"api_endpoint": endpoint} if endpoint else {}
    return {"credentials": credentials, "transport": "rest", "client_options": options}


def default_credentials() -> google.auth.credentials.Credentials:
    """Application default credentials, or one ConfigError line saying how to provide them."""
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError:
        raise ConfigError(
            "no Google Cloud credentials found: run `gcloud auth application-default login` "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
        ) from None
    return credentials


@dataclass(frozen=True)
class ComputeClients:
    """The Compute clients of one project and zone, sharing endpoint, credentials, timeouts and retries."""

    project: str
    zone: str
    endpoint: str | None
    timeout: float
    operation_timeout: float
    retry: RetryPolicy
    images: compute_v1.ImagesClient
    instances: compute_v1.InstancesClient
    instance_templates: compute_v1.InstanceTemplatesClient
    instance_group_managers: compute_v1.InstanceGroupManagersClient
    disks: compute_v1.DisksClient
    global_operations: compute_v1.GlobalOperationsClient
    zone_operations: compute_v1.ZoneOperationsClient
    # read by `invoke doctor` (bakery/gce/doctor.py) only
    projects: compute_v1.ProjectsClient
    regions: compute_v1.RegionsClient
    zones: compute_v1.ZonesClient
    machine_types: compute_v1.MachineTypesClient
    networks: compute_v1.NetworksClient
    subnetworks: compute_v1.SubnetworksClient
    firewalls: compute_v1.FirewallsClient
    routers: compute_v1.RoutersClient

    @classmethod
    def create(
        cls,
        project: str,
        zone: str,
        *,
        endpoint: str | None,
        credentials: google.auth.credentials.Credentials | None = None,
        timeout: float = 60.0,
        operation_timeout: float = 900.0,
        retry: RetryPolicy | None = None,
    ) -> ComputeClients:
        """Build every client over REST (:func:`client_kwargs`: credentials are looked up here, once)."""
        kwargs = client_kwargs(endpoint, credentials)
        return cls(
            project=project,
            zone=zone,
            endpoint=endpoint,
            timeout=timeout,
            operation_timeout=operation_timeout,
            retry=retry or RetryPolicy(),
            images=compute_v1.ImagesClient(**kwargs),
            instances=compute_v1.InstancesClient(**kwargs),
            instance_templates=compute_v1.InstanceTemplatesClient(**kwargs),
            instance_group_managers=compute_v1.InstanceGroupManagersClient(**kwargs),
            disks=compute_v1.DisksClient(**kwargs),
            global_operations=compute_v1.GlobalOperationsClient(**kwargs),
            zone_operations=compute_v1.ZoneOperationsClient(**kwargs),
            projects=compute_v1.ProjectsClient(**kwargs),
            regions=compute_v1.RegionsClient(**kwargs),
            zones=compute_v1.ZonesClient(**kwargs),
            machine_types=compute_v1.MachineTypesClient(**kwargs),
            networks=compute_v1.NetworksClient(**kwargs),
            subnetworks=compute_v1.SubnetworksClient(**kwargs),
            firewalls=compute_v1.FirewallsClient(**kwargs),
            routers=compute_v1.RoutersClient(**kwargs),
        )

    def call(self, what: str, method: Callable[..., T], request: Any, *, timeout: float | None = None) -> T:
        """``method(request=request)`` with retries on transient errors; ``what`` names the resource
        in error messages (e.g. ``image 'x'``)."""
        per_call = self.timeout if timeout is None else timeout
        try:
            return call_with_retry(
                lambda t: method(request=request, retry=None, timeout=t), policy=self.retry, timeout=per_call
            )
        except (api_exceptions.GoogleAPICallError, RetriesExhausted) as exc:
            raise self.error(what, exc) from exc

    def list_all(self, what: str, method: Callable[..., Any], request: Any) -> list[Any]:
        """Every item of a paged list, one retried call per page (``request`` gets ``page_token`` set)."""
        items: list[Any] = []
        while True:
            page = self.call(what, method, request)
            items.extend(page.items)
            if not page.next_page_token:
                return items
            request.page_token = page.next_page_token

    def aggregated_all(
        self, what: str, method: Callable[..., Any], request: Any, kind: str, *, raw: bool = False
    ) -> list[tuple[str, Any]]:
        """Every ``(scope, item)`` of a paged aggregatedList, scope being ``zones/Z``, ``regions/R`` or
        ``global`` (``kind``: the scoped list's field, e.g. ``instances``), one retried call per page.
        ``raw``: items as raw protobuf messages (``Message.pb``), skipping proto-plus wrapping (seconds for
        tens of thousands of items, when only a few fields are read)."""
        found: list[tuple[str, Any]] = []
        while True:
            page = self.call(what, method, request)
            for scope, scoped in page.items.items():
                found.extend((scope, item) for item in getattr(type(scoped).pb(scoped) if raw else scoped, kind))
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token

    def mutate(self, what: str, method: Callable[..., compute_v1.Operation], request: Any) -> compute_v1.Operation:
        """Start a mutation with a fresh ``requestId`` (kept across retries), wait for its operation and
        raise OperationFailed if it failed."""
        if "request_id" in type(request).meta.fields:
            request.request_id = str(uuid.uuid4())
        return self.wait(what, self.call(what, method, request))

    def wait(self, what: str, operation: compute_v1.Operation) -> compute_v1.Operation:
        """Poll ``operation`` (global or zonal) with ``operations.wait`` until DONE or the overall
        ``operation_timeout``; return it, or raise OperationFailed with the operation's error."""
        deadline = time.monotonic() + self.operation_timeout
        while operation.status != DONE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ComputeApiError(
                    f"operation {operation.name} for {what} not done after {self.operation_timeout:g}s, "
                    "its outcome is unknown"
                )
            request: Any
            if operation.zone:
                request = compute_v1.WaitZoneOperationRequest(
                    project=self.project, zone=operation.zone.rsplit("/", 1)[-1], operation=operation.name
                )
                method: Callable[..., compute_v1.Operation] = self.zone_operations.wait
            else:
                request = compute_v1.WaitGlobalOperationRequest(project=self.project, operation=operation.name)
                method = self.global_operations.wait
            try:
                operation = self.call(what, method, request, timeout=min(self.timeout, remaining))
            except ComputeApiError as exc:
                scope = f"--zone={request.zone}" if operation.zone else "--global"
                raise ComputeApiError(
                    f"lost track of operation {operation.name} for {what}, its outcome is unknown "
                    f"(check: gcloud compute operations describe {operation.name} {scope}): {exc}"
                ) from exc
        check_operation(what, operation)
        return operation

    def error(self, what: str, exc: BaseException) -> ComputeApiError:
        """One line for an API error about ``what``."""
        if isinstance(exc, RetriesExhausted):
            return ComputeApiError(
                f"Compute Engine failed for {what} in project {self.project} after {exc.attempts} attempts: "
                f"{_one_line(_message(exc.last))}"
            )
        message = _one_line(_message(exc))
        if isinstance(exc, api_exceptions.NotFound):
            return ComputeNotFound(f"{what} not found in project {self.project}")
        if isinstance(exc, api_exceptions.Conflict):
            return ComputeApiError(f"{what} already exists in project {self.project}")
        if isinstance(exc, api_exceptions.PreconditionFailed):
            return ComputeApiError(f"{what} changed concurrently in project {self.project}: {message}")
        if isinstance(exc, api_exceptions.Forbidden | api_exceptions.Unauthorized):
            return ComputeApiError(f"permission denied for {what} in project {self.project}: {message}")
        if isinstance(exc, api_exceptions.BadRequest):
            return ComputeApiError(f"Compute Engine rejected the request for {what}: {message}")
        return ComputeApiError(f"Compute Engine failed for {what} in project {self.project}: {message}")


def check_operation(what: str, operation: compute_v1.Operation) -> None:
    """Raise OperationFailed if a DONE operation carries an error or an HTTP error status."""
    errors = list(operation.error.errors)
    if not errors and operation.http_error_status_code < 400:
        return
    detail = "; ".join(f"{e.code}: {e.message}" for e in errors) or operation.http_error_message
    status = f", HTTP {operation.http_error_status_code}" if operation.http_error_status_code else ""
    raise OperationFailed(f"{what} failed: {_one_line(detail)} (operation {operation.name}{status})")


def _message(exc: BaseException) -> str:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return f"{exc.code} {exc.message}" if exc.code else str(exc.message)
    return f"{type(exc).__name__}: {exc}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
