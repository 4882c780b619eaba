"""The GCE dress rehearsal (``invoke rehearse``): the GCE target's test stage, publish and retention run for
real against the fake Compute API with its VM backend, on a local VM that boots like a Compute Engine
instance (Debian's real ``google-guest-agent`` and OS Login packages, SMBIOS "Google Compute Engine", a
metadata server fake at 169.254.169.254).

How it runs (:func:`rehearse`):
1. The rehearsal environment is a GCE environment of the configuration (``gstg`` by default) with the local
   environment's build settings: Packer's **qemu** builder bakes (googlecompute cannot reach a fake) on the
   rehearsal base image (``bakery.baserecipe.GCE_REHEARSAL``), with the local artifacts (stand-ins: no
   internet here). The test VM is reached over the ``internal`` route (no IAP: there is no Google edge).
2. The baked disk is registered in the fake as the candidate image, in the candidate family, with the
   labels Packer's googlecompute template gives it; the GCE target's own, unchanged ``test``, ``publish``
   and retention code then runs against the fake (``GceTarget`` given the fake's clients and the VM
   backend's SSH port: its ``internal`` route reaches the address the fake reports).
3. The project is set up as the issue about the first real GCE bake decided to handle: ``enable-oslogin=TRUE``
   and a project-wide SSH key of another user; the test instance's own metadata must win (OS Login off,
   project keys blocked).
4. Besides the image suite, :func:`guest_problems` checks what the guest agent did (the ``runner`` seam of
   ``GceTarget`` runs the default runner, then these probes over the same SSH login); afterwards no
   instance and no VM may be left.

Everything Google-side here is a test double (``tests/fakes``): the rehearsal proves the guest side and our
code against those doubles, never Compute Engine itself.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bakery import pipeline, proc, render, ssh
from bakery.baserecipe import GCE_REHEARSAL
from bakery.config import BuildSpec, Coverage, Settings
from bakery.encode import label_value
from bakery.errors import ConfigError, PackerError, VMError
from bakery.gce.client import ComputeClients
from bakery.gce.instances import TEST_USER
from bakery.gce.target import GceTarget, SuiteRun, expires_label, ssh_then_suite
from bakery.images import ImageRecord, ImageStore
from bakery.imagetest import RunningVM, TestOutcome
from bakery.local.target import LocalTarget
from bakery.packer import detect_version
from bakery.target import Say, ZoneAttempt, git_sha
from tests.fakes.compute import FakeCompute
from tests.fakes.metadata import MetadataServer
from tests.fakes.vmbackend import VmBackend

# The project-wide key of another user: the test instance sets block-project-ssh-keys, so the guest agent
# must not create this user (GCE "Manage SSH keys in metadata": project keys are ignored when blocked).
PROJECT_USER = "rehearsal-project-user"
# Image suite tests that prove the VM's own host keys and machine-id, not the builder's (tests/image/test_seal.py).
PER_VM_TESTS = ("test_ssh_host_keys_are_this_vms", "test_machine_id_is_this_vms")
# google-guest-agent 20211116.00: every metadata user joins google-sudoers, which
# /etc/sudoers.d/google_sudoers gives passwordless sudo (google_guest_agent/non_windows_accounts.go:376,
# :399-407); OS Login on adds "AuthorizedKeysCommand /usr/bin/google_authorized_keys" to sshd_config
# (google_guest_agent/oslogin.go:190) and " cache_oslogin oslogin" to nsswitch.conf's passwd and group
# lines (oslogin.go:238-269).
# The agent marks each key it writes with a "# Added by Google" line (non_windows_accounts.go:431).
ADMIN_GROUP = "google-sudoers"
SUDOERS_FILE = "/etc/sudoers.d/google_sudoers"
OS_LOGIN_SSHD_LINE = "AuthorizedKeysCommand /usr/bin/google_authorized_keys"
GCE_PRODUCT = "Google Compute Engine"
# getent(1): exit 2 "One or more supplied key could not be found in the database".
GETENT_NOT_FOUND = 2

# What the probes read on the test VM, over the test stage's own login (``sudo -n``: as the image suite does).
PROBES: dict[str, list[str]] = {
    "user": ["id", "-un"],
    "groups": ["id", "-Gn"],
    "sudo_uid": ["sudo", "-n", "id", "-u"],
    "sudoers": ["sudo", "-n", "cat", SUDOERS_FILE],
    "project_user": ["getent", "passwd", PROJECT_USER],
    "authorized_keys": ["cat", f"/home/{TEST_USER}/.ssh/authorized_keys"],
    "sshd_config": ["sudo", "-n", "cat", "/etc/ssh/sshd_config"],
    "nsswitch": ["cat", "/etc/nsswitch.conf"],
    # The agent publishes each host key it makes as guest attribute hostkeys/TYPE = the key's base64 field
    # (instance_setup.go:263-264); the rehearsal's project enables guest attributes so the fake keeps them.
    "host_keys": ["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"],
    "agent": ["systemctl", "is-active", "google-guest-agent.service"],
    "product": ["cat", "/sys/class/dmi/id/product_name"],
}


@dataclass
class GuestFacts:
    """What the probes found: each probe's output (stripped) and exit status."""

    output: dict[str, str]
    status: dict[str, int]


def probe_guest(vm: RunningVM, timeout: float = 60.0) -> GuestFacts:
    """Run :data:`PROBES` on the test VM (one SSH command each, through the stage's control master)."""
    output, status = {}, {}
    for name, command in PROBES.items():
        result = proc.run(ssh.ssh_argv(vm.ssh_config, vm.host, command), timeout=timeout, check=False)
        output[name], status[name] = result.output.strip(), result.returncode
    return GuestFacts(output, status)


def guest_problems(
    facts: GuestFacts, *, instance_key: str, oslogin_calls: int, published_host_keys: dict[str, str]
) -> list[str]:
    """What the guest did wrong, one line each (empty: as GCE's guest agent does on Compute Engine).
    ``published_host_keys``: the guest attributes the agent wrote (``hostkeys/TYPE`` -> key)."""
    out, status = facts.output, facts.status
    problems = [
        f"probe {name} failed (exit {status.get(name)}): {out.get(name)!r}"
        for name in ("sshd_config", "nsswitch", "host_keys")
        if status.get(name) != 0
    ]
    if out.get("user") != TEST_USER:
        problems.append(f"logged in as {out.get('user')!r}, not the metadata user {TEST_USER!r}")
    if ADMIN_GROUP not in out.get("groups", "").split():
        problems.append(f"{TEST_USER} is not in {ADMIN_GROUP} (groups: {out.get('groups')!r})")
    if status.get("sudo_uid") != 0 or out.get("sudo_uid") != "0":
        problems.append(f"{TEST_USER} has no passwordless sudo: {out.get('sudo_uid')!r}")
    if f"%{ADMIN_GROUP} ALL=(ALL:ALL) NOPASSWD:ALL" not in out.get("sudoers", ""):
        problems.append(f"{SUDOERS_FILE} does not give {ADMIN_GROUP} sudo: {out.get('sudoers')!r}")
    if status.get("project_user") == 0:
        problems.append(f"the project-wide key's user {PROJECT_USER} exists: block-project-ssh-keys was ignored")
    elif status.get("project_user") != GETENT_NOT_FOUND:
        problems.append(f"cannot tell whether {PROJECT_USER} exists: getent exited {status.get('project_user')}")
    on_disk = {f"hostkeys/{line.split()[0]}": line.split()[1] for line in out.get("host_keys", "").splitlines() if line}
    if not on_disk or on_disk != published_host_keys:
        problems.append(
            "the SSH host keys are not the ones the guest agent made for this instance "
            f"(on disk: {sorted(on_disk)}; published by the agent: {sorted(published_host_keys)})"
        )
    lines = out.get("authorized_keys", "").splitlines()
    keys = [" ".join(line.split()[:2]) for line in lines if line.strip() and not line.startswith("#")]
    if keys != [" ".join(instance_key.split()[:2])]:
        problems.append(f"{TEST_USER}'s authorized_keys are not exactly the instance's key: {keys}")
    sshd = [line.strip() for line in out.get("sshd_config", "").splitlines()]
    nss = any("oslogin" in line.split() for line in out.get("nsswitch", "").splitlines() if line.startswith("passwd:"))
    if OS_LOGIN_SSHD_LINE in sshd or nss or oslogin_calls:
        problems.append(
            f"OS Login was turned on despite the instance's enable-oslogin=false (sshd_config has "
            f"{OS_LOGIN_SSHD_LINE!r}: {OS_LOGIN_SSHD_LINE in sshd}; nsswitch passwd has oslogin: {nss}; "
            f"OS Login user lookups: {oslogin_calls})"
        )
    if out.get("agent") != "active":
        problems.append(f"google-guest-agent.service is {out.get('agent')!r}, not active")
    if out.get("product") != GCE_PRODUCT:
        problems.append(f"the VM does not say it is {GCE_PRODUCT!r}: {out.get('product')!r}")
    return problems


def per_vm_problems(junit: Path) -> list[str]:
    """The image suite's per-VM host key and machine-id tests must have run and passed."""
    if not junit.is_file():
        return [f"no JUnit report at {junit}"]
    problems = []
    # testinfra names each case after its host: test_x[ssh://bakery-gce-test]
    cases = {case.get("name", "").split("[")[0]: case for case in ET.parse(junit).iter("testcase")}
    for test in PER_VM_TESTS:
        case = cases.get(test)
        if case is None:
            problems.append(f"{test} did not run")
        elif any(child.tag in ("failure", "error", "skipped") for child in case):
            problems.append(f"{test} did not pass")
    return problems


def login_lookups(servers: list[MetadataServer]) -> list[str]:
    """The OS Login API calls that only a guest with OS Login on makes: a user looked up by name or uid (the
    NSS module), a login authorized. google-compute-engine-oslogin's cache timer lists ``users?pagesize=`` and
    ``groups?pagesize=`` whether OS Login is on or not (guest-oslogin 20210907.00, src/oslogin_utils.cc:240,
    275; a 404 there "means OS Login is not enabled", :248, :283): those are not counted."""
    markers = ("username=", "uid=", "/authorize", "/authenticate")
    return [call for server in servers for call in server.oslogin_calls if any(m in call for m in markers)]


class RehearsalTarget:
    """pipeline.Target: the local target bakes, the GCE target (against the fake) tests, publishes, prunes."""

    def __init__(self, spec: BuildSpec, fake: FakeCompute, backend: VmBackend, say: Say) -> None:
        gce = spec.env.gce
        assert gce is not None
        self.spec, self.fake, self.backend, self.say = spec, fake, backend, say
        self.local = LocalTarget(spec, recipe=GCE_REHEARSAL)
        clients = ComputeClients.create(gce.project, gce.zone, endpoint=fake.endpoint)
        # The fake project takes the stand-in image that GCE's publish refuses: publish is rehearsed all the same.
        self.gce = GceTarget(
            spec, clients=clients, runner=self._runner, ssh_port=backend.ssh_port, publish_stand_ins=True
        )
        self.store: ImageStore = self.gce.store
        self.disks: dict[str, str] = {}  # candidate image -> the qcow2 Packer left
        self.guest: list[str] = []  # what the guest probes found wrong
        self.facts: GuestFacts | None = None
        self.instance_key = ""  # the test instance's public key (ssh-keys metadata)

    def source_image(self, say: Say) -> str:
        return self.local.source_image(say)

    def consumers(self, family: str) -> list[str]:
        return self.gce.consumers(family)

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        self.local.check_tools(packer_version)
        self.gce.check_tools(packer_version)
        proc.require_tools({"socat": "socat"})

    def prepare(self, rendered: render.Rendered, say: Say) -> dict[str, str]:
        return self.local.prepare(rendered, say)

    def retry_build(self, error: PackerError, say: Say) -> dict[str, str] | None:
        return None

    def zones_tried(self) -> list[ZoneAttempt]:
        return self.gce.zones_tried()

    def candidate_name(self, image_name: str) -> str:
        return self.gce.candidate_name(image_name)

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        self.disks[image_name] = self.local.output(rendered, image_name)
        return image_name

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: Say) -> TestOutcome:
        """Register the baked disk as the candidate image (as googlecompute would have made it), then the GCE
        target's test stage."""
        disk = Path(self.disks[candidate])
        gce = self.gce
        expires = expires_label(gce.clock(), gce.settings.builder_max_run_minutes * 60)
        labels = {  # what templates/packer/gce.pkr.hcl.j2 gives the candidate (image_labels)
            **render.image_labels(self.spec),
            "input-fingerprint": rendered.fingerprint[:63],
            "git-sha": label_value(git_sha()),
            "bakery-run-id": gce.run_id,
            "bakery-expires": expires,
        }
        self.fake.seed_image(candidate, self.spec.candidate_family, local_disk=disk, labels=labels)
        say(f"rehearsal: registered {disk} as candidate image {candidate} ({self.spec.candidate_family})")
        outcome = self.gce.test(rendered, candidate, run_dir, say)
        problems = self.guest + per_vm_problems(outcome.junit)
        for line in problems:
            say(f"rehearsal: FAILED: {line}")
        if problems:
            names = [f"rehearsal: {line}" for line in problems]
            outcome = dataclasses.replace(
                outcome, failed=outcome.failed + len(names), failures=outcome.failures + names
            )
        return outcome

    def _runner(self, vm: RunningVM, run: SuiteRun) -> TestOutcome:
        """The GCE target's default runner (SSH, then the image suite), then the guest probes."""
        outcome = ssh_then_suite(vm, run)
        self.facts = probe_guest(vm)
        pubkey = next(arg.split("=", 1)[1] for arg in run.extra_args if arg.startswith("--injected-pubkey="))
        oslogin = len(login_lookups(self.backend.metadata_servers))
        server = self.backend.metadata_servers[-1]  # the instance the suite ran on (the last one created)
        with server.lock:
            published = {k: v for k, v in server.guest_attributes.items() if k.startswith("hostkeys/")}
        self.instance_key = Path(pubkey).read_text().strip()
        self.guest = guest_problems(
            self.facts, instance_key=self.instance_key, oslogin_calls=oslogin, published_host_keys=published
        )
        if not self.guest:
            self.say(
                f"rehearsal: guest agent created {TEST_USER} from the ssh-keys metadata with sudo ({ADMIN_GROUP}); "
                f"project keys blocked; OS Login off; host keys made and published by the agent; {GCE_PRODUCT}"
            )
        return outcome

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        return self.gce.publish(
            candidate, image_name, family, labels=labels, description=description, manifest=manifest
        )

    def discard(self, candidate: str) -> None:
        self.gce.discard(candidate)
        disk = self.disks.get(candidate)
        if disk and Path(disk).exists():
            self.local.discard(disk)

    def keep(self, candidate: str, run_dir: Path) -> str:
        kept = self.gce.keep(candidate, run_dir)
        disk = self.disks.get(candidate)
        if disk and Path(disk).exists():
            kept += f" (disk {self.local.keep(disk, run_dir)})"
        return kept

    def plan(self, rendered_dir: Path) -> list[str]:
        return [*self.local.plan(rendered_dir), *self.gce.plan(rendered_dir)]


def rehearsal_spec(settings: Settings, env: str | None, variant: str) -> BuildSpec:
    """The rehearsal environment ``rehearsal-ENV``: GCE environment ``env`` (default: the first ``target: gce``
    one) with the local environment's build settings and artifacts, and the ``internal`` SSH route."""
    config = settings.config
    gce_envs = [name for name, e in config.environments.items() if e.target == "gce"]
    name = env or (gce_envs[0] if gce_envs else "")
    if name not in gce_envs:
        raise ConfigError(
            f"rehearse needs a 'target: gce' environment: use --env with one of {', '.join(gce_envs) or '(none)'} "
            "(bakery.environments in invoke.yaml)"
        )
    local_env = next((e for e in config.environments.values() if e.target == "local"), None)
    if local_env is None or local_env.local is None:
        raise ConfigError("rehearse bakes with the local target's settings: add a 'target: local' environment")
    if variant not in config.variants or not config.variants[variant].local:
        local_variants = [v for v, spec in config.variants.items() if spec.local]
        raise ConfigError(
            f"variant {variant!r} cannot be baked locally: use --variant with one of {', '.join(local_variants)}"
        )
    source = config.environments[name]
    assert source.gce is not None
    gce = source.gce.model_copy(update={"use_iap": False, "omit_external_ip": True})
    rehearsal = source.model_copy(
        update={
            "target": "local",
            "variants": (variant,),
            "artifacts": local_env.artifacts,
            "local": local_env.local,
            "gce": gce,
            "coverage": Coverage(),
        }
    )
    env_name = f"rehearsal-{name}"
    rehearsal_config = config.model_copy(update={"environments": {**config.environments, env_name: rehearsal}})
    return BuildSpec(rehearsal_config, env_name, variant, settings.project_root)


@contextmanager
def rehearsal_cloud(spec: BuildSpec, say: Say, workdir: Path) -> Iterator[tuple[FakeCompute, VmBackend]]:
    """The fake project of ``spec`` with the VM backend, served on 127.0.0.1; every VM stopped at the end."""
    gce = spec.env.gce
    assert gce is not None
    local = spec.env.local
    assert local is not None
    project_key = ssh.generate_key(workdir / "project-key", f"{PROJECT_USER}@rehearsal")
    fake = FakeCompute(project=gce.project)
    fake.project_metadata.update(
        {
            "enable-oslogin": "TRUE",
            # The agent writes the new host keys there (instance_setup.go:258-300): rehearsal.json shows them.
            "enable-guest-attributes": "TRUE",
            "ssh-keys": f"{PROJECT_USER}:{project_key.read_text().strip()}",
        }
    )
    backend = VmBackend(workdir / "vms", memory_mb=local.memory_mb, cpus=local.cpus, log=say)
    fake.vm_backend = backend
    with fake.serve(), backend.running():
        yield fake, backend


def leftovers(fake: FakeCompute, backend: VmBackend) -> list[str]:
    """Instances and disks the fake still holds and VMs still running (empty after a clean run)."""
    left = [f"instance {zone}/{name}" for zone, name in fake.instances]
    left += [f"disk {zone}/{name}" for zone, name in fake.disks]
    left += [f"QEMU pid {pid}" for pid in backend.pids if proc.pid_alive(pid)]
    return left


REPORT_FILE = "rehearsal.json"


def rehearse(settings: Settings, say: Say, *, env: str | None = None, variant: str = "debian-12") -> str:
    """Run the rehearsal; return the bake's summary line. Writes ``rehearsal.json`` (what the guest and the
    fakes saw) into the run directory. Raises ImageTestError when the suite or a guest probe failed,
    VMError when an instance or VM was left behind."""
    spec = rehearsal_spec(settings, env, variant)
    report = pipeline.BakeReport(spec, git_sha=git_sha(), packer_version=detect_version())
    with tempfile.TemporaryDirectory(prefix="bakery-rehearsal-") as scratch:
        with rehearsal_cloud(spec, say, Path(scratch)) as (fake, backend):
            target = RehearsalTarget(spec, fake, backend, say)
            try:
                pipeline.bake(spec, target, say, report=report)
            finally:
                left = leftovers(fake, backend)
                if report.image_name:  # the bake started
                    say(f"rehearsal: report {write_report(spec, report, target, left)}")
                if backend.pids and not left:
                    pids = ", ".join(map(str, backend.pids))
                    say(f"rehearsal: test instance deleted, its VM stopped (QEMU pids {pids})")
        if left:
            raise VMError(f"rehearsal left {', '.join(left)} behind after the test stage")
    return pipeline.summary(report)


def write_report(spec: BuildSpec, report: pipeline.BakeReport, target: RehearsalTarget, left: list[str]) -> Path:
    """``rehearsal.json`` in the run directory: the guest's facts and problems and what the fakes saw."""
    fake, backend = target.fake, target.backend
    with fake.lock:
        record = {
            "image": report.image_name,
            "environment": spec.env_name,
            "variant": spec.variant_name,
            "instance_key": target.instance_key,
            "guest_facts": dataclasses.asdict(target.facts) if target.facts else None,
            "guest_problems": target.guest,
            "per_vm_problems": per_vm_problems(report.outcome.junit) if report.outcome else None,
            "outcome": report.outcome.summary() if report.outcome else None,
            "project_metadata": dict(fake.project_metadata),
            "compute_calls": [call.method for call in fake.calls],
            "metadata_servers": [
                {
                    "instance": server.instance,
                    "requests": [f"{seen.method} {seen.target} -> {seen.status}" for seen in server.requests],
                    "violations": server.violations,
                    "oslogin_calls": server.oslogin_calls,
                    "guest_attributes": server.guest_attributes,
                }
                for server in backend.metadata_servers
            ],
            "oslogin_login_lookups": login_lookups(backend.metadata_servers),
            "qemu_pids": backend.pids,
            "leftovers": left,
        }
    path = spec.runs_dir / (report.image_name or "unnamed") / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
