"""An opt-in VM backend for the fake Compute API: an instance created from an image that carries a local
disk (``FakeCompute.image_disks``) boots as a QEMU VM that looks like a Compute Engine instance from inside.

- SMBIOS type 1 says manufacturer ``Google``, product ``Google Compute Engine`` (``GCE_SMBIOS``).
- The VM's user network is ``169.254.169.0/24`` and ``169.254.169.254:80`` is forwarded (QEMU ``guestfwd``,
  one ``socat`` per connection) to a :class:`~tests.fakes.metadata.MetadataServer` for that instance on
  127.0.0.1. QEMU 7.2 accepts a guest forward only inside the user network's own range, hence that range
  (the default 10.0.2.0/24 refuses 169.254.169.254). ``restrict=on``: the guest reaches nothing else (no
  internet; forwards still work, QEMU's ``-netdev user`` documentation).
- Its SSH port is forwarded from its own loopback address (127.0.0.2, .3, …, reported by the fake as the
  instance's ``networkIP``) and the backend's one ``ssh_port``, so the GCE target's ``internal`` route
  reaches it as it would reach a VM without an external IP (the target is given ``ssh_port``).
- ``instances.delete`` stops the VM by PID (SIGTERM, grace, SIGKILL); the instance's status follows the VM
  (``TERMINATED`` once QEMU exited); ``getSerialPortOutput`` returns its console (``-serial file:``).
- QEMU runs in ``-snapshot`` mode: the image's disk is never written. QEMU dies with the thread that started
  it (PR_SET_PDEATHSIG): the backend's own launcher thread, which lives as long as :meth:`VmBackend.running`
  (not the fake's per-connection HTTP thread, which ends when the client closes its connection). On the way
  out of ``running()`` (under deferred signals) every VM and metadata server it started is stopped, so a
  failure, a timeout, Ctrl-C or SIGTERM leaves none behind, and a killed process takes its VMs with it.

This is a test double of Compute Engine's hypervisor: nothing here is Google's, except the guest software
the image itself carries.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bakery import proc
from bakery.errors import VMError
from bakery.local.vm import free_port, qemu_argv, wait_listening
from tests.fakes.metadata import MetadataServer

if TYPE_CHECKING:
    from tests.fakes.compute import FakeCompute

# What a Compute Engine VM's firmware reports (Google: "Detect if a VM is running in Compute Engine",
# cloud.google.com/compute/docs/instances/detect-compute-engine: `dmidecode -s system-product-name` prints
# "Google Compute Engine"; the manufacturer is "Google").
GCE_SMBIOS = ("type=1,manufacturer=Google,product=Google Compute Engine",)
METADATA_NET = "169.254.169.0/24"
METADATA_ADDRESS = "169.254.169.254"
TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "socat": "socat"}


@dataclass
class LocalVm:
    """One instance's VM: its QEMU process, metadata server and files."""

    zone: str
    name: str
    address: str
    qemu: subprocess.Popen[bytes]
    metadata: MetadataServer
    serial_log: Path
    stack: ExitStack


class VmBackend:
    """Boots, watches and stops the fake's instances' VMs (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        *,
        accelerator: str = "tcg",
        memory_mb: int = 2048,
        cpus: int = 2,
        ssh_port: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.workdir = workdir
        self.accelerator, self.memory_mb, self.cpus = accelerator, memory_mb, cpus
        self.ssh_port = ssh_port or free_port()
        self.say = log or (lambda _line: None)
        self.vms: dict[tuple[str, str], LocalVm] = {}
        self.pids: list[int] = []  # every QEMU started, for the tests' "none left" checks
        self.metadata_servers: list[MetadataServer] = []  # every instance's, kept after it stopped
        self._hosts = itertools.count(2)
        self._lock = threading.Lock()
        self._launcher: ThreadPoolExecutor | None = None

    def _launch(self, argv: list[str], workdir: Path) -> subprocess.Popen[bytes]:
        """Start QEMU from the launcher thread (see the module docstring)."""
        if self._launcher is None:
            raise VMError("the VM backend is not running: use `with backend.running():`")
        future = self._launcher.submit(
            proc.spawn, argv, output=workdir / "qemu.log", env={"TMPDIR": str(workdir)}, die_with_parent=True
        )
        return future.result(timeout=30)

    def boot(self, fake: FakeCompute, zone: str, name: str, disk: Path) -> str:
        """Start the VM of instance ``zone/name`` from ``disk``; return its loopback address."""
        proc.require_tools(TOOLS)
        if not disk.is_file():
            raise VMError(f"the image's local disk {disk} does not exist")
        with self._lock:
            address = f"127.0.0.{next(self._hosts)}"
        workdir = self.workdir / f"{zone}-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        serial_log = workdir / "serial.log"
        stack = ExitStack()
        try:
            metadata = stack.enter_context(MetadataServer(fake, zone, name).serve())
            self.metadata_servers.append(metadata)
            # One relay process per guest connection (QEMU runs the command with /bin/sh -c).
            relay = f"cmd:socat STDIO TCP:127.0.0.1:{metadata.port}"
            argv = qemu_argv(
                disk,
                accelerator=self.accelerator,
                memory_mb=self.memory_mb,
                cpus=self.cpus,
                serial_log=serial_log,
                pidfile=workdir / "qemu.pid",
                ssh_port=self.ssh_port,
                listen=address,
                user_net=(f"net={METADATA_NET}", "restrict=on", f"guestfwd=tcp:{METADATA_ADDRESS}:80-{relay}"),
                mac=metadata.mac_address,
                system=GCE_SMBIOS,
            )
            qemu = self._launch(argv, workdir)
            stack.callback(proc.stop_process, qemu, grace=10)
            self.pids.append(qemu.pid)
            wait_listening(qemu, self.ssh_port, host=address)
            if qemu.poll() is not None:
                raise VMError(
                    f"QEMU exited with status {qemu.returncode} at start: "
                    f"{proc.file_tail(workdir / 'qemu.log', 5) or '(no output)'}"
                )
        except BaseException:
            with proc.signals_deferred():
                stack.close()
            raise
        with self._lock:
            self.vms[zone, name] = LocalVm(zone, name, address, qemu, metadata, serial_log, stack)
        self.say(f"fake compute: instance {name} is QEMU pid {qemu.pid}, ssh on {address}:{self.ssh_port}")
        return address

    def vm(self, zone: str, name: str) -> LocalVm | None:
        with self._lock:
            return self.vms.get((zone, name))

    def status(self, zone: str, name: str) -> str | None:
        """``RUNNING`` while the instance's QEMU runs, ``TERMINATED`` after; None if it has no VM."""
        vm = self.vm(zone, name)
        if vm is None:
            return None
        return "RUNNING" if vm.qemu.poll() is None else "TERMINATED"

    def serial(self, zone: str, name: str) -> str | None:
        """The VM's console so far (None if the instance has no VM)."""
        vm = self.vm(zone, name)
        if vm is None:
            return None
        return vm.serial_log.read_text(errors="replace") if vm.serial_log.exists() else ""

    def stop(self, zone: str, name: str) -> None:
        """Stop the instance's VM by PID and its metadata server (nothing if it has none)."""
        with self._lock:
            vm = self.vms.pop((zone, name), None)
        if vm is not None:
            with proc.signals_deferred():
                vm.stack.close()
            self.say(f"fake compute: instance {name}: QEMU pid {vm.qemu.pid} stopped")

    def close(self) -> None:
        """Stop every VM still running."""
        for zone, name in list(self.vms):
            self.stop(zone, name)

    @contextmanager
    def running(self) -> Iterator[VmBackend]:
        """The backend for the duration; every VM it started is stopped on the way out."""
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm-launcher")
        try:
            yield self
        finally:
            with proc.signals_deferred():
                self.close()
                self._launcher.shutdown(wait=True)
                self._launcher = None
