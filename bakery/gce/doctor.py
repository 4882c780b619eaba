"""`invoke doctor` and every GCE bake's preflight: read-only checks that an environment can bake.

Each check reads (tools on PATH, credentials, the Compute, Resource Manager, IAM and Pub/Sub APIs) and
changes nothing. A check is ``ok``, ``fail`` (the bake would fail: the line says the fix), ``warn`` (it may
work, or only the fleet is affected) or ``skip`` (irrelevant for this configuration, with the reason).

Time is bounded: every call has a timeout, every API is first probed once, in parallel, and an API that does
not answer its probe fails its checks at once instead of timing out again for each.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import google.auth
import google.auth.credentials
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1
from google.iam.v1 import iam_policy_pb2, options_pb2

from bakery import packer_plugins, proc
from bakery.config import BuildSpec, GceSettings, PubSub, zone_region
from bakery.errors import BakeryError, ConfigError, ToolMissingError
from bakery.gce import iamfacts
from bakery.gce.client import ComputeApiError, ComputeClients, ComputeNotFound, resolve_endpoint
from bakery.gce.cloud import ENDPOINT_ENVS, CloudApiError, CloudClients, iam_request
from bakery.gce.retry import RetriesExhausted, RetryPolicy
from bakery.gcloud import OVERRIDE, override_for
from bakery.packer import detect_version
from bakery.target import Say

Status = Literal["ok", "fail", "warn", "skip"]
LABELS: dict[str, str] = {"ok": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
#: Per call; a doctor waits at most this long for one answer (twice for an API that times out on its probe).
CALL_TIMEOUT = 8.0
#: One retry on a transient answer (a 5xx, 429 or dropped connection), then the check fails.
RETRY = RetryPolicy(attempts=2, initial=0.5, maximum=1.0, deadline=2 * CALL_TIMEOUT + 2)
#: How long the parallel probes may take together (two attempts of CALL_TIMEOUT each, and some room).
PROBE_TIMEOUT = 2 * CALL_TIMEOUT + 5
TOOL_TIMEOUT = 15.0
#: Exit codes: a check failed (configuration or environment), a required tool is missing.
EXIT_FAILED, EXIT_TOOL = 2, 3
#: The fix when the doctor itself may not read something (iamfacts: the doctor's own reads).
READ_ROLES = (
    "grant the caller roles/compute.viewer (Compute reads) and roles/iam.securityReviewer (IAM policies of the "
    "project and the topic), then run doctor again"
)
#: A Shared VPC path: ``projects/HOST/global/networks/N`` or ``projects/HOST/regions/R/subnetworks/S`` (or a URL).
SHARED_VPC_LINK = re.compile(r"(?:^|/)projects/(?P<project>[^/]+)/(?:global|regions/[^/]+)/(?:sub)?networks/")
#: Ask for policy version 3: "Requests for policies with any conditional role bindings must specify version
#: 3" (google/iam/v1/options.proto, GetPolicyOptions.requested_policy_version); older versions drop the
#: conditions, and a conditional grant would count as unconditional.
POLICY_V3 = options_pb2.GetPolicyOptions(requested_policy_version=3)
#: Checks where a 403 is the finding itself: Resource Manager answers 403 for a project that does not exist
#: as for one the caller may not see (and testIamPermissions needs no permission of its own).
DENIAL_FAILS = {
    name: "check gce.project ({project}: does it exist?) and that the caller may see it (resourcemanager.projects.get, "
    "e.g. roles/compute.viewer)"
    for name in ("project", "permissions.project")
}
#: The name of each check (method -> the name its lines carry, also when it raises).
NAMES = {
    "check_packer": "tools.packer",
    "check_gcloud": "tools.gcloud",
    "check_ssh": "tools.ssh",
    "check_credentials": "credentials",
    "check_project": "project",
    "check_compute_api": "project.compute-api",
    "check_os_login": "project.os-login",
    "check_zones": "zones",
    "check_quota_region": "quota.region",
    "check_quota_project": "quota.project",
    "check_permissions": "permissions.project",
    "check_act_as": "permissions.act-as",
    "check_subnetwork": "network.subnetwork",
    "check_private_google_access": "network.private-google-access",
    "check_iap_firewall": "network.iap-firewall",
    "check_nat": "network.nat",
    "check_source_image": "images.source",
    "check_head": "images.head",
    "check_topic": "pubsub.topic",
    "check_publishers": "pubsub.publishers",
    "check_test_vm_topic": "pubsub.test-vm",
}
#: The steps whose permissions a bake or nightly needs (iamfacts.STEPS names them).
STEPS = (*iamfacts.BAKE_PIPELINE, "reap")


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` (e.g. ``network.iap-firewall``), status, what was found, and the fix."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    tool: bool = False  # a failed tools check: exit 3, not 2

    def line(self) -> str:
        fix = f"  (fix: {self.fix})" if self.fix and self.status in ("fail", "warn") else ""
        return f"{LABELS[self.status]:<5} {self.name:<30} {self.detail}{fix}"


@dataclass
class Report:
    """The checks of one environment, in order."""

    env: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        if any(c.tool for c in self.failed):
            return EXIT_TOOL
        return EXIT_FAILED if self.failed else 0

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in LABELS}
        verdict = "ready to bake" if not self.failed else "NOT ready to bake"
        return (
            f"doctor {self.env}: {verdict}: {counts['ok']} ok, {counts['fail']} failed, {counts['warn']} warnings, "
            f"{counts['skip']} skipped ({self.seconds:.1f} s)"
        )

    def text(self) -> str:
        return "\n".join([*(c.line() for c in self.checks), self.summary()])

    def to_json(self) -> str:
        checks = [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in self.checks]
        return json.dumps({"env": self.env, "checks": checks, "failed": len(self.failed)}, indent=2)


class PreflightFailed(BakeryError):
    """A GCE bake's preflight found problems: nothing was started."""

    def __init__(self, report: Report) -> None:
        failed = "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in report.failed)
        super().__init__(
            f"preflight of environment {report.env} failed, no VM was started: {failed} "
            f"(details: invoke doctor --env {report.env}; emergencies: --skip-preflight)"
        )
        self.exit_code = report.exit_code
        self.report = report


class _Unreachable(Exception):
    """Internal: an API did not answer its probe; its checks fail without calling it again."""


class _NoCredentials(Exception):
    """Internal: no credentials, so no API can be asked; the API checks are skipped."""


def installed_plugins() -> proc.Completed:
    """``packer plugins installed``: the plugin binaries Packer (>= 1.7) finds."""
    return proc.run(["packer", "plugins", "installed"], timeout=TOOL_TIMEOUT, check=False)


def gcloud_accounts() -> proc.Completed:
    """The account gcloud runs as, given the credential file bakery hands it (bakery/gcloud.py)."""
    return proc.run(
        ["gcloud", "auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
        timeout=TOOL_TIMEOUT,
        check=False,
        env=override_for(os.environ),
    )  # without bakery's credential file for gcloud (check_gcloud asks only then)


def default_credentials() -> tuple[google.auth.credentials.Credentials, str | None]:
    """Application default credentials (raises DefaultCredentialsError when there are none)."""
    return google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])


@dataclass
class Tools:
    """How the doctor looks at the host: PATH lookups, two read-only commands, Packer's version and the
    application default credentials (tests replace them)."""

    which: Callable[[str], str | None] = shutil.which
    plugins: Callable[[], proc.Completed] = installed_plugins
    gcloud_accounts: Callable[[], proc.Completed] = gcloud_accounts
    packer_version: Callable[[], tuple[int, int, int]] = detect_version
    credentials: Callable[[], tuple[google.auth.credentials.Credentials, str | None]] = default_credentials
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


@dataclass
class Doctor:
    """The checks of one GCE environment (``specs``: its variants to check, all of one environment)."""

    specs: Sequence[BuildSpec]
    compute: ComputeClients | None
    cloud: CloudClients | None
    tools: Tools = field(default_factory=Tools)
    down: dict[str, str] = field(default_factory=dict)  # API -> why it is unreachable
    cache: dict[str, Any] = field(default_factory=dict)  # probe answers (or the error they raised)

    def __post_init__(self) -> None:
        spec = self.specs[0]
        assert spec.env.gce is not None and spec.env.pubsub is not None  # validated for target 'gce'
        self.env_name = spec.env_name
        self.gce: GceSettings = spec.env.gce
        self.pubsub: PubSub = spec.env.pubsub
        self.region = zone_region(self.gce.zone)

    # --- running -------------------------------------------------------------------------------------

    def run(self, *, tools_first: bool = False) -> Report:
        """Every check, in order. ``tools_first`` (the preflight): stop after the host's tools if one is
        missing, before any API is called (exit 3)."""
        started = time.monotonic()
        report = Report(self.env_name)
        for tool_check in (self.check_packer, self.check_gcloud, self.check_ssh):
            report.checks.extend(self._guarded(tool_check))
        if tools_first and report.failed:
            report.seconds = time.monotonic() - started
            return report
        self._probe()
        for check in (
            self.check_credentials,
            self.check_project,
            self.check_compute_api,
            self.check_os_login,
            self.check_zones,
            self.check_quota_region,
            self.check_quota_project,
            self.check_permissions,
            self.check_act_as,
            self.check_subnetwork,
            self.check_private_google_access,
            self.check_iap_firewall,
            self.check_nat,
            *(
                _named(f"images.source.{spec.variant_name}", partial(self.check_source_image, spec))
                for spec in self.specs
            ),
            *(_named(f"images.head.{spec.variant_name}", partial(self.check_head, spec)) for spec in self.specs),
            self.check_topic,
            self.check_publishers,
            self.check_test_vm_topic,
        ):
            report.checks.extend(self._guarded(check))
        report.seconds = time.monotonic() - started
        return report

    def _guarded(self, check: Callable[[], Iterator[Check]]) -> list[Check]:
        name = getattr(check, "check_name", None) or NAMES[check.__name__]
        try:
            return list(check())
        except _NoCredentials:
            return [Check(name, "skip", "no credentials to ask the APIs with (see credentials)")]
        except _Unreachable as exc:
            return [Check(name, "fail", str(exc), "check the network path and the endpoint, then run doctor again")]
        except (ComputeApiError, CloudApiError) as exc:
            if _denied(exc) and name in DENIAL_FAILS:
                return [Check(name, "fail", str(exc), DENIAL_FAILS[name].format(project=self.gce.project))]
            if _denied(exc):  # the doctor may not read it: unknown, not broken (a bake may still work)
                return [Check(name, "warn", f"not checked: {exc}", READ_ROLES)]
            return [Check(name, "fail", str(exc), "run doctor again; if it persists, check the API's status page")]
        except BakeryError as exc:  # a host command that timed out or failed to start
            tool = name.startswith("tools.")
            return [Check(name, "fail", str(exc).splitlines()[0], "run the command by hand to see why", tool)]

    def _probe(self) -> None:
        """One call per API, in parallel; their answers are reused by the checks."""
        probes: dict[str, Callable[[], Any]] = {
            "compute.project": lambda: self._compute(
                "projects.get", self._c.projects.get, compute_v1.GetProjectRequest(project=self.gce.project), probe=True
            ),
            "resourcemanager.project": lambda: self._cloud(
                "Resource Manager",
                f"project {self.gce.project}",
                self._g.projects.get_project,
                {"name": f"projects/{self.gce.project}"},
                probe=True,
            ),
            "pubsub.topic": lambda: self._cloud(
                "Pub/Sub", f"topic {self._topic}", self._g.publisher.get_topic, {"topic": self._topic}, probe=True
            ),
            "iam.probe": lambda: (
                self._act_as(self.gce.service_account, probe=True) if self.gce.service_account else None
            ),
        }

        # Daemon threads, not an executor: a Ctrl-C while a probe waits on a silent API must not wait for it.
        def probe(key: str, fn: Callable[[], Any]) -> None:
            try:
                self.cache[key] = fn()
            except Exception as exc:  # noqa: BLE001 - kept for the check that reads it
                self.cache[key] = exc

        threads = [threading.Thread(target=probe, args=item, daemon=True) for item in probes.items()]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + PROBE_TIMEOUT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for key in probes:  # a probe still running past every call's timeout and retry: treat its API as silent
            self.cache.setdefault(key, _Unreachable(f"{key}: no answer within {PROBE_TIMEOUT:g} s"))

    def _cached(self, key: str) -> Any:
        value = self.cache[key]
        if isinstance(value, BaseException):
            raise value
        return value

    @property
    def _c(self) -> ComputeClients:
        if self.compute is None:
            raise _NoCredentials
        return self.compute

    @property
    def _g(self) -> CloudClients:
        if self.cloud is None:
            raise _NoCredentials
        return self.cloud

    @property
    def _topic(self) -> str:
        return f"projects/{self.pubsub.project}/topics/{self.pubsub.topic}"

    def _compute(
        self, what: str, method: Callable[..., Any], request: Any, *, probe: bool = False, pages: bool = False
    ) -> Any:
        if self.compute is None:
            raise _NoCredentials
        if "Compute" in self.down:
            raise _Unreachable(self.down["Compute"])
        try:
            if pages:
                return self.compute.list_all(what, method, request)
            return self.compute.call(what, method, request)
        except ComputeApiError as exc:
            if probe and _transport_failure(exc):
                self.down["Compute"] = f"cannot reach the Compute API at {self.compute.endpoint or 'Google'}: {exc}"
                raise _Unreachable(self.down["Compute"]) from exc
            raise

    def _cloud(self, api: str, what: str, method: Callable[..., Any], request: Any, *, probe: bool = False) -> Any:
        if self.cloud is None:
            raise _NoCredentials
        if api in self.down:
            raise _Unreachable(self.down[api])
        try:
            return self.cloud.call(api, what, method, request)
        except CloudApiError as exc:
            if probe and _transport_failure(exc):
                where = self.cloud.endpoints.get(api) or "Google"
                self.down[api] = f"cannot reach the {api} API at {where}: {exc}"
                raise _Unreachable(self.down[api]) from exc
            raise

    # --- tools ---------------------------------------------------------------------------------------

    def check_packer(self) -> Iterator[Check]:
        name = "tools.packer"
        if self.tools.which("packer") is None:
            yield Check(
                name, "fail", "packer not found on PATH", "install Packer (README: before the first bake)", True
            )
            return
        try:
            version = self.tools.packer_version()
        except BakeryError as exc:
            yield Check(name, "fail", f"`packer version` failed: {exc}", "reinstall Packer", True)
            return
        dotted = ".".join(map(str, version))
        try:
            packer_plugins.check_iap(version, use_iap=self.gce.use_iap, env_name=self.env_name)
        except ToolMissingError as exc:
            yield Check(name, "fail", f"Packer {dotted}: {exc}", "install Packer >= 1.14 or set use_iap: false", True)
            return
        if not packer_plugins.uses_plugins(version):
            yield Check(name, "ok", f"Packer {dotted} (googlecompute built in; no IAP)")
            return
        plugin = packer_plugins.PLUGINS["gce"]
        listed = self.tools.plugins()
        binary = f"packer-plugin-{plugin.name}_v{plugin.version}_"
        if listed.returncode == 0 and binary in listed.output:
            yield Check(name, "ok", f"Packer {dotted}, plugin {plugin.name} {plugin.version} installed")
        elif listed.returncode != 0:
            yield Check(
                name,
                "warn",
                f"Packer {dotted}: `packer plugins installed` failed, so plugin {plugin.name} {plugin.version} "
                "could not be looked for",
                "make sure the plugin is in PACKER_PLUGIN_PATH (or let the bake's `packer init` fetch it)",
            )
        elif version >= packer_plugins.RECOMMENDED:
            yield Check(
                name,
                "warn",
                f"Packer {dotted}: plugin {plugin.name} {plugin.version} is not installed yet",
                "the bake's `packer init` fetches it from HashiCorp's release site (needs that network path); "
                "or run `packer init` on a rendered template beforehand",
            )
        else:
            yield Check(
                name,
                "fail",
                f"Packer {dotted}: plugin {plugin.name} {plugin.version} is not installed and this Packer cannot "
                "fetch official plugins (only >= 1.14 can)",
                f"install the plugin by hand or Packer >= {'.'.join(map(str, packer_plugins.RECOMMENDED))}",
                True,
            )

    def check_gcloud(self) -> Iterator[Check]:
        name = "tools.gcloud"
        if not self.gce.use_iap:
            yield Check(name, "skip", "not needed: use_iap is false")
            return
        if self.tools.which("gcloud") is None:
            yield Check(
                name,
                "fail",
                "gcloud not found on PATH (IAP tunnels of the test stage and of Packer need it)",
                "install google-cloud-cli from Google's apt repository",
                True,
            )
            return
        override = override_for(self.tools.environ).get(OVERRIDE)
        if override:
            yield Check(
                name,
                "ok",
                f"gcloud is handed bakery's credential file {override} ({OVERRIDE}): the IAP tunnels run as the "
                "application default identity",
            )
            return
        listed = self.tools.gcloud_accounts()
        account = listed.output.strip().splitlines()[0] if listed.returncode == 0 and listed.output.strip() else ""
        identity = self._identity()
        if not account:
            yield Check(
                name,
                "fail",
                "gcloud has no active account and no credential file is set for it",
                "gcloud auth login, or set GOOGLE_APPLICATION_CREDENTIALS (bakery hands the file to gcloud)",
            )
        elif identity and identity != account:
            yield Check(
                name,
                "fail",
                f"gcloud is authenticated as {account}, application default credentials as {identity}: the "
                "IAP tunnels would run as another identity",
                "set GOOGLE_APPLICATION_CREDENTIALS (bakery hands the same file to gcloud), or log both in as one",
            )
        else:
            same = "" if identity else " (the application default identity is not known: compare by hand)"
            yield Check(name, "ok" if identity else "warn", f"gcloud authenticated as {account}{same}")

    def check_ssh(self) -> Iterator[Check]:
        missing = [tool for tool in ("ssh", "ssh-keygen") if self.tools.which(tool) is None]
        if missing:
            yield Check("tools.ssh", "fail", f"{', '.join(missing)} not found", "apt-get install openssh-client", True)
        else:
            yield Check("tools.ssh", "ok", "ssh and ssh-keygen found")

    # --- credentials and project ----------------------------------------------------------------------

    def _identity(self) -> str:
        identity: str = self.cache["identity"][0]
        return identity

    def check_credentials(self) -> Iterator[Check]:
        identity, problem = self.cache["identity"]
        if problem:
            yield Check(
                "credentials",
                "fail",
                problem,
                "gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS=key.json",
            )
        else:
            yield Check("credentials", "ok", f"application default credentials: {identity or 'identity not known'}")

    def check_project(self) -> Iterator[Check]:
        project = self._cached("resourcemanager.project")
        state = project.state.name
        status: Status = "ok" if state == "ACTIVE" else "fail"
        yield Check(
            "project",
            status,
            f"{self.gce.project} ({project.name}) is {state}",
            "" if status == "ok" else "use an ACTIVE project (a project being deleted cannot create VMs)",
        )

    def check_compute_api(self) -> Iterator[Check]:
        try:
            self._cached("compute.project")
        except ComputeApiError as exc:
            if _reason(exc) in ("accessNotConfigured", "SERVICE_DISABLED"):
                yield Check(
                    "project.compute-api",
                    "fail",
                    f"the Compute Engine API is not enabled in {self.gce.project}",
                    f"gcloud services enable compute.googleapis.com --project {self.gce.project}",
                )
                return
            raise
        yield Check("project.compute-api", "ok", f"Compute Engine API answers for {self.gce.project}")

    def check_os_login(self) -> Iterator[Check]:
        project: compute_v1.Project = self._cached("compute.project")
        items = {i.key: i.value for i in project.common_instance_metadata.items}
        enabled = items.get("enable-oslogin", "").strip().upper() == "TRUE"
        if enabled:
            yield Check(
                "project.os-login",
                "warn",
                "OS Login is on for the project (enable-oslogin=TRUE in project metadata): the test VM turns it "
                "off in its own metadata (instance metadata wins), which an organization policy "
                "constraints/compute.requireOsLogin would forbid",
                f"check: gcloud resource-manager org-policies describe compute.requireOsLogin --project "
                f"{self.gce.project} --effective (enforced: bake in an exempt project)",
            )
        else:
            yield Check("project.os-login", "ok", "OS Login is off at project level (the test VM's metadata key works)")

    def check_zones(self) -> Iterator[Check]:
        """Each zone of ``gce.zones`` (the fallback order) is UP and, if a fallback, offers the machine type
        (the first zone's machine type is quota.region's)."""
        for index, zone in enumerate(self.gce.zone_order):
            yield from self._guarded(_named(f"zones.{zone}", partial(self._check_zone, zone, fallback=index > 0)))

    def _check_zone(self, zone: str, *, fallback: bool) -> Iterator[Check]:
        name = f"zones.{zone}"
        found = self._compute(
            f"zone {zone}", self._c.zones.get, compute_v1.GetZoneRequest(project=self.gce.project, zone=zone)
        )
        if found.status != "UP":
            yield Check(name, "fail", f"zone {zone} is {found.status}", "drop it from gce.zones or pick another zone")
            return
        if fallback:
            try:
                self._compute(
                    f"machine type {self.gce.machine_type} in {zone}",
                    self._c.machine_types.get,
                    compute_v1.GetMachineTypeRequest(
                        project=self.gce.project, zone=zone, machine_type=self.gce.machine_type
                    ),
                )
            except ComputeNotFound:
                yield Check(
                    name,
                    "fail",
                    f"zone {zone} does not offer machine type {self.gce.machine_type}: a fallback there would fail",
                    "drop it from gce.zones or change gce.machine_type",
                )
                return
        yield Check(name, "ok", f"zone {zone} is UP" + (" (fallback)" if fallback else ""))

    def _machine(self) -> compute_v1.MachineType:
        if "machine" not in self.cache:
            try:
                self.cache["machine"] = self._compute(
                    f"machine type {self.gce.machine_type} in {self.gce.zone}",
                    self._c.machine_types.get,
                    compute_v1.GetMachineTypeRequest(
                        project=self.gce.project, zone=self.gce.zone, machine_type=self.gce.machine_type
                    ),
                )
            except ComputeNotFound as exc:
                self.cache["machine"] = exc
        return self._cached("machine")  # type: ignore[no-any-return]

    def check_quota_region(self) -> Iterator[Check]:
        zone = self.gce.zone
        try:
            machine = self._machine()
        except ComputeNotFound:
            yield Check(
                "quota.region",
                "fail",
                f"machine type {self.gce.machine_type} is not offered in {zone}",
                "set gce.machine_type to a type the zone offers (gcloud compute machine-types list --zones ZONE)",
            )
            return
        region = self._compute(
            f"region {self.region}",
            self._c.regions.get,
            compute_v1.GetRegionRequest(project=self.gce.project, region=self.region),
        )
        try:
            needs = iamfacts.quota_needs(
                machine.guest_cpus,
                self.gce.disk_type,
                self.gce.disk_size_gb,
                machine_type=self.gce.machine_type,
                external_ip=not self.gce.omit_external_ip,
            )
        except KeyError as exc:
            yield Check("quota.region", "warn", f"cannot tell which quota {exc.args[0]}", "check the quota by hand")
            return
        yield from _quota_checks("quota.region", f"region {self.region}", region.quotas, needs)

    def check_quota_project(self) -> Iterator[Check]:
        project: compute_v1.Project = self._cached("compute.project")
        try:
            cpus = self._machine().guest_cpus
        except ComputeNotFound:
            cpus = 0  # reported by quota.region
        needs = iamfacts.project_quota_needs(cpus)
        yield from _quota_checks("quota.project", f"project {self.gce.project}", project.quotas, needs)

    # --- permissions ----------------------------------------------------------------------------------

    def check_permissions(self) -> Iterator[Check]:
        wanted = iamfacts.permissions_for(
            STEPS,
            use_iap=self.gce.use_iap,
            external_ip=not self.gce.omit_external_ip,
            test_service_account=bool(self.gce.test_service_account),
        )
        held: set[str] = set()
        for chunk in iamfacts.permission_batches(wanted):
            answer = self._cloud(
                "Resource Manager",
                f"testIamPermissions on project {self.gce.project}",
                self._g.projects.test_iam_permissions,
                iam_policy_pb2.TestIamPermissionsRequest(resource=f"projects/{self.gce.project}", permissions=chunk),
            )
            held.update(answer.permissions)
        missing = [p for p in wanted if p not in held]
        if not missing:
            yield Check("permissions.project", "ok", f"the caller holds all {len(wanted)} permissions a bake uses")
            return
        roles = sorted({iamfacts.role_for(p) for p in missing})
        yield Check(
            "permissions.project",
            "fail",
            f"the caller lacks {len(missing)} of {len(wanted)} permissions a bake uses on {self.gce.project}: "
            f"{', '.join(missing)}",
            f"grant {', '.join(roles)} on the project to {self._identity() or 'the identity bakery runs as'}",
        )

    def _act_as(self, email: str, *, probe: bool = False) -> bool:
        accounts = self._g.iam.projects().serviceAccounts()
        answer = self._cloud(
            "IAM",
            f"testIamPermissions on service account {email}",
            iam_request(
                accounts.testIamPermissions(
                    resource=f"projects/-/serviceAccounts/{email}", body={"permissions": [iamfacts.ACT_AS]}
                )
            ),
            None,
            probe=probe,
        )
        return iamfacts.ACT_AS in answer.get("permissions", [])

    def check_act_as(self) -> Iterator[Check]:
        """The caller may act as the builder's account (Packer's default when none is set) and the test VM's."""
        for role in ("builder", "test VM"):
            yield from self._guarded(
                _named(f"permissions.act-as.{role.replace(' ', '-')}", partial(self._check_act_as, role))
            )

    def _check_act_as(self, role: str) -> Iterator[Check]:
        name = f"permissions.act-as.{role.replace(' ', '-')}"
        email = self._builder_account() if role == "builder" else self.gce.test_service_account
        if not email:
            yield Check(name, "skip", f"no {role} service account configured (the VM runs without one)")
            return
        try:
            probed = self.gce.service_account and email == self.gce.service_account
            allowed = self._cached("iam.probe") if probed else self._act_as(email)
        except CloudApiError as exc:
            if isinstance(exc.cause, api_exceptions.NotFound):
                yield Check(
                    name, "fail", f"service account {email} does not exist", f"create it, or fix gce.{_key(role)}"
                )
                return
            raise
        if allowed:
            yield Check(name, "ok", f"the caller may act as {email}")
        else:
            yield Check(
                name,
                "fail",
                f"the caller lacks {iamfacts.ACT_AS} on {email}",
                f"grant {iamfacts.ACT_AS_ROLE} on {email} to {self._identity() or 'the identity bakery runs as'}",
            )

    # --- network --------------------------------------------------------------------------------------

    @property
    def _network(self) -> tuple[str, str]:
        """(project, name) of the VPC network: a Shared VPC's host project when ``gce.subnetwork`` or
        ``gce.network`` is a ``projects/HOST/...`` path (as the builder and test VM are given them), else
        ``gce.project``."""
        for link in (self.gce.subnetwork, self.gce.network):
            found = SHARED_VPC_LINK.search(link)
            if found:
                return found["project"], self.gce.network.rsplit("/", 1)[-1]
        return self.gce.project, self.gce.network.rsplit("/", 1)[-1]

    def _subnetwork(self) -> compute_v1.Subnetwork | None:
        if not self.gce.subnetwork:
            return None
        if "subnetwork" not in self.cache:
            project, name = self._network[0], self.gce.subnetwork.rsplit("/", 1)[-1]
            try:
                self.cache["subnetwork"] = self._compute(
                    f"subnetwork {name} in {self.region} of project {project}",
                    self._c.subnetworks.get,
                    compute_v1.GetSubnetworkRequest(project=project, region=self.region, subnetwork=name),
                )
            except ComputeNotFound as exc:
                self.cache["subnetwork"] = exc
        return self._cached("subnetwork")  # type: ignore[no-any-return]

    def check_subnetwork(self) -> Iterator[Check]:
        if not self.gce.subnetwork:
            yield Check(
                "network.subnetwork",
                "skip",
                f"no subnetwork configured: network {self.gce.network}'s own in {self.region}",
            )
            return
        try:
            subnet = self._subnetwork()
        except ComputeNotFound:
            yield Check(
                "network.subnetwork",
                "fail",
                f"subnetwork {self.gce.subnetwork} does not exist in region {self.region} of project "
                f"{self._network[0]} (zone {self.gce.zone})",
                "create it in the zone's region, or fix gce.subnetwork / gce.zone",
            )
            return
        assert subnet is not None
        network = subnet.network.rsplit("/", 1)[-1]
        if network != self._network[1]:
            yield Check(
                "network.subnetwork",
                "fail",
                f"subnetwork {self.gce.subnetwork} belongs to network {network}, not {self.gce.network}",
                "fix gce.network or gce.subnetwork",
            )
            return
        yield Check(
            "network.subnetwork",
            "ok",
            f"{subnet.name} ({subnet.ip_cidr_range}) in {self.region}, network {network} of {self._network[0]}",
        )

    def check_private_google_access(self) -> Iterator[Check]:
        name = "network.private-google-access"
        if not self.gce.omit_external_ip:
            yield Check(name, "skip", "the VMs get an external IP (omit_external_ip: false)")
            return
        try:
            subnet = self._subnetwork()
        except ComputeNotFound:
            yield Check(name, "skip", "no such subnetwork (see network.subnetwork)")
            return
        if subnet is None:
            yield Check(name, "skip", "no subnetwork configured: the network's own is not read")
            return
        if subnet.private_ip_google_access:
            yield Check(name, "ok", f"Private Google Access is on for {subnet.name}")
        else:
            yield Check(
                name,
                "warn",
                f"Private Google Access is off for {subnet.name} and the VMs have no external IP: the guest "
                "agent and Google APIs are unreachable from the builder and test VM (without Cloud NAT)",
                f"gcloud compute networks subnets update {subnet.name} --region {self.region} "
                f"--project {self._network[0]} --enable-private-ip-google-access",
            )

    def check_iap_firewall(self) -> Iterator[Check]:
        """Each VM (builder, test) is reached by IAP on TCP 22 through a rule in effect on the network: a VPC
        rule or a firewall policy rule (networks.getEffectiveFirewalls returns both). Deny rules are not
        weighed against allow rules."""
        name = "network.iap-firewall"
        if not self.gce.use_iap:
            yield Check(name, "skip", "use_iap is false: ssh goes to the VM's address directly")
            return
        project, network = self._network
        effective = self._compute(
            f"firewall rules in effect on network {network} of {project}",
            self._c.networks.get_effective_firewalls,
            compute_v1.GetEffectiveFirewallsNetworkRequest(project=project, network=network),
        )
        vms = {"builder VM": self._builder_account(), "test VM": self.gce.test_service_account}
        found: dict[str, str] = {}
        for vm, account in vms.items():
            for rule in effective.firewalls:
                if _admits_iap_ssh(rule, network, account):
                    found[vm] = f"rule {rule.name}"
                    break
            else:
                for policy in effective.firewall_policys:
                    if any(_policy_admits_iap_ssh(r, account) for r in policy.rules):
                        found[vm] = f"firewall policy {policy.short_name or policy.name}"
                        break
        missing = [vm for vm in vms if vm not in found]
        if not missing:
            how = ", ".join(sorted(set(found.values())))
            yield Check(name, "ok", f"{how} lets IAP ({iamfacts.IAP_SOURCE_RANGE}) reach TCP 22 on both VMs")
            return
        who = " and ".join(f"the {vm} ({vms[vm] or 'no service account'})" for vm in missing)
        yield Check(
            name,
            "fail",
            f"no rule in effect on network {network} lets IAP's range {iamfacts.IAP_SOURCE_RANGE} reach TCP 22 "
            f"on {who}",
            f"gcloud compute firewall-rules create allow-iap-ssh --project {project} --network {network} "
            f"--direction INGRESS --allow tcp:22 --source-ranges {iamfacts.IAP_SOURCE_RANGE}",
        )

    def _builder_account(self) -> str:
        """The builder VM's account: ``gce.service_account``, else the project's default Compute Engine one,
        which Packer gives it (iamfacts.builder_service_account)."""
        if self.gce.service_account:
            return self.gce.service_account
        project: compute_v1.Project = self._cached("compute.project")
        return iamfacts.builder_service_account("", str(project.id))

    def check_nat(self) -> Iterator[Check]:
        name = "network.nat"
        needs_internet = self.specs[0].artifact_source == "upstream"
        if not self.gce.omit_external_ip:
            yield Check(name, "skip", "the builder gets an external IP")
            return
        if not needs_internet:
            yield Check(
                name, "skip", f"artifacts come from {self.specs[0].artifact_source}, not the vendors' repositories"
            )
            return
        project, network = self._network
        routers = self._compute(
            f"routers in {self.region} of project {project}",
            self._c.routers.list,
            compute_v1.ListRoutersRequest(project=project, region=self.region),
        )
        for router in routers.items:
            if router.network.rsplit("/", 1)[-1] != network:
                continue
            for nat in router.nats:
                if iamfacts.nat_covers(nat, self.gce.subnetwork):
                    yield Check(
                        name, "ok", f"Cloud NAT {router.name}/{nat.name} gives {self.gce.subnetwork or network} egress"
                    )
                    return
        yield Check(
            name,
            "fail",
            f"no Cloud NAT in {self.region} covers {self.gce.subnetwork or network}, and the builder has no external "
            "IP: it cannot reach pkg.osquery.io and the Fluentd repository (artifacts.source: upstream)",
            f"add a Cloud NAT on a router of network {network} in {self.region}, or use artifacts.source: mirror",
        )

    # --- images ---------------------------------------------------------------------------------------

    def check_source_image(self, spec: BuildSpec) -> Iterator[Check]:
        name = f"images.source.{spec.variant_name}"
        variant = spec.variant
        where = f"{variant.source_image_project}/{variant.source_image_family}"
        try:
            image = self._compute(
                f"source image family {where}",
                self._c.images.get_from_family,
                compute_v1.GetFromFamilyImageRequest(
                    project=variant.source_image_project, family=variant.source_image_family
                ),
            )
        except ComputeNotFound:
            yield Check(
                name,
                "fail",
                f"family {where} has no ACTIVE image (or does not exist)",
                f"fix bakery.variants.{spec.variant_name}.source_image_project/source_image_family",
            )
            return
        if image.status != "READY":
            yield Check(
                name,
                "fail",
                f"{where} resolves to {image.name}, which is {image.status}",
                "wait or pick another family",
            )
            return
        yield Check(name, "ok", f"{where} is {image.name}")

    def check_head(self, spec: BuildSpec) -> Iterator[Check]:
        name = f"images.head.{spec.variant_name}"
        try:
            image = self._compute(
                f"family {spec.family}",
                self._c.images.get_from_family,
                compute_v1.GetFromFamilyImageRequest(project=self.gce.project, family=spec.family),
            )
        except ComputeNotFound:
            yield Check(name, "ok", f"{spec.family} has no image yet (the first bake creates it)")
            return
        yield Check(name, "ok", f"{spec.family} is {image.name} (created {image.creation_timestamp})")

    # --- Pub/Sub --------------------------------------------------------------------------------------

    def check_topic(self) -> Iterator[Check]:
        try:
            self._cached("pubsub.topic")
        except CloudApiError as exc:
            if isinstance(exc.cause, api_exceptions.NotFound):
                yield Check(
                    "pubsub.topic",
                    "fail",
                    f"topic {self._topic} does not exist",
                    f"create it (gcloud pubsub topics create {self.pubsub.topic} --project {self.pubsub.project}) "
                    "or fix pubsub.project/topic",
                )
                return
            raise
        yield Check("pubsub.topic", "ok", f"{self._topic} exists")

    def _policy_members(self) -> dict[str, set[str]]:
        """member -> roles, from the topic's policy and (if readable) the topic project's."""
        if "policies" in self.cache:
            return self._cached("policies")  # type: ignore[no-any-return]
        members: dict[str, set[str]] = {}
        policy = self._cloud(
            "Pub/Sub",
            f"IAM policy of {self._topic}",
            self._g.publisher.get_iam_policy,
            iam_policy_pb2.GetIamPolicyRequest(resource=self._topic, options=POLICY_V3),
        )
        sources = [policy]
        try:
            sources.append(
                self._cloud(
                    "Resource Manager",
                    f"IAM policy of project {self.pubsub.project}",
                    self._g.projects.get_iam_policy,
                    iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{self.pubsub.project}", options=POLICY_V3),
                )
            )
        except CloudApiError as exc:
            if not isinstance(exc.cause, api_exceptions.PermissionDenied | api_exceptions.Forbidden):
                raise
            self.cache["project-policy-unreadable"] = str(exc)
        for source in sources:
            for binding in source.bindings:
                if binding.condition.expression:
                    continue  # conditional grants are not evaluated here
                for member in binding.members:
                    members.setdefault(member, set()).add(binding.role)
        self.cache["policies"] = members
        return members

    def check_publishers(self) -> Iterator[Check]:
        name = "pubsub.publishers"
        if isinstance(self.cache.get("pubsub.topic"), BaseException):
            yield Check(name, "skip", "no topic to read (see pubsub.topic)")
            return
        if not self.pubsub.publishers:
            yield Check(
                name,
                "warn",
                "no publishers configured: the fleet's right to publish is not checked",
                "list the fleet's service accounts in pubsub.publishers",
            )
            return
        members = self._policy_members()
        problems = []
        for member in self.pubsub.publishers:
            granted = iamfacts.topic_permissions(members.get(member, set()))
            lacking = [p for p in iamfacts.PUBLISHER_PERMISSIONS if p not in granted]
            if lacking:
                problems.append(f"{member} lacks {', '.join(lacking)}")
        unread = self.cache.get("project-policy-unreadable")
        if problems:
            note = " (the project's policy could not be read: only the topic's was)" if unread else ""
            yield Check(
                name,
                "warn",
                f"on {self._topic}: {'; '.join(problems)}{note}; grants through groups, folders, the organization "
                "or custom roles are not seen",
                f"grant {' and '.join(iamfacts.PUBLISHER_ROLES)} on the topic to each",
            )
        else:
            yield Check(
                name, "ok", f"{len(self.pubsub.publishers)} fleet identities may publish to {self.pubsub.topic}"
            )

    def check_test_vm_topic(self) -> Iterator[Check]:
        name = "pubsub.test-vm"
        if not self.gce.test_service_account:
            yield Check(name, "ok", "the test VM runs without a service account: its records cannot reach the topic")
            return
        if isinstance(self.cache.get("pubsub.topic"), BaseException):
            yield Check(name, "skip", "no topic to read (see pubsub.topic)")
            return
        member = f"serviceAccount:{self.gce.test_service_account}"
        granted = iamfacts.topic_permissions(self._policy_members().get(member, set()))
        if iamfacts.PUBLISH in granted:
            yield Check(
                name,
                "fail",
                f"the test VM's account {self.gce.test_service_account} may publish to {self._topic}: test records "
                "would reach the SIEM",
                "remove its Pub/Sub role on the topic (README: IAM, per identity)",
            )
        else:
            yield Check(name, "ok", f"the test VM's account may not publish to {self.pubsub.topic}")


# --- helpers ---------------------------------------------------------------------------------------------


def _named(name: str, produce: Callable[[], Iterator[Check]]) -> Callable[[], Iterator[Check]]:
    """``produce`` under the name its lines carry, also when it raises (one variant, zone or account)."""

    def bound() -> Iterator[Check]:
        return produce()

    bound.check_name = name  # type: ignore[attr-defined]
    return bound


def _key(role: str) -> str:
    return "service_account" if role == "builder" else "test_service_account"


def _quota_checks(
    name: str, where: str, quotas: Sequence[compute_v1.Quota], needs: dict[str, float]
) -> Iterator[Check]:
    by_metric = {q.metric: q for q in quotas}
    short = []
    found = []
    for metric, need in needs.items():
        quota = by_metric.get(metric)
        if quota is None:
            continue  # a metric Google does not report here is not limited here
        free = quota.limit - quota.usage
        found.append(f"{metric} {free:g} free")
        if free < need:
            short.append(f"{metric}: {need:g} needed, {quota.usage:g} of {quota.limit:g} used")
    if short:
        yield Check(
            name, "fail", f"{where}: quota exhausted: {'; '.join(short)}", "free capacity or request a quota increase"
        )
    else:
        yield Check(name, "ok", f"{where}: {', '.join(found) or 'no limits reported'}")


def _admits_iap_ssh(rule: compute_v1.Firewall, network: str, account: str) -> bool:
    """An enabled VPC ingress allow rule on ``network`` from a range holding IAP's, to TCP 22, that applies
    to a VM running as ``account`` ('' = none) and carrying no network tags (bakery's VMs carry none)."""
    if rule.disabled or rule.direction != "INGRESS" or rule.network.rsplit("/", 1)[-1] != network:
        return False
    if rule.target_tags or (rule.target_service_accounts and account not in rule.target_service_accounts):
        return False
    if not _holds_iap(rule.source_ranges):
        return False
    return any(_allows_port(a.I_p_protocol, list(a.ports), 22) for a in rule.allowed)


def _policy_admits_iap_ssh(rule: compute_v1.FirewallPolicyRule, account: str) -> bool:
    """The same for a firewall policy rule (action ``allow``; secure-tag and resource targets never match)."""
    if rule.disabled or rule.direction != "INGRESS" or rule.action != "allow":
        return False
    if rule.target_secure_tags or rule.target_resources:
        return False
    if rule.target_service_accounts and account not in rule.target_service_accounts:
        return False
    if not _holds_iap(rule.match.src_ip_ranges):
        return False
    return any(_allows_port(c.ip_protocol, list(c.ports), 22) for c in rule.match.layer4_configs)


def _holds_iap(ranges: Sequence[str]) -> bool:
    iap = ipaddress.IPv4Network(iamfacts.IAP_SOURCE_RANGE)
    return any(iap.subnet_of(ipaddress.IPv4Network(r, strict=False)) for r in ranges if ":" not in r)


def _allows_port(protocol: str, ports: list[str], port: int) -> bool:
    if protocol not in ("tcp", "all", "6"):
        return False
    if not ports:
        return True
    for entry in ports:
        low, _, high = entry.partition("-")
        if int(low) <= port <= int(high or low):
            return True
    return False


def _transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or its causes) is a timeout or connection failure: the API did not answer at all."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
            return True
        if isinstance(seen, RetriesExhausted):
            seen = seen.last
            continue
        seen = seen.__cause__ or getattr(seen, "cause", None)
    return False


def _reason(exc: BaseException) -> str:
    """Google's ``reason`` of the API error behind ``exc`` (e.g. ``accessNotConfigured``), or ''."""
    cause = exc.__cause__
    if isinstance(cause, RetriesExhausted):
        cause = cause.last
    if isinstance(cause, api_exceptions.GoogleAPICallError):
        if cause.reason:
            return str(cause.reason)
        for error in cause.errors or []:
            if isinstance(error, dict) and error.get("reason"):
                return str(error["reason"])
    return ""


def _denied(exc: BaseException) -> bool:
    """Whether the API answered 403 (permission denied) to one of the doctor's reads."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, RetriesExhausted):
        cause = cause.last
    return isinstance(cause, api_exceptions.Forbidden)


# --- entry points ----------------------------------------------------------------------------------------


def doctor_for(specs: Sequence[BuildSpec], *, tools: Tools | None = None) -> Doctor:
    """A Doctor with the environment's own clients (endpoint overrides honoured) and short timeouts. Without
    credentials it still runs: the API checks are skipped and the credentials check says why."""
    spec = specs[0]
    if spec.env.target != "gce" or spec.env.gce is None:
        raise ConfigError(
            f"environment {spec.env_name} has target {spec.env.target!r}: doctor checks GCE environments "
            "(give --env with a gce environment)"
        )
    gce = spec.env.gce
    tools = tools or Tools()
    endpoint = resolve_endpoint(gce.api_endpoint)
    local = [
        e.startswith("http://")
        for e in (endpoint or "", *(resolve_endpoint(None, variable=v) or "" for v in ENDPOINT_ENVS.values()))
    ]
    doctor = Doctor(specs, None, None, tools)
    credentials: google.auth.credentials.Credentials | None = None
    if all(local):
        doctor.cache["identity"] = ("anonymous (local fake endpoints)", "")
        credentials = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    else:
        try:
            credentials, _ = tools.credentials()
        except google.auth.exceptions.DefaultCredentialsError:
            doctor.cache["identity"] = ("", "no application default credentials found")
        else:
            email = getattr(credentials, "service_account_email", None) or getattr(credentials, "account", None)
            doctor.cache["identity"] = ("" if email in (None, "", "default") else str(email), "")
    if credentials is not None:  # an http:// endpoint (a local fake) always gets anonymous credentials
        doctor.compute = ComputeClients.create(
            gce.project, gce.zone, endpoint=endpoint, credentials=credentials, timeout=CALL_TIMEOUT, retry=RETRY
        )
        doctor.cloud = CloudClients.create(credentials=credentials, timeout=CALL_TIMEOUT, retry=RETRY)
    return doctor


FORMATS = ("text", "json")


def command(specs: Sequence[BuildSpec], fmt: str, say: Say, *, tools: Tools | None = None) -> int:
    """`invoke doctor`: run every check for ``specs`` (one environment), print them; return the exit code."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not known: use one of {', '.join(FORMATS)}")
    report = doctor_for(specs, tools=tools).run()
    say(report.to_json() if fmt == "json" else report.text())
    return report.exit_code


def preflight(specs: Sequence[BuildSpec], say: Say, *, doctor: Doctor | None = None) -> Report:
    """The first phase of a GCE bake or nightly: the doctor's checks; raise PreflightFailed if one failed."""
    say(f"==> preflight ({specs[0].env_name}: {', '.join(s.variant_name for s in specs)})")
    report = (doctor or doctor_for(specs)).run(tools_first=True)
    for check in report.checks:
        if check.status in ("fail", "warn"):
            say(f"    {check.line()}")
    say(f"<== preflight ({report.seconds:.1f} s): {report.summary()}")
    if report.failed:
        raise PreflightFailed(report)
    return report
