"""Boot a qcow2 image under QEMU (snapshot mode), reach it over SSH, and run the image tests against it.

``boot_vm`` always stops QEMU (by PID: SIGTERM, grace, SIGKILL) and the SSH control master when the
block ends: on success, error, timeout, Ctrl-C and SIGTERM (inside ``proc.sigterm_raises``).
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from bakery import proc
from bakery.errors import CommandError, ConfigError, VMError
from bakery.local import ssh

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("kvm", "tcg")
SERIAL_TAIL_LINES = 15
_PORT_ATTEMPTS = 3
_PORT_TAKEN_MARKER = "host forwarding rule"


def qemu_accel_args(accelerator: str) -> list[str]:
    """``-accel``/``-cpu`` arguments: ``kvm`` with the host CPU, ``tcg`` with every emulated feature."""
    if accelerator == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accelerator == "tcg":
        return ["-accel", "tcg", "-cpu", "max"]
    raise ConfigError(f"unknown accelerator {accelerator!r}: use one of {', '.join(ACCELERATORS)}")


def qemu_argv(
    image: Path,
    *,
    accelerator: str,
    memory_mb: int,
    cpus: int,
    serial_log: Path,
    pidfile: Path,
    ssh_port: int | None,
    credentials: Mapping[str, bytes] | None = None,
) -> list[str]:
    """The QEMU command line: snapshot mode (the image is never written), no display, serial to a file,
    user networking with SSH forwarded from 127.0.0.1 only (or no network if ``ssh_port`` is None).

    ``credentials`` are systemd system credentials passed as SMBIOS type 11 strings (systemd >= 252
    imports them at boot; e.g. ``ssh.authorized_keys.root`` lets the test harness log in to a sealed
    image without anything baked into it)."""
    smbios: list[str] = []
    for name, value in sorted((credentials or {}).items()):
        encoded = base64.b64encode(value).decode()
        smbios += ["-smbios", f"type=11,value=io.systemd.credential.binary:{name}={encoded}"]
    if ssh_port is None:
        net = ["-nic", "none"]
    else:
        net = [
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
    return [
        QEMU,
        *qemu_accel_args(accelerator),
        "-smp",
        str(cpus),
        "-m",
        str(memory_mb),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial_log}",
        "-snapshot",
        "-drive",
        f"file={image},format=qcow2,if=virtio",
        *net,
        *smbios,
        "-pidfile",
        str(pidfile),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningVM:
    """A booted VM reachable as ``ssh -F ssh_config host``."""

    host: str
    ssh_config: Path
    pid: int
    port: int
    serial_log: Path
    workdir: Path

    def ssh_argv(self, command: list[str]) -> list[str]:
        return ssh.ssh_argv(self.ssh_config, self.host, command)

    def run(self, command: list[str], *, timeout: float, check: bool = True) -> proc.Completed:
        """Run ``command`` in the guest over the shared connection."""
        return proc.run(self.ssh_argv(command), timeout=timeout, check=check, what=f"ssh {self.host}")


def serial_tail(serial_log: Path, lines: int = SERIAL_TAIL_LINES) -> str:
    return proc.file_tail(serial_log, lines)


@contextmanager
def boot_vm(
    image: Path,
    *,
    accelerator: str,
    ssh_key: Path,
    user: str,
    workdir: Path,
    boot_timeout: float,
    memory_mb: int = 2048,
    cpus: int = 2,
    alias: str = "bakery-vm",
    log: Callable[[str], None] | None = None,
    credentials: Mapping[str, bytes] | None = None,
) -> Iterator[RunningVM]:
    """Boot ``image`` and yield once ``ssh <alias> true`` succeeds; always stop the VM afterwards.

    Raises VMError (naming the timeout and the serial log) if SSH does not answer in ``boot_timeout``.
    """
    say = log or (lambda _msg: None)
    proc.require_tools({QEMU: "qemu-system-x86", "ssh": "openssh-client"})
    if not image.is_file():
        raise VMError(f"VM image {image} does not exist")
    workdir.mkdir(parents=True, exist_ok=True)
    serial_log = workdir / "serial.log"
    qemu_log = workdir / "qemu.log"
    pidfile = workdir / "qemu.pid"
    config = workdir / "ssh_config"
    control_path, control_dir = ssh.control_path_for(workdir)
    qemu: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        qemu, port = _start_qemu(
            image,
            accelerator=accelerator,
            memory_mb=memory_mb,
            cpus=cpus,
            serial_log=serial_log,
            qemu_log=qemu_log,
            pidfile=pidfile,
            workdir=workdir,
            credentials=credentials,
        )
        config.write_text(
            ssh.render_config(alias=alias, port=port, user=user, identity=ssh_key, control_path=control_path)
        )
        say(f"VM pid {qemu.pid} booting {image.name} ({accelerator}), ssh on 127.0.0.1:{port}")
        _wait_for_ssh(
            qemu,
            port=port,
            config=config,
            alias=alias,
            serial_log=serial_log,
            qemu_log=qemu_log,
            boot_timeout=boot_timeout,
            started=started,
        )
        say(f"VM answered SSH after {time.monotonic() - started:.1f} s")
        yield RunningVM(alias, config, qemu.pid, port, serial_log, workdir)
    finally:
        with proc.signals_deferred():
            if config.exists():
                ssh.close_master(config, alias, timeout=10)
            if qemu is not None:
                proc.stop_process(qemu, grace=10)
                say(f"VM pid {qemu.pid} stopped")
            pidfile.unlink(missing_ok=True)
            if control_dir is not None:
                shutil.rmtree(control_dir, ignore_errors=True)


def _start_qemu(
    image: Path,
    *,
    accelerator: str,
    memory_mb: int,
    cpus: int,
    serial_log: Path,
    qemu_log: Path,
    pidfile: Path,
    workdir: Path,
    credentials: Mapping[str, bytes] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start QEMU on a free port; if another process grabbed the port first, retry with a new one."""
    for _attempt in range(_PORT_ATTEMPTS):
        port = free_port()
        for stale in (serial_log, qemu_log, pidfile):
            stale.unlink(missing_ok=True)
        argv = qemu_argv(
            image,
            accelerator=accelerator,
            memory_mb=memory_mb,
            cpus=cpus,
            serial_log=serial_log,
            pidfile=pidfile,
            ssh_port=port,
            credentials=credentials,
        )
        # TMPDIR: QEMU's -snapshot overlay goes to the workdir, not /var/tmp.
        qemu = proc.spawn(argv, output=qemu_log, env={"TMPDIR": str(workdir)}, die_with_parent=True)
        try:
            _wait_listening(qemu, port)
        except BaseException:
            proc.stop_process(qemu, grace=5)
            raise
        if qemu.poll() is None:
            return qemu, port
        message = proc.file_tail(qemu_log, 5)
        if _PORT_TAKEN_MARKER not in message:
            raise VMError(f"QEMU exited with status {qemu.returncode} at start: {message or '(no output)'}")
    raise VMError(f"QEMU could not forward SSH from 127.0.0.1 after {_PORT_ATTEMPTS} ports: ports are taken")


def _wait_listening(qemu: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    """Return once QEMU's port forward accepts connections or QEMU has exited.

    (If another program holds the port, the connect succeeds too, but QEMU then exits at once: the
    short pause lets the caller see that.)
    """
    deadline = time.monotonic() + timeout
    while qemu.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        time.sleep(0.3)
        return


def _wait_for_ssh(
    qemu: subprocess.Popen[bytes],
    *,
    port: int,
    config: Path,
    alias: str,
    serial_log: Path,
    qemu_log: Path,
    boot_timeout: float,
    started: float,
) -> None:
    deadline = started + boot_timeout
    last_error = ""
    while True:
        if qemu.poll() is not None:
            raise VMError(
                f"QEMU (pid {qemu.pid}) exited with status {qemu.returncode} before SSH answered; "
                f"QEMU said: {proc.file_tail(qemu_log, 5) or '(nothing)'}; serial log {serial_log}:\n"
                f"{serial_tail(serial_log)}"
            )
        if ssh.banner_ready(port):
            left = max(1.0, deadline - time.monotonic())
            try:
                result = proc.run(ssh.ssh_argv(config, alias, ["true"]), timeout=min(30.0, left), check=False)
                if result.returncode == 0:
                    return
                last_error = result.tail
            except CommandError as exc:
                last_error = str(exc)
        if time.monotonic() >= deadline:
            detail = f" (last ssh error: {last_error.strip()})" if last_error.strip() else ""
            raise VMError(
                f"VM did not answer SSH within {boot_timeout:.0f} s{detail}; serial log {serial_log}:\n"
                f"{serial_tail(serial_log)}"
            )
        time.sleep(1.0)


# --- image tests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """One installed Debian package, as ``dpkg-query`` reports it."""

    name: str
    version: str
    architecture: str


DPKG_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"


def parse_dpkg_query(text: str) -> list[Package]:
    """Installed packages from ``dpkg-query -W -f=DPKG_FORMAT`` output, sorted by name and architecture."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[3] == "installed":
            packages.append(Package(*fields[:3]))
    return sorted(packages, key=lambda p: (p.name, p.architecture))


def capture_packages(vm: RunningVM, *, timeout: float = 120.0) -> list[Package]:
    """The VM's installed packages (dpkg-query over the VM's SSH connection); an empty list is an error."""
    result = vm.run(["dpkg-query", "-W", f"-f={DPKG_FORMAT}"], timeout=timeout)
    packages = parse_dpkg_query(result.output)
    if not packages:
        raise CommandError(vm.ssh_argv(["dpkg-query", "-W"]), 0, result.tail, what="package list (no packages)")
    return packages


@dataclass(frozen=True)
class TestOutcome:
    """Counts from a testinfra run's JUnit XML; ``failures`` lists the ids of failed and errored tests."""

    __test__ = False  # not a pytest test class

    passed: int
    failed: int
    skipped: int
    errors: int
    junit: Path
    log: Path
    failures: list[str] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)  # the SBOM, read from the VM after the suite

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0

    def summary(self) -> dict[str, object]:
        """The counts, failed test ids and JUnit path (for manifests and reports)."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": self.errors,
            "failures": self.failures,
            "junit": str(self.junit),
        }


def pytest_argv(vm: RunningVM, suite_dir: Path, junit_xml: Path, extra_args: Sequence[str]) -> list[str]:
    """The testinfra command: every check goes over the VM's multiplexed SSH connection."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite_dir),
        f"--hosts=ssh://{vm.host}",
        f"--ssh-config={vm.ssh_config}",
        f"--junitxml={junit_xml}",
        # Test ids relative to the suite, whatever the checkout or working directory.
        f"--rootdir={suite_dir}",
        "-p",
        "no:cacheprovider",
        *extra_args,
    ]


def run_image_tests(
    vm: RunningVM, suite_dir: Path, junit_xml: Path, *, timeout: float, extra_args: Sequence[str] = ()
) -> TestOutcome:
    """Run the testinfra suite in ``suite_dir`` against ``vm`` and count the results.

    Failing tests are a result, not an error: check ``outcome.ok``. A pytest usage/internal error, a
    timeout or a missing report raises CommandError. Output goes to ``junit_xml`` with suffix ``.log``.
    """
    if not suite_dir.is_dir():
        raise ConfigError(f"image test suite directory {suite_dir} does not exist")
    junit_xml.parent.mkdir(parents=True, exist_ok=True)
    junit_xml.unlink(missing_ok=True)
    log_file = junit_xml.with_suffix(".log")
    argv = pytest_argv(vm, suite_dir, junit_xml, extra_args)
    result = proc.run(
        argv,
        timeout=timeout,
        check=False,
        what="image tests (pytest)",
        output_file=log_file,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode not in (0, 1) or not junit_xml.is_file():
        raise CommandError(argv, result.returncode, result.tail, what=f"image tests (pytest, log {log_file})")
    outcome = parse_junit(junit_xml, log_file)
    try:
        packages = capture_packages(vm)
    except CommandError:
        if outcome.ok:  # a published image must come with its package list
            raise
        packages = []  # the image is not published anyway: keep the test result as the error
    return dataclasses.replace(outcome, packages=packages)


def parse_junit(junit_xml: Path, log_file: Path) -> TestOutcome:
    """Count passed/failed/skipped/errored test cases in a pytest JUnit XML report."""
    root = ElementTree.parse(junit_xml).getroot()  # noqa: S314 - our own pytest's report
    passed = failed = skipped = errors = 0
    failures: list[str] = []
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("error") is not None:
            errors += 1
            failures.append(test_id)
        elif case.find("failure") is not None:
            failed += 1
            failures.append(test_id)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return TestOutcome(passed, failed, skipped, errors, junit_xml, log_file, failures)
