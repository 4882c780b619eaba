"""Clients of the Google APIs besides Compute that `invoke doctor` reads: Resource Manager, IAM and Pub/Sub.

Resource Manager and Pub/Sub: Google's GAPIC clients, built by the same factory as the Compute clients
(:func:`bakery.gce.client.client_kwargs`: REST transport, endpoint override, credentials) and called the same
way (a timeout on every call, ``retry=None`` so our bounded retries do not stack on the library's). IAM:
google-cloud-iam 2.27.0's ``IAMClient`` has gRPC transports only (``iam_admin_v1/services/iam/transports``:
``grpc``, ``grpc_asyncio``), so service accounts are read through google-api-python-client, Google's
discovery-based REST client, with the same endpoint override, credentials and timeout; its errors are
turned into google.api_core's, so every API fails the same way. Each API has its own endpoint override, an
environment variable (``BAKERY_<API>_ENDPOINT``), as Compute has ``BAKERY_COMPUTE_ENDPOINT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import google.auth.credentials
import google_auth_httplib2
import httplib2
import requests
from google import pubsub_v1
from google.api_core import exceptions as api_exceptions
from google.cloud import resourcemanager_v3
from googleapiclient import discovery, errors

from bakery.errors import RegistryError
from bakery.gce.client import client_kwargs, resolve_endpoint
from bakery.gce.retry import RetriesExhausted, RetryPolicy, call_with_retry

T = TypeVar("T")

#: The endpoint override of each API (the Compute one lives in bakery/gce/client.py).
ENDPOINT_ENVS = {
    "Resource Manager": "BAKERY_RESOURCEMANAGER_ENDPOINT",
    "IAM": "BAKERY_IAM_ENDPOINT",
    "Pub/Sub": "BAKERY_PUBSUB_ENDPOINT",
}


class CloudApiError(RegistryError):
    """A Resource Manager, IAM or Pub/Sub call failed (``api`` names which; ``cause`` is the library's error)."""

    def __init__(self, api: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.api = api
        self.cause = cause


@dataclass(frozen=True)
class CloudClients:
    """Resource Manager (projects), IAM (service accounts) and Pub/Sub (topics) clients, with their endpoints."""

    projects: resourcemanager_v3.ProjectsClient
    iam: Any  # googleapiclient.discovery.Resource of iam v1
    publisher: pubsub_v1.PublisherClient
    endpoints: Mapping[str, str | None]
    timeout: float
    retry: RetryPolicy

    @classmethod
    def create(
        cls,
        *,
        environ: Mapping[str, str] = os.environ,
        credentials: google.auth.credentials.Credentials | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> CloudClients:
        """Build the three clients; each endpoint is its ``BAKERY_<API>_ENDPOINT`` or Google's."""
        endpoints = {api: resolve_endpoint(None, environ, variable=var) for api, var in ENDPOINT_ENVS.items()}
        iam_kwargs = client_kwargs(endpoints["IAM"], credentials)
        http = google_auth_httplib2.AuthorizedHttp(iam_kwargs["credentials"], http=httplib2.Http(timeout=timeout))
        return cls(
            projects=resourcemanager_v3.ProjectsClient(**client_kwargs(endpoints["Resource Manager"], credentials)),
            iam=discovery.build(
                "iam", "v1", http=http, client_options=iam_kwargs["client_options"], static_discovery=True
            ),
            publisher=pubsub_v1.PublisherClient(**client_kwargs(endpoints["Pub/Sub"], credentials)),
            endpoints=endpoints,
            timeout=timeout,
            retry=retry or RetryPolicy(),
        )

    def call(self, api: str, what: str, method: Callable[..., T], request: Any) -> T:
        """``method(request=request)`` with our retries on transient errors; one CloudApiError line otherwise."""
        try:
            return call_with_retry(
                lambda t: method(request=request, retry=None, timeout=t), policy=self.retry, timeout=self.timeout
            )
        except RetriesExhausted as exc:
            where = self.endpoints.get(api) or "Google"
            raise CloudApiError(
                api,
                f"{api} API ({where}) failed for {what} after {exc.attempts} attempts: {_brief(exc.last)}",
                exc.last,
            ) from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise CloudApiError(api, f"{api} API: {what}: {_brief(exc)}", exc) from exc


def iam_request(request: Any) -> Callable[..., Any]:
    """A google-api-python-client request (``service.projects()...method(...)``) as a ``method(request=None,
    retry=None, timeout=...)`` callable for :meth:`CloudClients.call`, raising google.api_core's errors
    (HTTP status) and requests' (timeout, connection) as the GAPIC clients do. The timeout is the client's
    (httplib2's, per socket operation)."""

    def method(request_arg: Any = None, **_: Any) -> Any:
        try:
            return request.execute(num_retries=0)
        except errors.HttpError as exc:
            raise api_exceptions.from_http_status(exc.status_code, exc.reason or str(exc)) from exc  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            raise requests.exceptions.Timeout(str(exc) or "timed out") from exc
        except (OSError, httplib2.HttpLib2Error) as exc:
            raise requests.exceptions.ConnectionError(str(exc) or type(exc).__name__) from exc

    return lambda request=None, retry=None, timeout=None: method(request)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        text = f"{exc.code} {exc.message}" if exc.code else str(exc.message)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
