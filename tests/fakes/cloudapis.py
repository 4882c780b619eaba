"""Local fakes of the Resource Manager v3, IAM v1 and Pub/Sub v1 REST APIs that ``invoke doctor`` reads.

They are served by the Compute fake's server (same 127.0.0.1 port; routed by path, as each API's own host
would) and attached to it: ``fake.resourcemanager``, ``fake.iam``, ``fake.pubsub``. Routes and schemas come
from the official discovery documents (``discovery.py``); every query, body and response is validated and a
violation is recorded in the Compute fake's ``violations`` (answered with a 400), every request in its
``calls``; ``inject`` queues faults (HTTP status, delay, corrupted response) per method id.

Implemented subset:

- Resource Manager v3 ``projects.get``, ``projects.testIamPermissions`` and ``projects.getIamPolicy``
  (``bindings`` per project id; ``policy_unreadable``: 403 "The caller does not have permission", Google's
  generic PERMISSION_DENIED message). A project the fake does not hold
  answers 403 PERMISSION_DENIED, as Google does for a missing project and for one the caller may not read
  (message as quoted in CrowdStrike/falcon-integration-gateway#98; googleapis/google-cloud-java#440: "The 403
  vs 404 is intended behavior"). Project numbers are fixed per project id (``base.project_number``) and are
  the Compute fake's ``projects.get`` ``id`` too. ``denied``: permissions the caller lacks on every project.
- IAM v1 ``projects.serviceAccounts.get`` and ``projects.serviceAccounts.testIamPermissions`` on
  ``projects/-/serviceAccounts/EMAIL`` or ``projects/PROJECT/serviceAccounts/EMAIL`` (a PROJECT other than
  the account's is not found). Unknown account: 404 NOT_FOUND "Service account NAME does not exist." (the
  wording in GoogleCloudPlatform/python-docs-samples#10243; Google may answer 403 instead when the caller
  may not read the account, hashicorp/terraform-provider-google#11208: not modelled). The REST surface of
  the discovery document, as google-api-python-client's ``build("iam", "v1")`` calls it (google-cloud-iam
  2.27.0's ``IAMClient`` has gRPC transports only).
- Pub/Sub v1 ``projects.topics.get``, ``projects.topics.testIamPermissions``, ``projects.topics.getIamPolicy``.
  Unknown topic: 404 NOT_FOUND "Resource not found (resource=TOPIC_ID)." (the wording in
  testcontainers/testcontainers-java#8050 and postmastery/webhook-forwarder-gcp#1, through gRPC). A topic
  whose ``denied`` holds ``pubsub.topics.getIamPolicy`` answers getIamPolicy with 403 "User not authorized to
  perform this action." (Pub/Sub's wording as remembered, not verified here). An empty
  policy is ``{"etag": "ACAB"}`` (what Google returns for a resource without bindings; not verified here).

Google semantics kept: testIamPermissions answers the subset of the asked permissions the caller holds
(an empty set is ``{}``: proto3 JSON omits empty lists) and rejects wildcards (400 INVALID_ARGUMENT,
https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/testIamPermissions: "Permissions
with wildcards (such as * or storage.*) are not allowed"), and permissions of another service for topics and
service accounts (400; the message wording is the fake's own). Errors use the AIP-193 shape
(``{"error": {"code", "message", "status"}}``) with the status names of google/rpc/code.proto's HTTP mapping.
Enums are sent as names: the GAPIC transports ask for ``$alt=json;enum-encoding=int`` (Google then sends
numbers); their JSON parser reads both.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tests.fakes.base import Call, Fault, project_number
from tests.fakes.discovery import Discovery, Method, load

#: google.rpc.Code names for HTTP statuses (googleapis/googleapis google/rpc/code.proto, "HTTP Mapping").
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
EMPTY_POLICY_ETAG = "ACAB"
Json = dict[str, Any]
Answer = tuple[int, dict[str, Any], float]


class RpcError(Exception):
    """An error answer in the AIP-193 JSON shape the GAPIC REST transports parse."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": STATUS.get(self.code, "UNKNOWN")}}


@dataclass
class CloudApiFake:
    """One API: its methods (``METHODS``: dotted resource -> method names, handled by ``_<resource tail>_<name>``)
    routed and validated from its discovery document. ``calls``, ``violations`` and ``lock`` are the Compute
    fake's."""

    DOCUMENT: ClassVar[str] = ""
    METHODS: ClassVar[dict[str, tuple[str, ...]]] = {}

    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: Any = field(default_factory=threading.RLock)
    faults: dict[str, collections.deque[Fault]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )

    def __post_init__(self) -> None:
        self.discovery: Discovery = load(self.DOCUMENT)
        self.routes: list[tuple[Method, Callable[..., Json]]] = []
        for resource, names in self.METHODS.items():
            for name in names:
                handler = getattr(self, f"_{resource.rsplit('.', 1)[-1]}_{name}".lower())
                self.routes.append((self.discovery.method(resource, name), handler))

    def inject(
        self,
        method: str,
        status: int | None = None,
        *,
        times: int = 1,
        delay: float = 0.0,
        corrupt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Queue a fault for the next ``times`` calls of ``method`` (e.g. ``pubsub.projects.topics.get``)."""
        if method not in {m.id for m, _ in self.routes}:
            raise ValueError(f"the fake does not implement {method}")
        with self.lock:
            self.faults[method].extend([Fault(status, delay, None, corrupt)] * times)

    def calls_of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def route(self, http_method: str, path: str) -> tuple[Method, Callable[..., Json], dict[str, str]] | None:
        verb = ":" in path.rsplit("/", 1)[-1]  # a custom verb (``:getIamPolicy``) is never part of a name
        for method, handler in self.routes:
            if verb != (":" in method.path.pattern):
                continue
            if method.http_method == http_method and (params := method.match(path)) is not None:
                return method, handler, params
        return None

    def answer(
        self,
        method: Method,
        handler: Callable[..., Json],
        raw_params: dict[str, str],
        *,
        path: str,
        query: dict[str, list[str]],
        body: Any,
    ) -> Answer:
        """Record, validate and answer one routed request (the caller holds ``lock``)."""
        self.calls.append(Call(method.id, method.http_method, path, query, body))
        fault = self.faults[method.id].popleft() if self.faults[method.id] else Fault()
        problems = self.discovery.request_problems(method, query, body)
        if problems:
            return self._violation(problems)
        if fault.status:
            return fault.status, RpcError(fault.status, f"fake: injected {fault.status}").body(), fault.delay
        params = {k: urllib.parse.unquote(v) for k, v in raw_params.items()}
        try:
            response = handler(params=params, query=query, body=body)
        except RpcError as exc:
            return exc.code, exc.body(), fault.delay
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: fail the test loudly, not as a 5xx
            self.violations.append(f"fake crashed in {method.id}: {exc!r}")
            return 400, RpcError(400, f"fake crashed: {exc!r}").body(), 0.0
        if fault.corrupt:
            response = fault.corrupt(response)
        problems = self.discovery.response_problems(method, response)
        if problems:
            return self._violation(problems)
        return 200, response, fault.delay

    def _violation(self, problems: list[str]) -> Answer:
        self.violations.extend(problems)
        return 400, RpcError(400, "fake: discovery schema violation: " + "; ".join(problems)).body(), 0.0

    @staticmethod
    def _held(body: Json, denied: set[str], prefix: str = "") -> Json:
        """A TestIamPermissionsResponse: the asked permissions not in ``denied``."""
        asked: list[str] = body.get("permissions", [])
        for permission in asked:
            if "*" in permission:
                raise RpcError(400, f"Permissions with wildcards are not allowed: '{permission}'.")
            if prefix and not permission.startswith(prefix):
                raise RpcError(400, f"Permission {permission} is not valid for this resource.")
        held = [p for p in asked if p not in denied]
        return {"permissions": held} if held else {}


@dataclass
class FakeResourceManager(CloudApiFake):
    """Cloud Resource Manager v3 (see the module docstring); ``seed_project`` adds a project."""

    DOCUMENT: ClassVar[str] = "cloudresourcemanager.v3"
    METHODS: ClassVar[dict[str, tuple[str, ...]]] = {"projects": ("get", "testIamPermissions", "getIamPolicy")}
    projects: dict[str, Json] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    bindings: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # project id -> role -> members
    policy_unreadable: set[str] = field(default_factory=set)  # project ids whose policy the caller may not get

    def seed_project(self, project_id: str, *, display_name: str = "", state: str = "ACTIVE") -> Json:
        """Add an ACTIVE project (``state`` DELETE_REQUESTED for one pending deletion)."""
        with self.lock:
            project = {
                "name": f"projects/{project_number(project_id)}",
                "parent": "organizations/123456789012",
                "projectId": project_id,
                "state": state,
                "displayName": display_name or project_id,
                "createTime": "2024-01-02T03:04:05.678Z",
                "etag": base64.b64encode(hashlib.sha256(project_id.encode()).digest()[:8]).decode(),
            }
            self.projects[project_id] = project
            return project

    def _project(self, name: str) -> Json:
        """``projects/ID`` or ``projects/NUMBER``; any other is a 403, as Google answers."""
        key = name.removeprefix("projects/")
        for project in self.projects.values():
            if key in (project["projectId"], project["name"].removeprefix("projects/")):
                return project
        raise RpcError(
            403,
            f"Permission 'resourcemanager.projects.get' denied on resource "
            f"'//cloudresourcemanager.googleapis.com/{name}' (or it may not exist).",
        )

    def _projects_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._project(params["name"])

    def _projects_testiampermissions(self, *, params: dict[str, str], body: Json, **_: Any) -> Json:
        self._project(params["resource"])
        return self._held(body, self.denied)

    def _projects_getiampolicy(self, *, params: dict[str, str], **_: Any) -> Json:
        project = self._project(params["resource"])["projectId"]
        if project in self.policy_unreadable or "resourcemanager.projects.getIamPolicy" in self.denied:
            raise RpcError(403, "The caller does not have permission")
        return _policy(self.bindings.get(project, {}))


SA_EMAIL_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$"
)


@dataclass
class FakeIam(CloudApiFake):
    """IAM v1 service accounts (see the module docstring); ``seed_service_account`` adds one."""

    DOCUMENT: ClassVar[str] = "iam.v1"
    METHODS: ClassVar[dict[str, tuple[str, ...]]] = {"projects.serviceAccounts": ("get", "testIamPermissions")}
    default_project: str = "bakery-test"
    accounts: dict[str, Json] = field(default_factory=dict)
    denied: dict[str, set[str]] = field(default_factory=dict)  # email -> permissions the caller lacks on it

    def seed_service_account(self, email: str, *, act_as: bool = True, project: str = "") -> Json:
        """Add an account; its project is ``project``, else the one in a user-managed account's email
        (``NAME@PROJECT.iam.gserviceaccount.com``), else the fake's. ``act_as`` False: the caller lacks
        ``iam.serviceAccounts.actAs`` on it."""
        with self.lock:
            found = SA_EMAIL_RE.match(email)
            owner = project or (found["project"] if found else self.default_project)
            unique_id = str(10**20 + int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big"))
            account = {
                "name": f"projects/{owner}/serviceAccounts/{email}",
                "projectId": owner,
                "uniqueId": unique_id,
                "email": email,
                "displayName": email.split("@", 1)[0],
                "etag": base64.b64encode(b"\x00" * 8).decode(),
                "oauth2ClientId": unique_id,
            }
            self.accounts[email] = account
            self.denied[email] = set() if act_as else {"iam.serviceAccounts.actAs"}
            return account

    def _account(self, name: str) -> Json:
        _, project, _, key = name.split("/", 3)
        account = self.accounts.get(key) or next((a for a in self.accounts.values() if a["uniqueId"] == key), None)
        if account is None or project not in ("-", account["projectId"]):
            raise RpcError(404, f"Service account {name} does not exist.")
        return account

    def _serviceaccounts_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._account(params["name"])

    def _serviceaccounts_testiampermissions(self, *, params: dict[str, str], body: Json, **_: Any) -> Json:
        account = self._account(params["resource"])
        return self._held(body, self.denied[account["email"]], "iam.serviceAccounts.")


@dataclass
class _Topic:
    resource: Json
    bindings: dict[str, list[str]]
    denied: set[str]


@dataclass
class FakePubSub(CloudApiFake):
    """Pub/Sub v1 topics (see the module docstring); ``seed_topic`` adds one."""

    DOCUMENT: ClassVar[str] = "pubsub.v1"
    METHODS: ClassVar[dict[str, tuple[str, ...]]] = {"projects.topics": ("get", "testIamPermissions", "getIamPolicy")}
    topics: dict[tuple[str, str], _Topic] = field(default_factory=dict)

    def seed_topic(
        self,
        project: str,
        topic: str,
        *,
        bindings: dict[str, list[str]] | None = None,
        denied: set[str] | None = None,
    ) -> Json:
        """Add a topic; ``bindings``: role -> members of its IAM policy; ``denied``: permissions the caller
        lacks on it (e.g. ``pubsub.topics.publish``)."""
        with self.lock:
            resource = {"name": f"projects/{project}/topics/{topic}", "state": "ACTIVE"}
            self.topics[project, topic] = _Topic(resource, dict(bindings or {}), set(denied or ()))
            return resource

    def _topic(self, name: str) -> _Topic:
        _, project, _, topic = name.split("/", 3)
        if (project, topic) not in self.topics:
            raise RpcError(404, f"Resource not found (resource={topic}).")
        return self.topics[project, topic]

    def _topics_get(self, *, params: dict[str, str], **_: Any) -> Json:
        return self._topic(params["topic"]).resource

    def _topics_testiampermissions(self, *, params: dict[str, str], body: Json, **_: Any) -> Json:
        return self._held(body, self._topic(params["resource"]).denied, "pubsub.topics.")

    def _topics_getiampolicy(self, *, params: dict[str, str], **_: Any) -> Json:
        topic = self._topic(params["resource"])
        if "pubsub.topics.getIamPolicy" in topic.denied:
            raise RpcError(403, "User not authorized to perform this action.")
        return _policy(topic.bindings)


def _policy(bindings: dict[str, list[str]]) -> Json:
    """An IAM Policy (version 1) with ``bindings`` (role -> members)."""
    if not bindings:
        return {"etag": EMPTY_POLICY_ETAG}
    listed = [{"role": role, "members": list(members)} for role, members in sorted(bindings.items())]
    etag = hashlib.sha256(repr(listed).encode()).digest()[:8]
    return {"version": 1, "etag": base64.b64encode(etag).decode(), "bindings": listed}


@dataclass
class CloudApis:
    """The three fakes, sharing the Compute fake's records and lock."""

    resourcemanager: FakeResourceManager
    iam: FakeIam
    pubsub: FakePubSub

    @classmethod
    def create(cls, project: str, calls: list[Call], violations: list[str], lock: Any) -> CloudApis:
        shared: dict[str, Any] = {"calls": calls, "violations": violations, "lock": lock}
        apis = cls(FakeResourceManager(**shared), FakeIam(**shared, default_project=project), FakePubSub(**shared))
        apis.resourcemanager.seed_project(project)
        return apis

    def route(
        self, http_method: str, path: str
    ) -> tuple[CloudApiFake, Method, Callable[..., Json], dict[str, str]] | None:
        for api in (self.resourcemanager, self.iam, self.pubsub):
            if (found := api.route(http_method, path)) is not None:
                return (api, *found)
        return None
