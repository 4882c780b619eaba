"""Real QEMU VMs from the real base image: boot, testinfra over SSH, accelerator probe, and cleanup on
every exit path (success, SSH timeout, taken port, SIGINT and SIGTERM while booting or testing).

One VM at a time (the test machines have 2 cores). Opt-in: ``pytest --run-slow``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery import proc
from bakery.errors import CommandError, ConfigError, VMError
from bakery.imagetest import run_image_tests
from bakery.local import vm as vm_module
from bakery.local.accel import choose_accelerator, probe
from bakery.local.baseimage import BaseImage, ensure_base_image
from bakery.local.files import mounts_under
from bakery.local.vm import boot_vm
from tests.childsignals import sigint_default

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("local_vm_driver.py")
PROJECT_ROOT = Path(__file__).resolve().parents[3]
BOOT_TIMEOUT = 240
# What a finished VM run may leave in its workdir: logs and reports, no pidfile, no control socket.
ALLOWED_LEFTOVERS = {"serial.log", "qemu.log", "ssh_config", "junit.xml", "junit.log"}


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and proc.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def temp_entries() -> set[str]:
    """QEMU snapshot overlays and short ssh control dirs anywhere they could land."""
    names = set()
    for directory in (Path("/tmp"), Path("/var/tmp")):
        names |= {str(p) for p in directory.iterdir() if p.name.startswith(("vl.", "bk-"))}
    return names


def assert_stopped(pid: int, workdir: Path) -> None:
    deadline = time.monotonic() + 10
    while proc.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not proc.pid_alive(pid), f"QEMU pid {pid} still running"
    assert processes_mentioning(str(workdir)) == [], "a process (qemu, ssh master, pytest) outlived the run"
    assert {p.name for p in workdir.iterdir()} <= ALLOWED_LEFTOVERS


class Driver:
    """The driver script in a child process, its output lines in a queue."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.child = subprocess.Popen(
            [sys.executable, str(DRIVER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})},
            preexec_fn=sigint_default,  # noqa: PLW1509 - SIGINT as at a terminal, even in a background test run
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.child.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s; output: {self.seen}")

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.child.wait(timeout=timeout)
        finally:
            if self.child.poll() is None:
                self.child.kill()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    before = temp_entries()
    path = tmp_path / "vm"
    yield path
    assert temp_entries() - before == set(), "temp files left in /tmp or /var/tmp"


def test_base_image_is_cached_and_has_no_secrets_inside(base_image: BaseImage) -> None:
    started = time.monotonic()
    again = ensure_base_image(base_image.directory.parent, timeout=10, log=lambda _m: None)
    assert again == base_image
    assert time.monotonic() - started < 1
    assert base_image.ssh_key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in base_image.directory.iterdir()) == [
        "disk.qcow2",
        "id_ed25519",
        "id_ed25519.pub",
        "meta.json",
    ]
    assert list(base_image.directory.parent.glob(".base-build-*")) == []
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(base_image.disk)], capture_output=True, text=True, check=True
    )
    assert '"format": "qcow2"' in info.stdout


def test_boot_run_suite_and_stop(base_image: BaseImage, smoke_suite: Path, workdir: Path) -> None:
    with boot_vm(
        base_image.disk,
        accelerator="tcg",
        ssh_key=base_image.ssh_key,
        user=base_image.user,
        workdir=workdir,
        boot_timeout=BOOT_TIMEOUT,
    ) as vm:
        assert proc.pid_alive(vm.pid)
        assert int((workdir / "qemu.pid").read_text()) == vm.pid
        # A fresh identity on every boot: machine-id generated, host keys present, our GRUB script gone.
        checks = vm.run(
            [
                "sh",
                "-c",
                "cat /etc/machine-id; ls /etc/ssh/ssh_host_ed25519_key; "
                "test ! -e /usr/local/sbin/bakery-install-grub && echo clean",
            ],
            timeout=60,
        ).output.split()
        assert re.fullmatch(r"[0-9a-f]{32}", checks[0])
        assert checks[1:] == ["/etc/ssh/ssh_host_ed25519_key", "clean"]
        listening = vm.run(["ss", "-Htln", "sport = :22"], timeout=30).output
        assert "0.0.0.0:22" in listening or "*:22" in listening

        started = time.monotonic()
        outcome = run_image_tests(vm, smoke_suite, workdir / "junit.xml", timeout=300)
        elapsed = time.monotonic() - started
        pid = vm.pid
    assert (outcome.passed, outcome.failed, outcome.skipped, outcome.errors) == (4, 1, 0, 0)
    assert outcome.failures == ["test_smoke::test_deliberately_failing[ssh://bakery-vm]"]
    assert not outcome.ok
    assert elapsed < 60, f"5 checks over the shared connection took {elapsed:.1f} s"
    assert_stopped(pid, workdir)


def test_qemu_listens_on_loopback_only(base_image: BaseImage, workdir: Path) -> None:
    with boot_vm(
        base_image.disk,
        accelerator="tcg",
        ssh_key=base_image.ssh_key,
        user=base_image.user,
        workdir=workdir,
        boot_timeout=BOOT_TIMEOUT,
    ) as vm:
        sockets = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
        ours = [line for line in sockets.splitlines() if f"pid={vm.pid}," in line]
        assert ours, sockets
        assert all(f"127.0.0.1:{vm.port}" in line for line in ours), ours
        pid = vm.pid
    assert_stopped(pid, workdir)


def test_accelerator_probe_is_real_and_cached(base_image: BaseImage) -> None:
    for cached in base_image.directory.parent.glob("accel-*.json"):
        cached.unlink()
    started = time.monotonic()
    first = probe(base_image, timeout=30)
    assert time.monotonic() - started < 45
    assert first.accelerator in ("kvm", "tcg")
    assert not first.cached
    again = probe(base_image, timeout=30)
    assert (again.accelerator, again.cached) == (first.accelerator, True)
    assert choose_accelerator("auto", base_image) == first.accelerator
    assert choose_accelerator("tcg", base_image) == "tcg"
    with pytest.raises(ConfigError, match="'hvf' is not one of auto, kvm, tcg"):
        choose_accelerator("hvf", base_image)
    assert list(base_image.directory.parent.glob(".accel-probe-*")) == []
    assert processes_mentioning(str(base_image.disk)) == []


def test_vm_that_never_answers_ssh(tmp_path: Path, workdir: Path) -> None:
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    key = tmp_path / "id"
    key.write_text("")
    messages: list[str] = []
    started = time.monotonic()
    with (
        pytest.raises(VMError, match=r"VM did not answer SSH within 15 s; serial log .*serial\.log") as info,
        boot_vm(blank, accelerator="tcg", ssh_key=key, user="x", workdir=workdir, boot_timeout=15, log=messages.append),
    ):
        pytest.fail("a blank disk cannot answer SSH")
    assert time.monotonic() - started < 40
    assert str(workdir / "serial.log") in str(info.value)
    pid = int(re.search(r"VM pid (\d+)", messages[0]).group(1))  # type: ignore[union-attr]
    assert_stopped(pid, workdir)


def test_taken_port_is_a_clear_error(tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(vm_module, "free_port", lambda: taken.getsockname()[1])
        with (
            pytest.raises(VMError, match=r"could not forward SSH from 127\.0\.0\.1 after 3 ports"),
            boot_vm(blank, accelerator="tcg", ssh_key=blank, user="x", workdir=workdir, boot_timeout=30),
        ):
            pytest.fail("unreachable")
    assert processes_mentioning(str(workdir)) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_waiting_for_boot(base_image: BaseImage, workdir: Path, signum: int, code: int) -> None:
    driver = Driver(
        "vm", str(base_image.disk), str(base_image.ssh_key), base_image.user, str(workdir), "-", str(BOOT_TIMEOUT)
    )
    pid = int(driver.wait_for(r"VM pid (\d+) booting", 30).group(1))
    time.sleep(5)
    assert proc.pid_alive(pid)
    driver.child.send_signal(signum)
    assert driver.finish(timeout=60) == code
    assert_stopped(pid, workdir)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_tests_run(
    base_image: BaseImage, smoke_suite: Path, workdir: Path, signum: int, code: int
) -> None:
    driver = Driver(
        "vm",
        str(base_image.disk),
        str(base_image.ssh_key),
        base_image.user,
        str(workdir),
        str(smoke_suite),
        str(BOOT_TIMEOUT),
        env={"SMOKE_SLOW": "1"},
    )
    pid = int(driver.wait_for(r"VM pid (\d+) booting", 30).group(1))
    driver.wait_for("TESTS START", BOOT_TIMEOUT)
    deadline = time.monotonic() + 60
    while not processes_mentioning(str(smoke_suite)) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # pytest is inside the remote `sleep 120`
    assert processes_mentioning(str(smoke_suite)), "pytest should be running"
    driver.child.send_signal(signum)
    assert driver.finish(timeout=60) == code
    assert processes_mentioning(str(smoke_suite)) == []
    assert_stopped(pid, workdir)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143)])
def test_signal_while_building_base_leaves_nothing(tmp_path: Path, signum: int, code: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("building a base image needs root")
    cache = tmp_path / "cache"
    driver = Driver("base", str(cache))
    driver.wait_for("base image: mmdebstrap", 30)
    time.sleep(12)  # mmdebstrap is downloading or installing packages in its chroot
    driver.child.send_signal(signum)
    assert driver.finish(timeout=120) == code
    assert sorted(p.name for p in cache.iterdir()) == [".base.lock"]
    assert mounts_under(cache) == []
    assert processes_mentioning(str(cache)) == []


def test_failed_base_build_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("building a base image needs root")
    cache = tmp_path / "cache"
    with pytest.raises(CommandError, match="mmdebstrap"):
        ensure_base_image(cache, timeout=300, log=lambda _m: None, mirror="http://127.0.0.1:9/debian")
    assert sorted(p.name for p in cache.iterdir()) == [".base.lock"]
    assert mounts_under(cache) == []
