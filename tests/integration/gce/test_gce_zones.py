"""Zone fallback (``gce.zones``) on the fake Compute API, through the real google-cloud-compute client.

The test VM: a capacity error injected into the insert operation of the first zone(s) → the instance is
created in the next zone, everything zonal afterwards (get, wait, serial output, delete, the IAP
ProxyCommand) names that zone, nothing is left; a quota error fails at once; no zone left → one line.

The builder: ``packer build`` is the real adapter (bakery.packer, python-packer, the machine-readable
parser) running a stand-in ``packer`` executable that prints what Packer prints when the googlecompute
plugin cannot create its instance — the plugin's error text (packer-plugin-googlecompute v1.2.7
step_create_instance.go:230, lib/common/driver_gce.go:1022-1040) as Packer's TargetedUI and
MachineReadableUi put it out (Packer v1.6.6 packer/ui.go:138-151 and :182-203) — for the zones it is told
to fail in, and passes every other command (``validate``, ``fmt``) to the real Packer 1.6.6.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bakery import pipeline, proc, render, runreport
from bakery.config import BuildSpec
from bakery.errors import PackerError
from bakery.gce.client import ComputeClients, OperationFailed
from bakery.gce.target import GceTarget
from bakery.gce.zones import NoCapacityError, QuotaExceededError
from bakery.imagetest import TestOutcome
from bakery.packer import Packer
from bakery.target import ZoneAttempt
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, PackerOnFake, RecordedRunner
from tests.integration.gce.test_gce_pipeline import FAMILY, gce_spec, head, names, seed_candidate
from tests.unit.invoke_cli import tree

ZONES = ("europe-west1-b", "europe-west1-c", "europe-west1-d")
STOCKOUT_MESSAGE = (
    "The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request. "
    "Try a different zone, or try again later."
)
STOCKOUT = ("ZONE_RESOURCE_POOL_EXHAUSTED", STOCKOUT_MESSAGE.format(project=PROJECT, zone=ZONES[0]), 503)
QUOTA = ("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded. Limit: 8.0 in region europe-west1.", 403)
BUILD = "googlecompute.osquery"  # the HCL2 build's source name (templates/packer/gce.pkr.hcl.j2)


@pytest.fixture
def spec(tmp_path: Path) -> BuildSpec:
    """Through IAP, so the ssh_config's ProxyCommand names the zone."""
    return gce_spec(tmp_path, zone=ZONES[0], zones=ZONES, use_iap=True)


@pytest.fixture
def bake_spec(tmp_path: Path) -> BuildSpec:
    """Without IAP: a whole bake on Packer 1.6.6 refuses IAP (bakery.packer_plugins.check_iap)."""
    return gce_spec(tmp_path, zone=ZONES[0], zones=ZONES, use_iap=False)


def zone_of_call(path: str) -> str:
    """The zone a zonal request names (``…/zones/Z/…``)."""
    parts = path.split("/")
    return parts[parts.index("zones") + 1]


def instance_calls(fake: FakeCompute) -> list[tuple[str, str]]:
    """(method, zone) of every compute.instances.* request, in order."""
    return [(c.method, zone_of_call(c.path)) for c in fake.calls if c.method.startswith("compute.instances.")]


def run_test_stage(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, tmp_path: Path, lines: list[str]
) -> tuple[GceTarget, RecordedRunner, Callable[[], TestOutcome]]:
    """A GCE target with a recorded runner and a candidate to test; the third item runs the test stage."""
    runner = RecordedRunner(fake=fake)
    target = GceTarget(spec, clients=clients, runner=runner)
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    rendered = render.Rendered(spec, tmp_path / "rendered", "f" * 64, "debian-cloud/debian-12")
    return target, runner, lambda: target.test(rendered, candidate, tmp_path / "run", lines.append)


# --- the test VM ---------------------------------------------------------------------------------------------


def test_a_stocked_out_zone_moves_the_test_vm_to_the_next_zone(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, tmp_path: Path
) -> None:
    fake.inject("compute.instances.insert", op_error=STOCKOUT)
    lines: list[str] = []
    target, runner, test = run_test_stage(fake, clients, spec, tmp_path, lines)
    outcome = test()
    assert outcome.ok
    name = f"bakery-test-{target.run_id}"
    # the instance the suite ran against was in the second zone …
    assert runner.instances_seen == [[name]]
    calls = instance_calls(fake)
    assert calls[0] == ("compute.instances.insert", ZONES[0])
    # … zone 1's attempt was cleaned up through the same path (its serial output read, its delete tried) …
    assert calls[1:3] == [("compute.instances.getSerialPortOutput", ZONES[0]), ("compute.instances.delete", ZONES[0])]
    # … and everything zonal after the second insert names the zone the instance was created in
    assert calls[3] == ("compute.instances.insert", ZONES[1])
    assert {zone for _, zone in calls[3:]} == {ZONES[1]}
    assert [m for m, _ in calls[3:]][-1] == "compute.instances.delete"
    _vm, _run, ssh_config = runner.calls[0]
    assert f"--zone={ZONES[1]}" in ssh_config and f"--zone={ZONES[0]}" not in ssh_config
    assert fake.instances == {} and fake.disks == {}
    reason = f"ZONE_RESOURCE_POOL_EXHAUSTED: {STOCKOUT[1]}"
    assert f"test instance: zone {ZONES[0]} has no capacity ({reason}); trying {ZONES[1]}" in lines
    assert target.zones_tried() == [ZoneAttempt("test", ZONES[0], reason), ZoneAttempt("test", ZONES[1], "")]


def test_a_quota_error_fails_the_test_vm_at_once(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, tmp_path: Path
) -> None:
    fake.inject("compute.instances.insert", op_error=QUOTA)
    lines: list[str] = []
    target, runner, test = run_test_stage(fake, clients, spec, tmp_path, lines)
    with pytest.raises(OperationFailed) as caught:
        test()
    assert "\n" not in str(caught.value)
    assert "QUOTA_EXCEEDED: Quota 'CPUS' exceeded." in str(caught.value)
    assert [c for c in instance_calls(fake) if c[0] == "compute.instances.insert"] == [
        ("compute.instances.insert", ZONES[0])
    ]
    assert runner.calls == [] and fake.instances == {}
    assert target.zones_tried() == [ZoneAttempt("test", ZONES[0], "")]
    assert not any("trying" in line for line in lines)


def test_no_zone_with_capacity_is_one_line_naming_each_zone(
    fake: FakeCompute, clients: ComputeClients, spec: BuildSpec, tmp_path: Path
) -> None:
    fake.inject("compute.instances.insert", op_error=STOCKOUT, times=len(ZONES))
    lines: list[str] = []
    target, runner, test = run_test_stage(fake, clients, spec, tmp_path, lines)
    with pytest.raises(NoCapacityError) as caught:
        test()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("test instance: no zone of gce.zones had capacity (")
    for zone in ZONES:
        assert f"{zone}: ZONE_RESOURCE_POOL_EXHAUSTED: " in message
    inserts = [zone for method, zone in instance_calls(fake) if method == "compute.instances.insert"]
    assert inserts == list(ZONES)
    assert runner.calls == [] and fake.instances == {} and fake.disks == {}
    assert [a.zone for a in target.zones_tried()] == list(ZONES)


def test_one_zone_configured_means_no_fallback(fake: FakeCompute, clients: ComputeClients, tmp_path: Path) -> None:
    spec = gce_spec(tmp_path, zone=ZONES[0], use_iap=True)
    fake.inject("compute.instances.insert", op_error=STOCKOUT)
    _target, _runner, test = run_test_stage(fake, clients, spec, tmp_path, [])
    with pytest.raises(NoCapacityError, match=rf"^test instance: no zone of gce.zones had capacity \({ZONES[0]}: "):
        test()
    assert [z for m, z in instance_calls(fake) if m == "compute.instances.insert"] == [ZONES[0]]


# --- the builder VM, through Packer's output -------------------------------------------------------------------


def test_real_packer_takes_the_runtime_zone_over_the_variable_file(bake_spec: BuildSpec) -> None:
    """The real Packer 1.6.6, given the flags a build gets (bakery.packer.Packer: ``-var`` before
    ``-var-file``): ``var.zone`` is the runtime zone; without it, the variable file's; the rendered tree
    is untouched (same files, same fingerprint)."""
    rendered = render.render(bake_spec, (1, 6, 6), "debian-cloud/debian-12-v20261101")
    before = tree(rendered.directory)
    env = {**os.environ, "CHECKPOINT_DISABLE": "1"}

    def inspected_zone(variables: dict[str, str]) -> str:
        argv = Packer(rendered.template, rendered.var_file, variables)._argv("inspect")
        out = proc.run(argv, timeout=120, env=env, cwd=rendered.directory).output
        (line,) = [line for line in out.splitlines() if line.strip().startswith("var.zone:")]
        return line.split(":", 1)[1].strip().strip('"')

    assert inspected_zone({"image_name": "x"}) == ZONES[0]
    assert inspected_zone({"image_name": "x", "zone": ZONES[2]}) == ZONES[2]
    assert tree(rendered.directory) == before
    assert render.render(bake_spec, (1, 6, 6), "debian-cloud/debian-12-v20261101").fingerprint == rendered.fingerprint


def machine_line(kind: str, message: str, *, target: str = "") -> str:
    """One ``-machine-readable`` line as Packer's MachineReadableUi writes it (packer/ui.go:194-203)."""
    data = message.replace(",", "%!(PACKER_COMMA)").replace("\r", "\\r").replace("\n", "\\n")
    return f"{int(time.time())},{target},{kind},{data}"


def targeted(message: str, *, arrow: bool = True) -> str:
    """A builder's message as Packer's TargetedUI prefixes it (packer/ui.go:138-151)."""
    head_ = "==>" if arrow else "   "
    return "\n".join(f"{head_} {BUILD}: {line}" for line in message.split("\n")).rstrip()


def failed_build(error: str) -> list[str]:
    """How ``packer build -machine-readable`` ends when the build fails with ``error`` (Packer's summary)."""
    return [
        machine_line("error", error, target=BUILD),
        machine_line("ui", f"error,Build '{BUILD}' errored after 4 seconds 120 milliseconds: {error}"),
        machine_line("ui", "say,\n==> Wait completed after 4 seconds 120 milliseconds"),
        machine_line("ui", "error,\n==> Some builds didn't complete successfully and had errors:"),
        machine_line("ui", f"error,--> {BUILD}: {error}"),
        machine_line("ui", "say,\n==> Builds finished but no artifacts were created."),
    ]


def creation_failure(zone: str, plugin_error: str) -> list[str]:
    """What ``packer build -machine-readable`` prints when googlecompute cannot create its instance."""
    error = f"Error creating instance: {plugin_error}"
    return [
        machine_line("ui", "say," + targeted("Checking image does not exist...")),
        machine_line("ui", "say," + targeted("Creating temporary RSA SSH key for instance...")),
        machine_line("ui", "message," + targeted(f"Loading zone: {zone}", arrow=False)),
        machine_line("ui", "message," + targeted("Requesting Shielded VM instance creation...", arrow=False)),
        machine_line("ui", "message," + targeted("Waiting for creation operation to complete...", arrow=False)),
        machine_line("ui", "error," + targeted(error)),
        *failed_build(error),
    ]


def provisioning_failure() -> list[str]:
    """A build whose instance was created and whose provisioning script failed (no creation error)."""
    return [
        machine_line("ui", "message," + targeted("Instance has been created!", arrow=False)),
        machine_line("ui", "say," + targeted("Provisioning with shell script: provision/10-osquery.sh")),
        machine_line("ui", "error," + targeted(PROVISIONING_ERROR)),
        machine_line("ui", "say," + targeted("Deleting instance...")),
        machine_line("ui", "message," + targeted("Instance has been deleted!", arrow=False)),
        *failed_build(PROVISIONING_ERROR),
    ]


def stockout(zone: str) -> str:
    """The plugin's error for a failed insert operation: the messages only (refreshZoneOp), as a MultiError."""
    return "1 error(s) occurred:\n\n* " + STOCKOUT_MESSAGE.format(project=PROJECT, zone=zone)


QUOTA_ERROR = "googleapi: Error 403: Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west1., quotaExceeded"
PROVISIONING_ERROR = "Script exited with non-zero exit status: 100. Allowed exit codes are: [0]"


@pytest.fixture
def stand_in_packer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], Path]:
    """Put a ``packer`` first on PATH that fails ``build`` with the given output for the zones named
    (``{zone: machine-readable lines}``; any other zone: exit 0), records each build's argv, and runs the
    real Packer for every other command. Returns the file of recorded argvs (one JSON list per line)."""
    real = shutil.which("packer")
    assert real is not None, "the real packer (Debian's 1.6.6) is needed for validate"
    directory = tmp_path / "stand-in-bin"
    directory.mkdir()
    record = tmp_path / "packer-builds.jsonl"

    def install(outputs: dict[str, list[str]]) -> Path:
        script = directory / "packer"
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"REAL, RECORD, OUTPUTS = {real!r}, {str(record)!r}, {outputs!r}\n"
            "if sys.argv[1:2] != ['build']:\n"
            "    os.execv(REAL, [REAL, *sys.argv[1:]])\n"
            "with open(RECORD, 'a') as out:\n"
            "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
            "zone = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('zone=')), '')\n"
            "if zone in OUTPUTS:\n"
            "    print('\\n'.join(OUTPUTS[zone]), flush=True)\n"
            "    sys.exit(1)\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
        return record

    return install


class PackerThenFake:
    """The build step: the real ``pipeline.packer_build`` (the stand-in ``packer`` decides whether it fails),
    then, when it passed, the candidate googlecompute would leave (``PackerOnFake``)."""

    def __init__(self, fake: FakeCompute) -> None:
        self.on_fake = PackerOnFake(fake)
        self.rendered: list[render.Rendered] = []

    def __call__(
        self, rendered: render.Rendered, variables: dict[str, str], timeout: float, on_event: Callable[..., Any]
    ) -> None:
        self.rendered.append(rendered)
        pipeline.packer_build(rendered, variables, timeout, on_event)
        self.on_fake(rendered, variables, timeout, on_event)


def builds(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def var(argv: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")), None)


def test_a_stocked_out_builder_zone_rebakes_in_the_next_zone(
    fake: FakeCompute,
    clients: ComputeClients,
    bake_spec: BuildSpec,
    stand_in_packer: Callable[[dict[str, list[str]]], Path],
) -> None:
    record = stand_in_packer({ZONES[0]: creation_failure(ZONES[0], stockout(ZONES[0]))})
    build = PackerThenFake(fake)
    target = GceTarget(bake_spec, clients=clients, runner=RecordedRunner())
    lines: list[str] = []
    report = pipeline.BakeReport(bake_spec, git_sha="abc1234", packer_version=(1, 6, 6))
    pipeline.bake(bake_spec, target, lines.append, build=build, report=report)

    first, second = builds(record)
    assert (var(first, "zone"), var(second, "zone")) == ZONES[:2]
    # the same rendered tree, variable file and template; only the zone differs
    assert build.rendered[0] is build.rendered[1] and report.fingerprint == build.rendered[0].fingerprint
    assert [a for a in first if not a.startswith("zone=")] == [a for a in second if not a.startswith("zone=")]
    assert f"-var-file={render.VARS_FILE}" in second and second[-1] == render.TEMPLATE_FILE
    reason = STOCKOUT_MESSAGE.format(project=PROJECT, zone=ZONES[0])
    assert f"builder VM: zone {ZONES[0]} has no capacity ({reason}); trying {ZONES[1]}" in lines
    assert report.published is not None and head(clients) == report.published.name
    assert report.zones == [
        ZoneAttempt("build", ZONES[0], reason),
        ZoneAttempt("build", ZONES[1], ""),
        ZoneAttempt("test", ZONES[0], ""),
    ]
    summary = pipeline.summary(report)
    assert summary.endswith(f"; zones: build {ZONES[0]} ({reason}) then {ZONES[1]}; test {ZONES[0]}")
    # the nightly's JSON carries the zones of the variant
    nightly = runreport.NightlyRun("gstg", datetime.datetime.now(datetime.UTC))
    nightly.results.append(runreport.VariantResult(bake_spec, "baked", bake=report))
    variant = runreport.to_dict(nightly, bakery_version="test")["variants"][0]
    assert variant["zones"] == [
        {"stage": "build", "zone": ZONES[0], "reason": reason},
        {"stage": "build", "zone": ZONES[1], "reason": ""},
        {"stage": "test", "zone": ZONES[0], "reason": ""},
    ]
    assert f"- zones: build {ZONES[0]}" in runreport.to_markdown(runreport.to_dict(nightly, bakery_version="test"))


def test_a_builder_quota_error_is_one_line_and_not_retried(
    fake: FakeCompute,
    clients: ComputeClients,
    bake_spec: BuildSpec,
    stand_in_packer: Callable[[dict[str, list[str]]], Path],
) -> None:
    record = stand_in_packer({ZONES[0]: creation_failure(ZONES[0], QUOTA_ERROR)})
    target = GceTarget(bake_spec, clients=clients, runner=RecordedRunner())
    report = pipeline.BakeReport(bake_spec, git_sha="abc1234", packer_version=(1, 6, 6))
    with pytest.raises(QuotaExceededError) as caught:
        pipeline.bake(bake_spec, target, lambda _line: None, build=PackerThenFake(fake), report=report)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"builder VM: quota exceeded in zone {ZONES[0]} (Quota 'CPUS' exceeded.")
    assert [var(argv, "zone") for argv in builds(record)] == [ZONES[0]]
    assert report.zones == [ZoneAttempt("build", ZONES[0], "")]
    assert fake.instances == {} and not [n for n in fake.images if n.startswith(FAMILY)]


def test_a_builder_failure_of_another_kind_is_not_retried(
    fake: FakeCompute,
    clients: ComputeClients,
    bake_spec: BuildSpec,
    stand_in_packer: Callable[[dict[str, list[str]]], Path],
) -> None:
    """A provisioning failure mentions no instance creation: the PackerError as it was, one build."""
    record = stand_in_packer({ZONES[0]: provisioning_failure()})
    target = GceTarget(bake_spec, clients=clients, runner=RecordedRunner())
    report = pipeline.BakeReport(bake_spec, git_sha="abc1234", packer_version=(1, 6, 6))
    with pytest.raises(PackerError) as caught:
        pipeline.bake(bake_spec, target, lambda _line: None, build=PackerThenFake(fake), report=report)
    assert PROVISIONING_ERROR in caught.value.output_tail
    assert [var(argv, "zone") for argv in builds(record)] == [ZONES[0]]
    assert report.zones == [ZoneAttempt("build", ZONES[0], "")]


def test_no_builder_zone_with_capacity_is_one_line(
    fake: FakeCompute,
    clients: ComputeClients,
    bake_spec: BuildSpec,
    stand_in_packer: Callable[[dict[str, list[str]]], Path],
) -> None:
    record = stand_in_packer({zone: creation_failure(zone, stockout(zone)) for zone in ZONES})
    target = GceTarget(bake_spec, clients=clients, runner=RecordedRunner())
    report = pipeline.BakeReport(bake_spec, git_sha="abc1234", packer_version=(1, 6, 6))
    with pytest.raises(NoCapacityError) as caught:
        pipeline.bake(bake_spec, target, lambda _line: None, build=PackerThenFake(fake), report=report)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("builder VM: no zone of gce.zones had capacity (")
    for zone in ZONES:
        assert f"{zone}: The zone 'projects/{PROJECT}/zones/{zone}' does not have enough resources" in message
    assert [var(argv, "zone") for argv in builds(record)] == list(ZONES)
    assert [a.zone for a in report.zones] == list(ZONES)
    assert fake.instances == {}
