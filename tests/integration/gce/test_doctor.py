"""`invoke doctor` on the fakes of Compute, Resource Manager, IAM and Pub/Sub (tests/fakes), through Google's
real client libraries: a correct environment passes every check, and each check fails (or warns) on an
environment that is wrong in exactly that way, while every other check stays as it was."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import google.auth.exceptions
import pytest

from bakery import cli, render
from bakery.config import BuildSpec
from bakery.gce import doctor
from bakery.gce.client import ENDPOINT_ENV
from bakery.gce.cloud import ENDPOINT_ENVS
from bakery.proc import Completed
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, PUBLIC_FAMILIES, ZONE

REGION = ZONE.rsplit("-", 1)[0]
NETWORK, SUBNET, TOPIC = "gstg", "gstg-image-builder", "osquery-results-gstg"
BUILDER = f"image-builder@{PROJECT}.iam.gserviceaccount.com"
TESTER = f"image-test@{PROJECT}.iam.gserviceaccount.com"
FLEET = f"serviceAccount:web@{PROJECT}.iam.gserviceaccount.com"
PACKER_PLUGINS = (
    "/home/ci/.config/packer/plugins/github.com/hashicorp/googlecompute/"
    "packer-plugin-googlecompute_v1.2.7_x5.0_linux_amd64\n"
)
READ_ONLY_POSTS = (".testIamPermissions", ".getIamPolicy")


def doctor_specs(tmp_path: Path, **gce: object) -> list[BuildSpec]:
    """The project's gstg environment (all three variants), pointed at the fake's project."""
    config = cli.project_settings().config
    env = config.environments["gstg"]
    assert env.gce is not None and env.pubsub is not None
    settings = env.gce.model_copy(
        update={
            "project": PROJECT,
            "zone": ZONE,
            "network": NETWORK,
            "subnetwork": SUBNET,
            "service_account": BUILDER,
            "test_service_account": TESTER,
            "use_iap": True,
            "omit_external_ip": True,
            **gce,
        }
    )
    pubsub = env.pubsub.model_copy(update={"project": PROJECT, "topic": TOPIC, "publishers": (FLEET,)})
    env = env.model_copy(update={"gce": settings, "pubsub": pubsub})
    config = config.model_copy(
        update={"environments": {**config.environments, "gstg": env}, "build_dir": str(tmp_path / "build")}
    )
    return [BuildSpec(config, "gstg", variant, render.PROJECT_ROOT) for variant in env.variants]


def seed_ready(fake: FakeCompute) -> None:
    """Everything a gstg bake needs: network, subnetwork with Private Google Access, the IAP rule, Cloud NAT,
    both service accounts, the topic with the fleet's publisher and viewer roles."""
    fake.seed_network(NETWORK)
    fake.seed_subnetwork(REGION, SUBNET, network=NETWORK)
    fake.seed_firewall("allow-iap-ssh", network=NETWORK, source_ranges=["35.235.240.0/20"])
    fake.seed_router(REGION, "gstg-nat", network=NETWORK)
    fake.iam.seed_service_account(BUILDER)
    fake.iam.seed_service_account(TESTER)
    fake.pubsub.seed_topic(PROJECT, TOPIC, bindings={"roles/pubsub.publisher": [FLEET], "roles/pubsub.viewer": [FLEET]})


def host_tools(
    *,
    packer: tuple[int, int, int] = (1, 14, 0),
    plugins_listed: str = PACKER_PLUGINS,
    gcloud: str | None = "anonymous (local fake endpoints)",
) -> doctor.Tools:
    """The host as the doctor sees it: every tool on PATH, this Packer, these plugins, gcloud logged in as
    ``gcloud`` (None: not installed)."""

    def which(name: str) -> str | None:
        return None if name == "gcloud" and gcloud is None else f"/usr/bin/{Path(name).name}"

    def plugins() -> Completed:
        return Completed(["packer", "plugins", "installed"], 0, plugins_listed)

    def accounts() -> Completed:
        return Completed(["gcloud", "auth", "list"], 0, f"{gcloud}\n")

    return doctor.Tools(
        which=which, plugins=plugins, gcloud_accounts=accounts, packer_version=lambda: packer, environ={}
    )


@pytest.fixture
def endpoints(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (ENDPOINT_ENV, *ENDPOINT_ENVS.values()):
        monkeypatch.setenv(variable, fake.endpoint)


def run_doctor(tmp_path: Path, tools: doctor.Tools | None = None, **gce: object) -> doctor.Report:
    return doctor.doctor_for(doctor_specs(tmp_path, **gce), tools=tools or host_tools()).run()


def statuses(report: doctor.Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@pytest.mark.usefixtures("endpoints")
def test_a_ready_environment_passes_every_check(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    report = run_doctor(tmp_path)
    assert report.failed == [], report.text()
    assert report.exit_code == 0
    found = statuses(report)
    for name in (
        "tools.packer",
        "tools.gcloud",
        "tools.ssh",
        "credentials",
        "project",
        "project.compute-api",
        "project.os-login",
        f"zones.{ZONE}",
        "quota.region",
        "quota.project",
        "permissions.project",
        "permissions.act-as.builder",
        "permissions.act-as.test-VM",
        "network.subnetwork",
        "network.private-google-access",
        "network.iap-firewall",
        "network.nat",
        *(f"images.source.{v}" for v in PUBLIC_FAMILIES),
        *(f"images.head.{v}" for v in PUBLIC_FAMILIES),
        "pubsub.topic",
        "pubsub.publishers",
        "pubsub.test-vm",
    ):
        assert found.get(name) == "ok", f"{name}: {found.get(name)}\n{report.text()}"
    assert report.summary().startswith("doctor gstg: ready to bake: ")
    # read-only: every call was a GET or one of the read-only POST methods (testIamPermissions, getIamPolicy)
    writes = [c for c in fake.calls if c.http_method != "GET" and not c.method.endswith(READ_ONLY_POSTS)]
    assert fake.calls and writes == []


def _disable_iap_rule(fake: FakeCompute) -> None:
    fake.firewalls.clear()
    fake.seed_firewall("allow-ssh-from-office", network=NETWORK, source_ranges=["203.0.113.0/24"])


def _deprecate_debian(fake: FakeCompute) -> None:
    project, family = PUBLIC_FAMILIES["debian-12"]
    fake.public_images[project].clear()
    fake.seed_public_image(project, f"{family}-v20261101", family, deprecated=True)


BROKEN: dict[str, tuple[Callable[[FakeCompute], None], str, str, str]] = {
    # case: (what breaks it, the check, its status, a word its detail must contain)
    "no IAP firewall rule": (_disable_iap_rule, "network.iap-firewall", "fail", "35.235.240.0/20"),
    "IAP rule for another port": (
        lambda f: (
            f.firewalls.clear(),
            f.seed_firewall("iap", network=NETWORK, source_ranges=["35.235.240.0/20"], allowed=[("tcp", ["3389"])]),
        ),
        "network.iap-firewall",
        "fail",
        "TCP 22",
    ),
    "OS Login on for the project": (
        lambda f: f.project_metadata.update({"enable-oslogin": "TRUE"}),
        "project.os-login",
        "warn",
        "enable-oslogin=TRUE",
    ),
    "a missing project permission": (
        lambda f: f.resourcemanager.denied.add("compute.images.create"),
        "permissions.project",
        "fail",
        "compute.images.create",
    ),
    "no actAs on the builder's account": (
        lambda f: f.iam.denied[BUILDER].add("iam.serviceAccounts.actAs"),
        "permissions.act-as.builder",
        "fail",
        BUILDER,
    ),
    "the test VM's account does not exist": (
        lambda f: f.iam.accounts.pop(TESTER),
        "permissions.act-as.test-VM",
        "fail",
        "does not exist",
    ),
    "no Cloud NAT": (lambda f: f.routers.clear(), "network.nat", "fail", "no Cloud NAT"),
    "NAT on the router of another network": (
        lambda f: (f.routers.clear(), f.seed_network("other"), f.seed_router(REGION, "other-nat", network="other")),
        "network.nat",
        "fail",
        "no Cloud NAT",
    ),
    "no such topic": (lambda f: f.pubsub.topics.clear(), "pubsub.topic", "fail", "does not exist"),
    # the fleet's right to publish does not decide whether a bake works: a warning (README)
    "the fleet lacks the viewer role": (
        lambda f: f.pubsub.topics[PROJECT, TOPIC].bindings.pop("roles/pubsub.viewer"),
        "pubsub.publishers",
        "warn",
        "pubsub.topics.get",
    ),
    "IAP rule only for another service account": (
        lambda f: (
            f.firewalls.clear(),
            f.seed_firewall(
                "iap-web", network=NETWORK, source_ranges=["35.235.240.0/20"], target_service_accounts=[BUILDER]
            ),
        ),
        "network.iap-firewall",
        "fail",
        f"the test VM ({TESTER})",
    ),
    "the test VM may publish": (
        lambda f: f.pubsub.topics[PROJECT, TOPIC].bindings["roles/pubsub.publisher"].append(f"serviceAccount:{TESTER}"),
        "pubsub.test-vm",
        "fail",
        TESTER,
    ),
    "a public family without an ACTIVE image": (
        _deprecate_debian,
        "images.source.debian-12",
        "fail",
        "no ACTIVE image",
    ),
    "CPU quota exhausted": (
        lambda f: f.set_quota("CPUS", limit=24, usage=23, region=REGION),
        "quota.region",
        "fail",
        "CPUS",
    ),
    "disk quota exhausted": (
        lambda f: f.set_quota("SSD_TOTAL_GB", limit=500, usage=495, region=REGION),
        "quota.region",
        "fail",
        "SSD_TOTAL_GB",
    ),
    "image quota exhausted": (lambda f: f.set_quota("IMAGES", limit=100, usage=99), "quota.project", "fail", "IMAGES"),
    "machine type not offered in the zone": (
        lambda f: f.unavailable_machine_types.add((ZONE, "e2-standard-2")),
        "quota.region",
        "fail",
        "not offered",
    ),
    "zone down": (lambda f: f.zone_status.update({ZONE: "DOWN"}), f"zones.{ZONE}", "fail", "DOWN"),
    "no such subnetwork": (lambda f: f.subnetworks.clear(), "network.subnetwork", "fail", "does not exist"),
    "Private Google Access off": (
        lambda f: f.subnetworks[REGION, SUBNET].update({"privateIpGoogleAccess": False}),
        "network.private-google-access",
        "warn",
        "off",
    ),
    "project being deleted": (
        lambda f: f.resourcemanager.projects[PROJECT].update({"state": "DELETE_REQUESTED"}),
        "project",
        "fail",
        "DELETE_REQUESTED",
    ),
}


@pytest.mark.usefixtures("endpoints")
@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_each_check_catches_its_cause(fake: FakeCompute, tmp_path: Path, case: str) -> None:
    breaker, name, status, word = BROKEN[case]
    seed_ready(fake)
    breaker(fake)
    report = run_doctor(tmp_path)
    changed = {n: s for n, s in statuses(report).items() if s not in ("ok", "skip")}
    assert changed == {name: status}, report.text()
    check = next(c for c in report.checks if c.name == name)
    assert word in check.detail and check.fix, check.line()
    assert report.exit_code == (doctor.EXIT_FAILED if status == "fail" else 0)


@pytest.mark.usefixtures("endpoints")
def test_compute_api_disabled_is_named_with_the_command_that_enables_it(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    fake.api_disabled = True
    report = run_doctor(tmp_path)
    check = next(c for c in report.checks if c.name == "project.compute-api")
    assert check.status == "fail" and check.fix == f"gcloud services enable compute.googleapis.com --project {PROJECT}"
    assert report.exit_code == doctor.EXIT_FAILED


@pytest.mark.usefixtures("endpoints")
@pytest.mark.parametrize(
    ("tools", "name", "word"),
    [
        (host_tools(packer=(1, 6, 6)), "tools.packer", "IAP"),
        (host_tools(packer=(1, 10, 0), plugins_listed=""), "tools.packer", "not installed"),
        (host_tools(gcloud=None), "tools.gcloud", "gcloud not found"),
    ],
    ids=["packer-1.6.6-with-iap", "plugin-missing", "no-gcloud"],
)
def test_tool_problems_exit_3(fake: FakeCompute, tmp_path: Path, tools: doctor.Tools, name: str, word: str) -> None:
    seed_ready(fake)
    report = run_doctor(tmp_path, tools)
    assert [c.name for c in report.failed] == [name], report.text()
    assert word in report.failed[0].detail
    assert report.exit_code == doctor.EXIT_TOOL


@pytest.mark.usefixtures("endpoints")
def test_configuration_makes_checks_irrelevant(fake: FakeCompute, tmp_path: Path) -> None:
    """Without IAP and with external IPs and mirrored artifacts, the IAP, gcloud, NAT and PGA checks skip
    with a reason, and nothing in the network is needed for them."""
    seed_ready(fake)
    fake.firewalls.clear()
    fake.routers.clear()
    report = run_doctor(tmp_path, use_iap=False, omit_external_ip=False)
    found = statuses(report)
    for name in ("tools.gcloud", "network.iap-firewall", "network.nat", "network.private-google-access"):
        assert found[name] == "skip", report.text()
    assert report.failed == []


@pytest.mark.usefixtures("endpoints")
def test_json_format(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    fake.pubsub.topics.clear()
    lines: list[str] = []
    code = doctor.command(doctor_specs(tmp_path), "json", lines.append, tools=host_tools())
    data = json.loads(lines[0])
    assert data["env"] == "gstg" and data["failed"] == 1 and code == doctor.EXIT_FAILED
    assert {"name", "status", "detail", "fix"} == set(data["checks"][0])
    assert [c["name"] for c in data["checks"] if c["status"] == "fail"] == ["pubsub.topic"]


@contextmanager
def never_answering() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers (its http:// URL)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.fixture
def silent_endpoint(loopback_ports: set[int]) -> Iterator[str]:
    with never_answering() as url:
        loopback_ports.add(int(url.rsplit(":", 1)[1]))
        yield url


def test_an_endpoint_that_never_answers_fails_each_api_in_one_line(
    fake: FakeCompute, silent_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every API points at a server that never answers: the doctor finishes (each API is probed once, in
    parallel, and its other checks fail without calling it again) and says which API and why."""
    for variable in (ENDPOINT_ENV, *ENDPOINT_ENVS.values()):
        monkeypatch.setenv(variable, silent_endpoint)
    result: list[doctor.Report] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(run_doctor(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=120)  # a hang guard, not a speed target (measured: benchmarks/bench_doctor.py)
    assert not worker.is_alive(), "doctor hung on a silent endpoint"
    report = result[0]
    elapsed = time.monotonic() - started
    api_checks = [c for c in report.checks if not c.name.startswith(("tools.", "credentials"))]
    assert api_checks and all(c.status in ("fail", "skip") for c in api_checks), report.text()
    reasons = {c.detail.split(":")[0] for c in report.failed}
    assert {"cannot reach the Compute API at " + silent_endpoint} <= {r for r in reasons} or any(
        "cannot reach the Compute API" in c.detail for c in report.failed
    )
    for api in ("Resource Manager", "Pub/Sub", "IAM"):
        assert any(f"cannot reach the {api} API" in c.detail for c in report.failed), report.text()
    assert all("\n" not in c.line() for c in report.checks)
    print(f"doctor against a silent endpoint: {elapsed:.1f} s")


@pytest.mark.usefixtures("endpoints")
def test_missing_ssh_exits_3(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    tools = host_tools()
    tools.which = lambda name: None if name in ("ssh", "ssh-keygen") else f"/usr/bin/{name}"
    report = run_doctor(tmp_path, tools)
    assert [(c.name, c.status) for c in report.failed] == [("tools.ssh", "fail")]
    assert report.exit_code == doctor.EXIT_TOOL


def test_no_credentials_fails_one_check_and_skips_the_apis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connections: list[Any]
) -> None:
    """Google's endpoints (no override) and no application default credentials: nothing is called, the
    credentials check says how to log in and every API check is skipped with the reason."""
    for variable in (ENDPOINT_ENV, *ENDPOINT_ENVS.values()):
        monkeypatch.delenv(variable, raising=False)
    tools = host_tools()

    def no_adc() -> Any:
        raise google.auth.exceptions.DefaultCredentialsError("no credentials")

    tools.credentials = no_adc
    report = run_doctor(tmp_path, tools)
    assert [c.name for c in report.failed] == ["credentials"]
    assert "gcloud auth application-default login" in report.failed[0].fix
    api_checks = [c for c in report.checks if not c.name.startswith(("tools.", "credentials"))]
    assert api_checks and {c.status for c in api_checks} == {"skip"}
    assert connections == []


# --- the real CLI ------------------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[3]
RUNTIME = f"""bakery:
  environments:
    gstg:
      variants: [debian-12]
      pubsub: {{project: {PROJECT}, topic: {TOPIC}, publishers: ["{FLEET}"]}}
      gce:
        project: {PROJECT}
        zone: {ZONE}
        network: {NETWORK}
        subnetwork: {SUBNET}
        service_account: {BUILDER}
        test_service_account: {TESTER}
        use_iap: false
"""


def invoke(fake: FakeCompute, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` in a subprocess with the real Packer on PATH, every API pointed at the fake."""
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(RUNTIME + f"  build_dir: {tmp_path / 'build'}\n")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("BAKERY_")}
    env.update({variable: fake.endpoint for variable in (ENDPOINT_ENV, *ENDPOINT_ENVS.values())})
    env.update(NO_PROXY="127.0.0.1", CHECKPOINT_DISABLE="1", GOOGLE_APPLICATION_CREDENTIALS="/nonexistent.json")
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(runtime), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_cli_doctor_prints_every_check_then_the_summary(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    proc = invoke(fake, tmp_path, "doctor", "--env", "gstg")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("doctor gstg: ready to bake: ") and "0 failed" in lines[-1]
    assert re.match(r"^ok    tools\.packer +Packer \d+\.\d+\.\d+", lines[0]), lines[0]
    assert all(re.match(r"^(ok|FAIL|warn|skip) +[a-z][\w.-]+ ", line) for line in lines[:-1]), proc.stdout
    assert any(line.startswith("skip  network.iap-firewall") for line in lines)


def test_cli_doctor_json_and_exit_2(fake: FakeCompute, tmp_path: Path) -> None:
    seed_ready(fake)
    fake.routers.clear()
    proc = invoke(fake, tmp_path, "doctor", "--env", "gstg", "--format", "json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    assert list(document) == ["env", "checks", "failed"] and document["failed"] == 1
    failed = [c for c in document["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["network.nat"] and failed[0]["fix"]
    bad = invoke(fake, tmp_path, "doctor", "--env", "gstg", "--format", "yaml")
    assert (bad.returncode, bad.stderr.strip()) == (2, "error: --format 'yaml' is not known: use one of text, json")
    local = invoke(fake, tmp_path, "doctor", "--env", "local")
    assert local.returncode == 2 and local.stderr.strip().startswith("error: environment local has target 'local'")


@pytest.mark.parametrize("task", ["bake", "nightly"])
def test_a_failing_preflight_starts_nothing_and_exits_2(fake: FakeCompute, tmp_path: Path, task: str) -> None:
    """A broken environment (no topic): the bake or nightly stops in its first phase, before any render,
    Packer or VM, with the failed check in one line; --skip-preflight goes past it."""
    seed_ready(fake)
    fake.pubsub.topics.clear()
    extra = ["--report-dir", str(tmp_path / "report")] if task == "nightly" else []
    proc = invoke(fake, tmp_path, task, "--env", "gstg", *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: preflight of environment gstg failed, no VM was started: ")
    assert "pubsub.topic: topic projects/bakery-test/topics/osquery-results-gstg does not exist" in error[0]
    assert "==> preflight" in proc.stdout and "FAIL  pubsub.topic" in proc.stdout
    assert {c.method for c in fake.calls if c.http_method != "GET"} <= {
        "cloudresourcemanager.projects.testIamPermissions",
        "cloudresourcemanager.projects.getIamPolicy",
        "iam.projects.serviceAccounts.testIamPermissions",
    }
    assert not (tmp_path / "build" / "gstg").exists()  # nothing rendered
    if task == "nightly":
        report = json.loads(next((tmp_path / "report").glob("nightly.json")).read_text())
        assert [v["action"] for v in report["variants"]] == ["not run"]
        assert "preflight failed (pubsub.topic)" in report["variants"][0]["reason"]
    # --skip-preflight: the run goes past the preflight and fails where the broken part is first used (here the
    # source family, also removed, so that nothing reaches Packer's googlecompute builder)
    fake.public_images.clear()
    skipped = invoke(fake, tmp_path, task, "--env", "gstg", "--skip-preflight", *extra)
    output = skipped.stdout + skipped.stderr
    assert skipped.returncode != 0 and "==> preflight" not in output, output
    assert "cannot resolve source image family debian-cloud/debian-12" in output
    assert not fake.calls_of("compute.instances.insert")


@pytest.mark.usefixtures("endpoints")
def test_every_fallback_zone_is_checked(fake: FakeCompute, tmp_path: Path) -> None:
    """gce.zones: each zone must be UP and offer the machine type, else a fallback there would fail."""
    seed_ready(fake)
    zones = (ZONE, f"{REGION}-c", f"{REGION}-d")
    assert run_doctor(tmp_path, zones=zones).failed == []
    fake.zone_status[zones[1]] = "DOWN"
    fake.unavailable_machine_types.add((zones[2], "e2-standard-2"))
    report = run_doctor(tmp_path, zones=zones)
    assert [(c.name, c.detail) for c in report.failed] == [
        (f"zones.{zones[1]}", f"zone {zones[1]} is DOWN"),
        (
            f"zones.{zones[2]}",
            f"zone {zones[2]} does not offer machine type e2-standard-2: a fallback there would fail",
        ),
    ]


@pytest.mark.usefixtures("endpoints")
def test_a_project_nobody_can_see_fails_and_unreadable_policies_only_warn(fake: FakeCompute, tmp_path: Path) -> None:
    """Resource Manager's 403 for a missing project fails the project checks; a 403 on a read the doctor
    makes for itself (the topic's IAM policy) is a warning that names the roles to read it, not a failure."""
    seed_ready(fake)
    fake.resourcemanager.projects.pop(PROJECT)
    report = run_doctor(tmp_path)
    assert {c.name for c in report.failed} == {"project", "permissions.project"}, report.text()
    seed_ready(fake)
    fake.resourcemanager.seed_project(PROJECT)
    fake.pubsub.topics[PROJECT, TOPIC].denied.add("pubsub.topics.getIamPolicy")
    report = run_doctor(tmp_path)
    assert report.failed == [], report.text()
    warned = {c.name: c for c in report.checks if c.status == "warn"}
    assert set(warned) == {"pubsub.publishers", "pubsub.test-vm"}
    assert warned["pubsub.publishers"].detail.startswith("not checked: ")
    assert "roles/iam.securityReviewer" in warned["pubsub.publishers"].fix


@pytest.mark.usefixtures("endpoints")
def test_a_firewall_policy_can_admit_iap(fake: FakeCompute, tmp_path: Path) -> None:
    """networks.getEffectiveFirewalls also returns hierarchical and network firewall policies: an allow rule
    there is enough; a deny rule is not an allow."""
    seed_ready(fake)
    fake.firewalls.clear()
    fake.seed_firewall_policy("org-deny-iap", src_ip_ranges=["35.235.240.0/20"], action="deny")
    assert {c.name for c in run_doctor(tmp_path).failed} == {"network.iap-firewall"}
    fake.seed_firewall_policy("org-allow-iap", src_ip_ranges=["35.235.240.0/20"])
    report = run_doctor(tmp_path)
    assert report.failed == [], report.text()
    assert "firewall policy org-allow-iap" in next(c.detail for c in report.checks if c.name == "network.iap-firewall")


@pytest.mark.usefixtures("endpoints")
def test_without_a_service_account_the_builder_runs_as_the_default_one(fake: FakeCompute, tmp_path: Path) -> None:
    """Packer gives the builder the project's default Compute Engine account when gce.service_account is
    empty: that account needs actAs, and an IAP rule for other accounts does not reach it."""
    seed_ready(fake)
    number = fake.resourcemanager.projects[PROJECT]["name"].removeprefix("projects/")
    default = f"{number}-compute@developer.gserviceaccount.com"
    fake.iam.seed_service_account(default, act_as=False)
    fake.firewalls.clear()
    fake.seed_firewall("iap", network=NETWORK, source_ranges=["35.235.240.0/20"], target_service_accounts=[TESTER])
    report = run_doctor(tmp_path, service_account="")
    failed = {c.name: c.detail for c in report.failed}
    assert set(failed) == {"permissions.act-as.builder", "network.iap-firewall"}, report.text()
    assert default in failed["permissions.act-as.builder"]
    assert f"the builder VM ({default})" in failed["network.iap-firewall"]


@pytest.mark.usefixtures("endpoints")
def test_a_shared_vpc_is_read_in_its_host_project(fake: FakeCompute, tmp_path: Path) -> None:
    """gce.subnetwork as projects/HOST/regions/R/subnetworks/S: the subnetwork, the effective firewall rules
    and the routers are read in the host project."""
    seed_ready(fake)
    fake.subnetworks.clear()
    fake.firewalls.clear()
    fake.routers.clear()
    host = fake.add_project("shared-vpc-host")
    host.seed_network(NETWORK)
    host.seed_subnetwork(REGION, SUBNET, network=NETWORK)
    host.seed_firewall("allow-iap-ssh", network=NETWORK, source_ranges=["35.235.240.0/20"])
    host.seed_router(REGION, "nat", network=NETWORK)
    subnetwork = f"projects/shared-vpc-host/regions/{REGION}/subnetworks/{SUBNET}"
    report = run_doctor(tmp_path, subnetwork=subnetwork)
    assert report.failed == [], report.text()
    host.firewalls.clear()
    report = run_doctor(tmp_path, subnetwork=subnetwork)
    assert [c.name for c in report.failed] == ["network.iap-firewall"]
    assert "--project shared-vpc-host" in report.failed[0].fix


@pytest.mark.usefixtures("endpoints")
def test_gcloud_runs_as_the_application_default_identity(fake: FakeCompute, tmp_path: Path) -> None:
    """With a credential file bakery hands gcloud the same file (CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE): the
    identities agree by construction and gcloud is not asked; without one, gcloud's active account must be
    the application default identity (a mismatch is configuration: exit 2)."""
    seed_ready(fake)
    tools = host_tools(gcloud="someone@example.com")
    report = run_doctor(tmp_path, tools)
    assert [(c.name, c.status) for c in report.failed] == [("tools.gcloud", "fail")]
    assert "someone@example.com" in report.failed[0].detail and report.exit_code == doctor.EXIT_FAILED
    tools.environ = {"GOOGLE_APPLICATION_CREDENTIALS": "/ci/key.json"}
    tools.gcloud_accounts = lambda: pytest.fail("gcloud is not asked when it is handed the credential file")
    report = run_doctor(tmp_path, tools)
    gcloud = next(c for c in report.checks if c.name == "tools.gcloud")
    assert gcloud.status == "ok" and "/ci/key.json" in gcloud.detail
