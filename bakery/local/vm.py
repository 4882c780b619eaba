"""Boot a qcow2 image under QEMU (snapshot mode) and reach it over SSH (the image tests: bakery/imagetest.py).

``boot_vm`` always stops QEMU (by PID: SIGTERM, grace, SIGKILL) and the SSH control master when the
block ends: on success, error, timeout, Ctrl-C and SIGTERM (inside ``proc.sigterm_raises``).
"""

from __future__ import annotations

import base64
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bakery import proc, ssh
from bakery.errors import CommandError, ConfigError, VMError
from bakery.imagetest import RunningVM

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("kvm", "tcg")
SERIAL_TAIL_LINES = 15
_PORT_ATTEMPTS = 3
_PORT_TAKEN_MARKER = "host forwarding rule"
# Between banner probes while a VM boots: a probe is one loopback connect (QEMU's forwarder answers at
# once and closes when the guest has no listener), so polling often costs nothing and answers sooner.
SSH_POLL_SECONDS = 0.25


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
    listen: str = "127.0.0.1",
    user_net: Sequence[str] = (),
    mac: str = "",
    system: Sequence[str] = (),
) -> list[str]:
    """The QEMU command line: snapshot mode (the image is never written), no display, serial to a file,
    user networking with SSH forwarded from ``listen`` (a loopback address) only (or no network if
    ``ssh_port`` is None).

    ``credentials`` are systemd system credentials passed as SMBIOS type 11 strings (systemd >= 252
    imports them at boot; e.g. ``ssh.authorized_keys.root`` lets the test harness log in to a sealed
    image without anything baked into it). ``user_net`` adds options to the user network (e.g. ``net=``,
    ``guestfwd=``), ``mac`` sets the NIC's address, ``system`` adds ``-smbios`` values (e.g. type 1)."""
    if not ipaddress.ip_address(listen).is_loopback:
        raise ConfigError(f"QEMU may forward SSH from a loopback address only, not {listen!r}")
    smbios: list[str] = [arg for value in system for arg in ("-smbios", value)]
    for name, value in sorted((credentials or {}).items()):
        encoded = base64.b64encode(value).decode()
        smbios += ["-smbios", f"type=11,value=io.systemd.credential.binary:{name}={encoded}"]
    if ssh_port is None:
        net = ["-nic", "none"]
    else:
        net = [
            "-netdev",
            ",".join(["user", "id=net0", *user_net, f"hostfwd=tcp:{listen}:{ssh_port}-:22"]),
            "-device",
            "virtio-net-pci,netdev=net0" + (f",mac={mac}" if mac else ""),
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
            wait_listening(qemu, port)
        except BaseException:
            proc.stop_process(qemu, grace=5)
            raise
        if qemu.poll() is None:
            return qemu, port
        message = proc.file_tail(qemu_log, 5)
        if _PORT_TAKEN_MARKER not in message:
            raise VMError(f"QEMU exited with status {qemu.returncode} at start: {message or '(no output)'}")
    raise VMError(f"QEMU could not forward SSH from 127.0.0.1 after {_PORT_ATTEMPTS} ports: ports are taken")


def wait_listening(qemu: subprocess.Popen[bytes], port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Return once QEMU's port forward on ``host`` accepts connections or QEMU has exited.

    (If another program holds the port, the connect succeeds too, but QEMU then exits at once: the
    short pause lets the caller see that.)
    """
    deadline = time.monotonic() + timeout
    while qemu.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
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
        time.sleep(SSH_POLL_SECONDS)


# --- image tests -----------------------------------------------------------------------------------
