"""Choose QEMU's accelerator by a real boot test, since an existing /dev/kvm is no proof that KVM works.

(On PVM hosts /dev/kvm exists but ``-cpu host`` aborts or the guest hangs early.) ``auto`` boots the base
image under KVM for a few seconds and uses KVM only if the guest kernel reached userspace; the answer is
cached per (guest kernel, host kernel, /dev/kvm) in the cache directory.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bakery import proc
from bakery.errors import ConfigError
from bakery.local.baseimage import BaseImage
from bakery.local.files import remove_tree, write_json_atomic
from bakery.local.vm import qemu_argv

CHOICES = ("auto", "kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
# Printed only once the guest kernel hands over to userspace (initramfs or systemd).
BOOT_MARKER = re.compile(r"Run /init as init process|Welcome to ")


@dataclass(frozen=True)
class ProbeResult:
    accelerator: str
    reason: str
    seconds: float
    cached: bool = False


def kvm_usable() -> bool:
    """/dev/kvm exists and we may open it read-write."""
    return KVM_DEVICE.exists() and os.access(KVM_DEVICE, os.R_OK | os.W_OK)


def choose_accelerator(
    configured: str, base_image: BaseImage, *, timeout: float = 30.0, log: Callable[[str], None] | None = None
) -> str:
    """``tcg`` or ``kvm`` for ``configured`` in auto|kvm|tcg (auto: probe, see ``probe``)."""
    if configured == "tcg":
        return "tcg"
    if configured == "kvm":
        if not kvm_usable():
            raise ConfigError(
                f"accelerator 'kvm' is configured but {KVM_DEVICE} is missing or not accessible: "
                "set the accelerator to 'auto' or 'tcg'"
            )
        return "kvm"
    if configured != "auto":
        raise ConfigError(f"accelerator {configured!r} is not one of {', '.join(CHOICES)}")
    result = probe(base_image, timeout=timeout)
    if log:
        source = "cached probe" if result.cached else f"probe took {result.seconds:.1f} s"
        log(f"accelerator: {result.accelerator} ({result.reason}; {source})")
    return result.accelerator


def probe_cache_key(base_image: BaseImage) -> str:
    facts = {
        "guest_kernel": base_image.kernel,
        "host_kernel": platform.release(),
        "kvm": KVM_DEVICE.exists(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]


def probe(base_image: BaseImage, *, timeout: float) -> ProbeResult:
    """Cached KVM boot test (no /dev/kvm access means ``tcg`` without probing)."""
    if not kvm_usable():
        return ProbeResult("tcg", f"{KVM_DEVICE} missing or not accessible", 0.0)
    cache = base_image.directory.parent / f"accel-{probe_cache_key(base_image)}.json"
    try:
        data = json.loads(cache.read_text())
        return ProbeResult(data["accelerator"], data["reason"], data["seconds"], cached=True)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    result = boot_test(base_image, timeout=timeout)
    write_json_atomic(
        cache,
        {
            "accelerator": result.accelerator,
            "reason": result.reason,
            "seconds": round(result.seconds, 1),
            "guest_kernel": base_image.kernel,
            "host_kernel": platform.release(),
            "probed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    return result


def boot_test(base_image: BaseImage, *, timeout: float) -> ProbeResult:
    """Boot the base image under KVM (no network) and watch its serial console for userspace."""
    workdir = Path(tempfile.mkdtemp(prefix=".accel-probe-", dir=base_image.directory.parent))
    serial, output = workdir / "serial.log", workdir / "qemu.log"
    argv = qemu_argv(
        base_image.disk,
        accelerator="kvm",
        memory_mb=1024,
        cpus=2,
        serial_log=serial,
        pidfile=workdir / "qemu.pid",
        ssh_port=None,
    )
    started = time.monotonic()
    try:
        qemu = proc.spawn(argv, output=output, env={"TMPDIR": str(workdir)}, die_with_parent=True)
        try:
            while True:
                elapsed = time.monotonic() - started
                if BOOT_MARKER.search(serial.read_text(errors="replace") if serial.exists() else ""):
                    return ProbeResult("kvm", "a KVM guest booted to userspace", elapsed)
                if qemu.poll() is not None:
                    said = proc.file_tail(output, 1) or "no output"
                    return ProbeResult("tcg", f"QEMU with KVM exited {qemu.returncode}: {said}", elapsed)
                if elapsed >= timeout:
                    return ProbeResult("tcg", f"a KVM guest did not reach userspace in {timeout:.0f} s", elapsed)
                time.sleep(0.5)
        finally:
            proc.stop_process(qemu, grace=5)
    finally:
        with proc.signals_deferred():
            remove_tree(workdir)
