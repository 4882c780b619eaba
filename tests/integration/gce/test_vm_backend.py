"""The fake Compute API's VM backend (tests/fakes/vmbackend.py) with real QEMU: an instance of an image that
carries a local disk boots a VM that says it is a Compute Engine instance, reaches its metadata server at
169.254.169.254, follows the API (status, serial output, delete stops it by PID) and is never left behind.

The VM is the cached local base image (its build user and key let the test look inside); the rehearsal
(tests/e2e/test_rehearsal.py) boots the rehearsal base with the real guest agent.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import compute_v1

from bakery import proc
from bakery.gce.client import ComputeApiError, ComputeClients
from bakery.gce.instances import Instances
from bakery.local.baseimage import BaseImage
from tests.childsignals import sigint_default
from tests.fakes.compute import FakeCompute
from tests.fakes.vmbackend import VmBackend
from tests.integration.gce.gce_env import PROJECT, ZONE, make_clients
from tests.support import cached_base_image

ROOT = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("vm_backend_driver.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base() -> BaseImage:
    return cached_base_image()


@pytest.fixture
def backed(base: BaseImage, tmp_path: Path) -> Iterator[tuple[FakeCompute, VmBackend, ComputeClients]]:
    fake = FakeCompute(project=PROJECT)
    fake.seed_image("local-base", "local-base", local_disk=base.disk)
    fake.seed_image("no-local-disk", "other")
    backend = VmBackend(tmp_path / "vms", memory_mb=1024, cpus=1, log=print)
    fake.vm_backend = backend
    with fake.serve(), backend.running():
        yield fake, backend, make_clients(fake, timeout=30, operation_timeout=60)
    assert not [pid for pid in backend.pids if proc.pid_alive(pid)]
    assert fake.violations == []


def insert(clients: ComputeClients, name: str, image: str, metadata: dict[str, str] | None = None) -> None:
    resource = compute_v1.Instance(
        name=name,
        machine_type=f"zones/{ZONE}/machineTypes/e2-small",
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=f"global/images/{image}"),
            )
        ],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in (metadata or {}).items()]),
    )
    Instances(clients).create(resource, zone=ZONE)  # insert_unary + our own wait (never .result(): it polls Google)


def ssh(
    base: BaseImage, address: str, port: int, command: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh",
        "-i",
        str(base.ssh_key),
        "-p",
        str(port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "BatchMode=yes",
        f"{base.user}@{address}",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def wait_ssh(base: BaseImage, address: str, port: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ssh(base, address, port, "true", timeout=30).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(2)
    pytest.fail(f"the VM at {address}:{port} did not answer SSH in {timeout} s")


# The metadata server as a guest sees it (bash's /dev/tcp: the base image has no curl).
METADATA_GET = (
    "exec 3<>/dev/tcp/169.254.169.254/80; "
    "printf 'GET /computeMetadata/v1/instance/attributes/greeting HTTP/1.0\\r\\n' >&3; "
    "printf 'Metadata-Flavor: Google\\r\\n\\r\\n' >&3; "
    "cat <&3"
)


def test_an_instance_of_a_local_disk_image_is_a_vm_that_looks_like_gce(backed, base: BaseImage) -> None:
    fake, backend, clients = backed
    insert(clients, "looks-like-gce", "local-base", {"greeting": "hello-from-metadata"})
    instance = clients.instances.get(project=PROJECT, zone=ZONE, instance="looks-like-gce")
    address = instance.network_interfaces[0].network_i_p
    assert address.startswith("127.0.0.") and address != "127.0.0.1"
    assert instance.status == "RUNNING"
    (pid,) = backend.pids
    assert proc.pid_alive(pid)
    wait_ssh(base, address, backend.ssh_port)
    product = ssh(base, address, backend.ssh_port, "cat /sys/class/dmi/id/product_name /sys/class/dmi/id/sys_vendor")
    assert product.stdout.split("\n")[:2] == ["Google Compute Engine", "Google"]
    reply = ssh(base, address, backend.ssh_port, f"bash -c {shlex.quote(METADATA_GET)}")
    assert reply.stdout.startswith("HTTP/1.0 200") or reply.stdout.startswith("HTTP/1.1 200"), reply.stdout
    assert "Metadata-Flavor: Google" in reply.stdout and reply.stdout.endswith("hello-from-metadata")
    serial = clients.instances.get_serial_port_output(project=PROJECT, zone=ZONE, instance="looks-like-gce")
    assert "Linux version" in serial.contents
    Instances(clients).delete("looks-like-gce", zone=ZONE)
    assert not proc.pid_alive(pid)
    assert fake.instances == {} and backend.vms == {}


def test_the_vm_outlives_the_connection_that_created_it(backed) -> None:
    """QEMU is started by the backend's launcher thread, not the fake's per-connection thread: closing the
    client's connection (its handler thread ends) must not kill the VM (PR_SET_PDEATHSIG is per thread)."""
    fake, backend, clients = backed
    insert(clients, "outlives", "local-base")
    (pid,) = backend.pids
    clients.instances._transport.close()
    time.sleep(2)
    assert proc.pid_alive(pid)
    again = make_clients(fake, timeout=30, operation_timeout=60)
    assert again.instances.get(project=PROJECT, zone=ZONE, instance="outlives").status == "RUNNING"
    Instances(again).delete("outlives", zone=ZONE)
    assert not proc.pid_alive(pid)


def test_the_status_follows_the_vm(backed, base: BaseImage) -> None:
    _, backend, clients = backed
    insert(clients, "powers-off", "local-base")
    address = clients.instances.get(project=PROJECT, zone=ZONE, instance="powers-off").network_interfaces[0].network_i_p
    wait_ssh(base, address, backend.ssh_port)
    ssh(base, address, backend.ssh_port, "sudo -n systemctl poweroff --no-block")
    deadline = time.monotonic() + 120
    while clients.instances.get(project=PROJECT, zone=ZONE, instance="powers-off").status != "TERMINATED":
        assert time.monotonic() < deadline, "the instance is not TERMINATED after its guest powered off"
        time.sleep(1)
    Instances(clients).delete("powers-off", zone=ZONE)


def test_an_image_without_a_local_disk_boots_nothing(backed) -> None:
    fake, backend, clients = backed
    insert(clients, "paper-only", "no-local-disk")
    assert backend.pids == [] and fake.instances[ZONE, "paper-only"]["status"] == "RUNNING"


def test_a_vm_that_cannot_start_fails_the_insert_and_leaves_no_instance(backed, tmp_path: Path) -> None:
    fake, backend, clients = backed
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"not a qcow2 image")
    fake.seed_image("broken", "broken", local_disk=broken)
    with pytest.raises(ComputeApiError, match="fake VM backend: QEMU exited"):
        insert(clients, "never-boots", "broken")
    assert fake.instances == {} and fake.disks == {} and backend.vms == {}
    assert not [pid for pid in backend.pids if proc.pid_alive(pid)]


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "INTERRUPTED"), (signal.SIGTERM, 143, "TERMINATED")]
)
def test_a_signal_leaves_no_vm(base: BaseImage, tmp_path: Path, signum: int, code: int, word: str) -> None:
    driver = subprocess.Popen(
        [sys.executable, str(DRIVER), str(base.disk), str(tmp_path / "vms")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=sigint_default,  # noqa: PLW1509 - SIGINT as at a terminal, even in a background test run
    )
    try:
        assert driver.stdout is not None
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if line.startswith("BOOTED"):
                break
        assert lines and lines[-1].startswith("BOOTED"), "".join(lines)
        pid = int(lines[-1].split()[1])
        assert proc.pid_alive(pid)
        driver.send_signal(signum)
        rest, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=10)
    assert driver.returncode == code, "".join(lines) + rest
    assert word in rest
    assert f"QEMU pid {pid} stopped" in rest  # stopped by the backend on the way out, not only by PDEATHSIG
    assert not proc.pid_alive(pid), f"QEMU pid {pid} outlived the {signal.Signals(signum).name}"
