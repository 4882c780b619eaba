"""The GCE test stage's SSH/testinfra step for real: the fake's test instance is backed by a local QEMU VM
(the cached Debian 12 base image). The fake reports networkIP 127.0.0.1, the target's ssh_config maps the
instance to the VM's forwarded port, and a thread plays GCE's guest agent: once the instance is RUNNING
it creates the user from the ``ssh-keys`` metadata, with passwordless sudo. A tiny testinfra suite then
runs through GceTarget.test (the default runner: wait for SSH, then run_image_tests with ``--sudo``)."""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery import render
from bakery.config import Timeouts
from bakery.gce.client import ComputeClients
from bakery.gce.target import GceTarget
from bakery.imagetest import RunningVM
from bakery.local.vm import boot_vm
from tests.fakes.compute import FakeCompute
from tests.integration.gce.test_gce_pipeline import CANDIDATES, gce_spec, names, seed_candidate
from tests.support import cached_base_image

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--expectations")
    parser.addoption("--injected-pubkey", action="append", default=[])
"""
SUITE = """
from pathlib import Path


def test_commands_run_under_sudo_for_the_metadata_user(host):
    assert host.check_output("id -un") == "root"
    assert host.check_output("printenv SUDO_USER") == "bakery-test"


def test_the_injected_key_is_the_users_only_key(host, pytestconfig):
    (path,) = pytestconfig.getoption("--injected-pubkey")
    key = " ".join(Path(path).read_text().split()[:2])
    keys = host.file("/home/bakery-test/.ssh/authorized_keys").content_string.splitlines()
    assert [" ".join(k.split()[:2]) for k in keys] == [key]


def test_debian_12(host):
    assert host.system_info.codename == "bookworm"


def test_deliberately_failing(host):
    assert host.file("/etc/no-such-file").exists
"""


class GuestAgent(threading.Thread):
    """Does what GCE's guest agent does with ``ssh-keys`` metadata, on the VM behind the fake's instance."""

    def __init__(self, fake: FakeCompute, vm: RunningVM) -> None:
        super().__init__(name="guest-agent", daemon=True)
        self.fake, self.vm = fake, vm
        self.stop = threading.Event()
        self.users: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                with self.fake.lock:
                    running = [i for i in self.fake.instances.values() if i["status"] == "RUNNING"]
                for instance in running:
                    items = {m["key"]: m["value"] for m in instance.get("metadata", {}).get("items", [])}
                    user, _, key = items["ssh-keys"].partition(":")
                    if user not in self.users:
                        self.add_user(user, key)
                        self.users.append(user)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def add_user(self, user: str, key: str) -> None:
        u, k = shlex.quote(user), shlex.quote(key)
        script = (
            f"id {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}; "
            f"install -d -m 700 -o {u} -g {u} /home/{u}/.ssh; "
            f"printf '%s\\n' {k} >/home/{u}/.ssh/authorized_keys; "
            f"chown {u}:{u} /home/{u}/.ssh/authorized_keys; chmod 600 /home/{u}/.ssh/authorized_keys; "
            f"printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {u} >/etc/sudoers.d/google_sudoers; "
            "chmod 440 /etc/sudoers.d/google_sudoers"
        )
        self.vm.run(["sudo", "-n", "sh", "-c", script], timeout=120)


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[RunningVM]:
    """The VM behind the fake's instance (booted before the fake's socket guard is installed)."""
    base = cached_base_image()
    with boot_vm(
        base.disk,
        accelerator=os.environ.get("BAKERY_ACCELERATOR", "tcg"),
        ssh_key=base.ssh_key,
        user=base.user,
        workdir=tmp_path / "vm",
        boot_timeout=300,
        log=print,
    ) as running:
        yield running


@pytest.mark.slow
def test_the_test_stage_runs_testinfra_over_ssh_and_deletes_the_instance(
    vm: RunningVM, fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    fake.default_ip = "127.0.0.1"
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_tiny.py").write_text(SUITE)
    spec = gce_spec(tmp_path, timeouts=Timeouts(boot=180, image_tests=300), omit_external_ip=True, use_iap=False)
    spec = type(spec)(
        spec.config.model_copy(update={"image_suite": str(suite)}), spec.env_name, spec.variant_name, spec.project_root
    )
    _, candidate = names()
    seed_candidate(fake, spec, candidate)
    target = GceTarget(spec, clients=clients, ssh_port=vm.port)
    agent = GuestAgent(fake, vm)
    agent.start()
    started = time.monotonic()
    try:
        outcome = target.test(
            render.Rendered(spec, tmp_path / "rendered", "f" * 64, "debian-cloud/debian-12"),
            candidate,
            tmp_path / "run",
            print,
        )
    finally:
        agent.stop.set()
        agent.join(timeout=30)
    print(f"test stage took {time.monotonic() - started:.1f} s")
    assert agent.errors == [] and agent.users == ["bakery-test"]
    assert (outcome.passed, outcome.failed, outcome.errors, outcome.skipped) == (3, 1, 0, 0), outcome.log.read_text()
    assert outcome.failures == ["test_tiny::test_deliberately_failing[ssh://bakery-gce-test]"]
    assert fake.instances == {} and fake.disks == {}
    assert [c.method for c in fake.calls if c.method.startswith("compute.instances")][-1] == "compute.instances.delete"
    assert fake.images[candidate]["family"] == CANDIDATES
