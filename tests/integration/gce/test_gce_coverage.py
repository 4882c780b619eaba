"""Fleet coverage on the fake Compute API, through the real google-cloud-compute client and the real
``invoke`` CLI: a fleet with VMs of every class in two projects (plus one that answers 403), exact
classification, exact JSON, ``--fail-under`` exit codes, API calls that follow pages and distinct images."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery import cli, config
from bakery.config import Coverage, Settings
from bakery.errors import ConfigError
from bakery.gce import coverage
from bakery.gce.client import ComputeApiError, ComputeClients
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, PackerOnFake
from tests.integration.gce.test_gce_nightly import Bed, gce_settings, project_copy

ROOT = Path(__file__).resolve().parents[3]
SECOND = "bakery-test-2"
DENIED = "bakery-denied"
DEB = "gl-osquery-debian-12"
U22 = "gl-osquery-ubuntu-2204"
HOME = f"projects/{PROJECT}/global/images/"
MIG_VM = {
    "instance-template": "projects/123456789012/global/instanceTemplates/web-t-r2",
    "created-by": "projects/123456789012/regions/us-east1/instanceGroupManagers/web-mig",
}
GKE_VM = {
    "instance-template": "projects/123456789012/global/instanceTemplates/gke-pool-t",
    "created-by": "projects/123456789012/zones/us-east1-c/instanceGroupManagers/gke-pool-grp",
}
CI_RULE = {"ci-runners": {"role": "ci-runner"}}
RUNTIME = f"""bakery:
  environments:
    gstg:
      gce: {{project: {PROJECT}, zone: europe-west1-b}}
      coverage:
        projects: [{PROJECT}, {SECOND}]
        exempt: {{ci-runners: {{role: ci-runner}}}}
"""


def seed_fleet(fake: FakeCompute) -> dict[str, str]:
    """The fleet (see the module docstring); returns the id of the image deleted after boot."""
    now = datetime.datetime.now(datetime.UTC)

    def ago(days: int) -> datetime.datetime:
        return now - datetime.timedelta(days=days, hours=1)

    fake.seed_image(f"{DEB}-r0", DEB, created=ago(120), state="OBSOLETE")
    fake.seed_image(f"{DEB}-r1", DEB, created=ago(40), state="DEPRECATED")
    fake.seed_image(f"{DEB}-r2", DEB, created=ago(20))
    fake.seed_image(f"{DEB}-r3", DEB, created=ago(2))
    fake.seed_image(f"{U22}-r0", U22, created=ago(200))
    fake.seed_image(f"{U22}-r1", U22, created=ago(5))
    fake.seed_image(f"{DEB}-candidate-x", f"{DEB}-candidate", created=ago(1))
    gone = fake.seed_image(f"{DEB}-gone", DEB, created=ago(100))
    c, b = "us-east1-c", "us-east1-b"
    fake.seed_vm(c, "app-1", image=f"{HOME}{DEB}-r3")
    fake.seed_vm(b, "api-1", image=f"https://www.googleapis.com/compute/v1/{HOME}{U22}-r1")
    fake.seed_vm(c, "db-1", image=f"{HOME}{DEB}-r1")
    fake.seed_vm(b, "web-mig-abcd", image=f"{HOME}{DEB}-r2", metadata=MIG_VM)
    fake.seed_vm(c, "web-mig-efgh", image=f"{HOME}{DEB}-r2", metadata=MIG_VM, status="TERMINATED")
    fake.seed_vm(c, "old-1", image=f"{HOME}{U22}-r0")
    fake.seed_vm(c, "legacy-1", image=f"{HOME}{DEB}-r0")
    fake.seed_vm(c, "bastion-1", image="projects/debian-cloud/global/images/debian-12-v20261101")
    fake.seed_vm(c, "cand-1", image=f"{HOME}{DEB}-candidate-x")
    fake.seed_vm(c, "deleted-1", image=f"{HOME}{DEB}-gone")
    fake.delete_image(f"{DEB}-gone")
    fake.seed_vm(c, "vanished-1", image=f"{HOME}never-existed")
    fake.seed_vm(c, "private-1", image="projects/private-images/global/images/hardened-9")
    fake.seed_vm(c, "restored-1", snapshot="snap-1")
    gke = {"goog-gke-node": "", "goog-k8s-cluster-name": "ops"}
    public = "projects/debian-cloud/global/images/debian-12-v20261101"
    gke_image = "projects/gke-node-images/global/images/gke-cos-1"
    fake.seed_vm(c, "gke-ops-pool-1", image=gke_image, labels=gke, metadata=GKE_VM)
    dataproc = {"goog-dataproc-cluster-name": "etl"}
    fake.seed_vm(c, "dp-etl-m", image="projects/cloud-dataproc/global/images/dataproc-2-2", labels=dataproc)
    fake.seed_vm(b, "runner-1", image=public, labels={"role": "ci-runner"})
    second = fake.add_project(SECOND)
    second.seed_image("centos-7-legacy", "centos-7", created=ago(900))
    second.seed_vm("europe-west1-b", "batch-1", image=f"{HOME}{DEB}-r3")
    second.seed_vm("europe-west1-b", "centos-1", image=f"projects/{SECOND}/global/images/centos-7-legacy")
    return {"gone": gone["id"]}


def expected(gone_id: str) -> list[dict[str, Any]]:
    """The exact ``instances`` of the JSON report for :func:`seed_fleet`, in output order."""
    head = f"not the head of {DEB} (head: {DEB}-r3)"
    web = ("global/instanceTemplates/web-t-r2", "regions/us-east1/instanceGroupManagers/web-mig")
    gke = ("global/instanceTemplates/gke-pool-t", "zones/us-east1-c/instanceGroupManagers/gke-pool-grp")
    not_ours = "not one of the gstg families"
    rows: list[tuple[Any, ...]] = [
        (PROJECT, "us-east1-c", "bastion-1", "uncovered", "debian-cloud/debian-12-v20261101", "debian-12", 0, "", "",
         f"family debian-12 of debian-cloud, {not_ours}"),
        (PROJECT, "us-east1-c", "cand-1", "uncovered", f"{PROJECT}/{DEB}-candidate-x", f"{DEB}-candidate", 1, "", "",
         f"family {DEB}-candidate of {PROJECT}, {not_ours}"),
        (SECOND, "europe-west1-b", "centos-1", "uncovered", f"{SECOND}/centos-7-legacy", "centos-7", 900, "", "",
         f"family centos-7 of {SECOND}, {not_ours}"),
        (PROJECT, "us-east1-b", "web-mig-abcd", "stale", f"{PROJECT}/{DEB}-r2", DEB, 20, *web, f"{head}; 20 days old"),
        (PROJECT, "us-east1-c", "db-1", "stale", f"{PROJECT}/{DEB}-r1", DEB, 40, "", "",
         f"{head}; 40 days old; image is DEPRECATED"),
        (PROJECT, "us-east1-c", "legacy-1", "stale", f"{PROJECT}/{DEB}-r0", DEB, 120, "", "",
         f"{head}; 120 days old, OLDER THAN 90 DAYS; image is OBSOLETE"),
        (PROJECT, "us-east1-c", "old-1", "stale", f"{PROJECT}/{U22}-r0", U22, 200, "", "",
         f"not the head of {U22} (head: {U22}-r1); 200 days old, OLDER THAN 90 DAYS"),
        (PROJECT, "us-east1-c", "web-mig-efgh", "stale", f"{PROJECT}/{DEB}-r2", DEB, 20, *web, f"{head}; 20 days old"),
        (PROJECT, "us-east1-c", "deleted-1", "unknown", "", "", None, "", "",
         f"boot disk deleted-1 was created from image id {gone_id}, which has been deleted"),
        (PROJECT, "us-east1-c", "private-1", "unknown", "private-images/hardened-9", "", None, "", "",
         "no permission to read boot image private-images/hardened-9"),
        (PROJECT, "us-east1-c", "restored-1", "unknown", "", "", None, "", "",
         "boot disk restored-1 was created from snapshot snap-1"),
        (PROJECT, "us-east1-c", "vanished-1", "unknown", f"{PROJECT}/never-existed", "", None, "", "",
         f"boot image {PROJECT}/never-existed has been deleted"),
        (PROJECT, "us-east1-b", "api-1", "current", f"{PROJECT}/{U22}-r1", U22, 5, "", "", ""),
        (PROJECT, "us-east1-c", "app-1", "current", f"{PROJECT}/{DEB}-r3", DEB, 2, "", "", ""),
        (SECOND, "europe-west1-b", "batch-1", "current", f"{PROJECT}/{DEB}-r3", DEB, 2, "", "", ""),
        (PROJECT, "us-east1-b", "runner-1", "exempt", "debian-cloud/debian-12-v20261101", "", None, "", "",
         "exempt by rule ci-runners (role=ci-runner)"),
        (PROJECT, "us-east1-c", "dp-etl-m", "exempt", "cloud-dataproc/dataproc-2-2", "", None, "", "",
         "exempt by rule dataproc (goog-dataproc-cluster-name=*)"),
        (PROJECT, "us-east1-c", "gke-ops-pool-1", "exempt", "gke-node-images/gke-cos-1", "", None, *gke,
         "exempt by rule gke-node (goog-gke-node=*)"),
    ]  # fmt: skip
    keys = ("project", "zone", "name", "status", "image", "family", "image_age_days", "template", "mig", "reason")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def denied_line(fake: FakeCompute) -> str:
    """What a 403 on DENIED's instance list says (the client's message names the request)."""
    url = f"{fake.endpoint}/compute/v1/projects/{DENIED}/aggregated/instances?maxResults=500"
    return (
        f"project {DENIED} not counted: permission denied for the instance list in project {DENIED}: "
        f"403 GET {url}: fake: no access to project {DENIED} (not a project it holds)"
    )


def settings_on_fake(**coverage_settings: Any) -> Settings:
    """The project's gstg environment with its gce project the fake's, counting both fleet projects."""
    config = cli.project_settings().config
    env = config.environments["gstg"]
    assert env.gce is not None
    cov = Coverage(projects=(PROJECT, SECOND), exempt=CI_RULE, **coverage_settings)
    env = env.model_copy(update={"gce": env.gce.model_copy(update={"project": PROJECT}), "coverage": cov})
    return Settings(config.model_copy(update={"environments": {**config.environments, "gstg": env}}), ROOT)


def test_every_class_is_classified_exactly(fake: FakeCompute, clients: ComputeClients) -> None:
    ids = seed_fleet(fake)
    report = coverage.measure(settings_on_fake(), "gstg", clients=clients)
    document = report.to_dict()
    assert {k: v for k, v in document.items() if k != "instances"} == {
        "env": "gstg",
        "projects": [PROJECT, SECOND],
        "total": 18,
        "current": 3,
        "stale": 5,
        "uncovered": 3,
        "exempt": 3,
        "unknown": 4,
        "coverage_pct": 53.3,  # (3 + 5) / (18 - 3)
    }
    assert document["instances"] == expected(ids["gone"])
    assert report.errors == ()


def test_api_calls_follow_pages_and_distinct_images_not_vms(fake: FakeCompute, clients: ComputeClients) -> None:
    seed_fleet(fake)
    scope = coverage.scope_for(settings_on_fake(), "gstg")
    fake.calls.clear()
    fleet = coverage.read_fleet(clients, scope, page_size=4)
    methods = [c.method for c in fake.calls]
    # 16 VMs (and their 16 boot disks) in PROJECT at 4 a page, 2 in SECOND: one call per page
    assert methods.count("compute.instances.aggregatedList") == 4 + 1
    assert methods.count("compute.disks.aggregatedList") == 4 + 1
    assert methods.count("compute.images.getFromFamily") == 3  # one per family
    # one per distinct image of a non-exempt VM: the exempt VMs' images (GKE's, Dataproc's) are never read
    reads = sorted(c.path.split("/projects/")[1] for c in fake.calls_of("compute.images.get"))
    assert reads == sorted(f"{project}/global/images/{name}" for project, name in fleet.images)
    assert len(reads) == 11 and not any("gke-node-images" in r or "cloud-dataproc" in r for r in reads)
    assert len(methods) == 5 + 5 + 3 + 11
    assert fleet.heads == {DEB: f"{DEB}-r3", U22: f"{U22}-r1"}  # ubuntu-2404 has no image: no head


def test_a_project_that_answers_403_is_one_line_and_the_others_still_count(
    fake: FakeCompute, clients: ComputeClients
) -> None:
    seed_fleet(fake)
    report = coverage.measure(settings_on_fake(), "gstg", projects=[PROJECT, DENIED, SECOND], clients=clients)
    assert report.projects == (PROJECT, SECOND) and len(report.instances) == 18
    assert report.errors == (denied_line(fake),)
    with pytest.raises(ComputeApiError, match=rf"^coverage: no project could be read: project {DENIED} not counted"):
        coverage.measure(settings_on_fake(), "gstg", projects=[DENIED], clients=clients)


def test_builtin_rules_can_be_switched_off(fake: FakeCompute, clients: ComputeClients) -> None:
    seed_fleet(fake)
    report = coverage.measure(settings_on_fake(builtin_exempt=False), "gstg", clients=clients)
    by_name = {e.name: e for e in report.instances}
    assert by_name["gke-ops-pool-1"].status == "unknown"  # gke-node-images is not readable from here
    assert by_name["dp-etl-m"].status == "unknown"
    assert by_name["runner-1"].status == "exempt"


def test_bad_input_is_one_config_error_before_any_call(fake: FakeCompute, clients: ComputeClients) -> None:
    settings = settings_on_fake()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"fmt": "yaml"}, "--format 'yaml' is not known: use one of text, json, md"),
        ({"fail_under": "lots"}, "--fail-under 'lots' is not valid: give a number from 0 to 100"),
        ({"fail_under": "nan"}, "--fail-under 'nan' is not valid: give a number from 0 to 100"),
        ({"fail_under": "101"}, "--fail-under '101' is not valid: give a number from 0 to 100"),
        ({"max_age_days": "0"}, "--max-age-days '0' is not valid: give a whole number of at least 1"),
        ({"projects": ["Bad_Project"]}, "--project 'Bad_Project' is not a GCP project id"),
    ]
    for override, message in cases:
        kwargs: dict[str, Any] = {"projects": [], "fmt": "text", "fail_under": None, "max_age_days": None, **override}
        with pytest.raises(ConfigError) as raised:
            coverage.command(settings, "gstg", say=print, warn=print, clients=clients, **kwargs)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"^environment 'local' is not a gce environment"):
        coverage.command(
            settings, "local", projects=[], fmt="text", fail_under=None, max_age_days=None, say=print, warn=print
        )
    assert fake.calls == []


# --- the real CLI ------------------------------------------------------------------------------------


def invoke(fake: FakeCompute, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(RUNTIME)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(BAKERY_COMPUTE_ENDPOINT=fake.endpoint, NO_PROXY="127.0.0.1", CHECKPOINT_DISABLE="1")
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(runtime), "coverage", "--env", "gstg", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_json_is_exact_and_fail_under_passes(fake: FakeCompute, tmp_path: Path) -> None:
    ids = seed_fleet(fake)
    proc = invoke(fake, tmp_path, "--format", "json", "--fail-under", "53.3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    document = json.loads(proc.stdout)
    assert list(document) == [
        "env", "projects", "total", "current", "stale", "uncovered", "exempt", "unknown", "coverage_pct", "instances"
    ]  # fmt: skip
    assert document["coverage_pct"] == 53.3 and document["projects"] == [PROJECT, SECOND]
    assert document["instances"] == expected(ids["gone"])


def test_cli_fail_under_exits_1_with_one_line(fake: FakeCompute, tmp_path: Path) -> None:
    seed_fleet(fake)
    proc = invoke(fake, tmp_path, "--fail-under", "53.4", "--max-age-days", "30")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == ["error: coverage 53.3% is below --fail-under 53.4"]
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"coverage gstg: 53.3% of 18 VMs (3 exempt) boot from {U22}, gl-osquery-ubuntu-2404, {DEB} of {PROJECT}: "
        f"3 uncovered, 5 stale, 4 unknown, 3 current, 3 exempt; projects {PROJECT}, {SECOND}"
    )
    assert [line.split()[0] for line in lines[1:]] == [e["status"] for e in expected("")]
    assert lines[1] == (
        f"uncovered {PROJECT}/us-east1-c/bastion-1 debian-cloud/debian-12-v20261101, 0 d: family debian-12 of "
        "debian-cloud, not one of the gstg families"
    )
    assert lines[4] == (
        f"stale     {PROJECT}/us-east1-b/web-mig-abcd {PROJECT}/{DEB}-r2, 20 d [template "
        "global/instanceTemplates/web-t-r2; MIG regions/us-east1/instanceGroupManagers/web-mig]: not the head of "
        f"{DEB} (head: {DEB}-r3); 20 days old"
    )
    assert lines[5].endswith("40 days old, OLDER THAN 30 DAYS; image is DEPRECATED")  # --max-age-days 30


def test_cli_403_project_is_one_line_and_fail_under_fails(fake: FakeCompute, tmp_path: Path) -> None:
    seed_fleet(fake)
    proc = invoke(fake, tmp_path, "--project", PROJECT, "--project", DENIED, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"WARNING: {denied_line(fake)}"]
    document = json.loads(proc.stdout)
    assert document["projects"] == [PROJECT] and document["total"] == 16
    proc = invoke(fake, tmp_path, "--project", PROJECT, "--project", DENIED, "--fail-under", "10")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "error: coverage not established: 1 project(s) could not be read (--fail-under 10)"
    )
    assert "Traceback" not in proc.stderr


def test_cli_bad_input_exits_2(fake: FakeCompute, tmp_path: Path) -> None:
    proc = invoke(fake, tmp_path, "--format", "yaml")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --format 'yaml' is not known: use one of text, json, md"]
    assert proc.stdout == "" and fake.calls == []


# --- the nightly report ------------------------------------------------------------------------------


def nightly_bed(fake: FakeCompute, clients: ComputeClients, tmp_path: Path, cov: Coverage) -> Bed:
    root = project_copy(tmp_path / "project")
    settings = gce_settings(root)
    env = settings.config.environments["gstg"].model_copy(update={"coverage": cov})
    config = settings.config.model_copy(update={"environments": {**settings.config.environments, "gstg": env}})
    return Bed(fake, clients, root, Settings(config, root), PackerOnFake(fake))


def test_the_nightly_report_shows_coverage(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    seed_fleet(fake)
    cov = Coverage(enabled=True, projects=(PROJECT, SECOND), exempt=CI_RULE)
    bed = nightly_bed(fake, clients, tmp_path, cov)
    bed.nightly(1, dry_run=True, coverage_clients=clients)
    section = bed.report(1)["coverage"]
    assert {k: v for k, v in section.items() if k != "uncovered_vms"} == {
        "env": "gstg",
        "projects": [PROJECT, SECOND],
        "total": 18,
        "current": 3,
        "stale": 5,
        "uncovered": 3,
        "exempt": 3,
        "unknown": 4,
        "coverage_pct": 53.3,
        "errors": [],
    }
    assert section["uncovered_vms"] == [e for e in expected("") if e["status"] == "uncovered"]
    markdown = (bed.root / "reports" / "1" / "nightly.md").read_text()
    tail = markdown[markdown.index("## Fleet coverage") :].splitlines()
    assert tail[:3] == [
        "## Fleet coverage: 53.3%",
        "",
        f"18 VMs in {PROJECT}, {SECOND}: 3 current, 5 stale, 3 uncovered, 4 unknown, 3 exempt",
    ]
    assert tail[6] == (
        f"| {PROJECT}/us-east1-c/bastion-1 | debian-cloud/debian-12-v20261101 | – | – | family debian-12 of "
        "debian-cloud, not one of the gstg families |"
    )
    assert len(tail) == 9  # heading, blank, counts, blank, table head (2), three uncovered VMs
    assert any(line.startswith("coverage gstg: 53.3% of 18 VMs") for line in bed.lines)


def test_nightly_coverage_is_absent_when_disabled_and_an_error_does_not_fail_the_night(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    seed_fleet(fake)
    bed = nightly_bed(fake, clients, tmp_path, Coverage(projects=(PROJECT,)))
    bed.nightly(1, dry_run=True, coverage_clients=clients)
    assert "coverage" not in bed.report(1)
    assert "Fleet coverage" not in (bed.root / "reports" / "1" / "nightly.md").read_text()
    bed = nightly_bed(fake, clients, tmp_path / "denied", Coverage(enabled=True, projects=(DENIED,)))
    run = bed.nightly(2, dry_run=True, coverage_clients=clients)
    assert not run.failed
    assert bed.report(2)["coverage"] == {"error": f"coverage: no project could be read: {denied_line(fake)}"}
    markdown = (bed.root / "reports" / "2" / "nightly.md").read_text()
    assert "## Fleet coverage: not measured" in markdown


def test_bad_coverage_config_is_one_line_naming_the_key() -> None:
    base = cli.project_settings().config.model_dump(mode="json")
    cases = [
        ("gstg", {"exempt": {"everything": {}}}, "bakery.environments.gstg.coverage.exempt: rule 'everything' has no "
         "labels, so it would exempt every VM: give label: value"),
        ("gstg", {"exempt": {"x": {"Team": "a"}}}, "bakery.environments.gstg.coverage.exempt: rule 'x': label key "
         "'Team' breaks GCE's rule"),
        ("gstg", {"exempt": {"x": {"team": "A B"}}}, "bakery.environments.gstg.coverage.exempt: rule 'x': label "
         "team='A B' breaks GCE's rule ^[a-z0-9_-]{0,63}$: give a label value, or '*' for any value"),
        ("gstg", {"projects": ["x"]}, "bakery.environments.gstg.coverage.projects: project 'x' is not a GCP "
         "project id"),
        ("gstg", {"max_age_days": 0}, "bakery.environments.gstg.coverage.max_age_days: input should be greater than "
         "or equal to 1"),
        ("local", {"enabled": True}, "bakery.environments.local: coverage reads a GCE fleet: set coverage.enabled "
         "only on a 'gce' environment"),
    ]  # fmt: skip
    for env, cov, message in cases:
        data = json.loads(json.dumps(base))
        data["environments"][env]["coverage"] = {**data["environments"][env]["coverage"], **cov}
        with pytest.raises(ConfigError) as raised:
            config.from_mapping(data, ROOT)
        assert str(raised.value).startswith(f"invoke.yaml: {message}"), str(raised.value)
        assert "\n" not in str(raised.value)
