"""The local target's Debian 12 base image, built offline from Debian packages and cached by content.

Recipe: ``mmdebstrap --variant=minbase`` with the packages below and a customize hook (build user with
the machine's SSH key and passwordless sudo, DHCP via systemd-networkd, SSH host keys created at first
boot, empty machine-id) -> ``mkfs.ext4 -d`` into an MBR-partitioned raw disk -> one direct-kernel boot
(no loop devices) whose PID 1 installs GRUB and powers off -> ``qemu-img convert -c`` -> a verification
boot under QEMU that must answer ``sudo -n true`` over SSH.

Recipes (``bakery.baserecipe.Recipe``): ``LOCAL`` (the default) and ``GCE_REHEARSAL``. Cache layout:
``<cache_dir>/base-<key12>/`` for LOCAL, ``<cache_dir>/base-<recipe name>-<key12>/`` for the others (see
:func:`base_dir`), each ``{disk.qcow2,id_ed25519,id_ed25519.pub,meta.json}``. The build happens in
``<cache_dir>/.base-build-*`` and is renamed into place; any failure or interrupt removes it.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bakery import proc
from bakery.baserecipe import (
    BUILD_USER,
    DISK_MIB,
    GRUB_MARKER,
    LOCAL,
    RECIPE_VERSION,
    ROOT_LABEL,
    SUITE,
    Recipe,
)
from bakery.errors import VMError
from bakery.local.files import file_lock, remove_tree, write_json_atomic
from bakery.local.vm import QEMU, boot_vm, qemu_accel_args
from bakery.ssh import generate_key

MIRROR = "http://deb.debian.org/debian"

TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
    QEMU: "qemu-system-x86",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}


@dataclass(frozen=True)
class BaseImage:
    """A built base image: boot ``disk`` (in snapshot mode) and log in as ``user`` with ``ssh_key``."""

    directory: Path
    disk: Path
    ssh_key: Path
    user: str
    suite: str
    kernel: str
    key: str


def base_dir(cache_dir: Path, recipe: Recipe = LOCAL) -> Path:
    """Where ``recipe``'s base image is cached: ``base-<key12>`` for LOCAL, ``base-<name>-<key12>`` else."""
    key = recipe.key
    return cache_dir / (f"base-{key[:12]}" if recipe == LOCAL else f"base-{recipe.name}-{key[:12]}")


def ensure_base_image(
    cache_dir: Path,
    *,
    timeout: float,
    log: Callable[[str], None],
    mirror: str = MIRROR,
    recipe: Recipe = LOCAL,
) -> BaseImage:
    """Return the cached base image of ``recipe``, building it first if needed (root only)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = recipe.key
    final = base_dir(cache_dir, recipe)
    cached = load_base_image(final, key)
    if cached:
        log(f"base image: cached {cached.disk}")
        return cached
    proc.require_tools(TOOLS)
    if os.geteuid() != 0:
        raise VMError(
            "building the local base image needs root (mmdebstrap and mkfs.ext4 -d keep file ownership "
            f"only as root); run once as root to fill {cache_dir}"
        )
    deadline = proc.Deadline(timeout)
    with file_lock(cache_dir / ".base.lock", timeout=deadline.left(), what=f"base image cache {cache_dir}"):
        cached = load_base_image(final, key)  # built by another process while we waited
        if cached:
            return cached
        for stale in [*cache_dir.glob(".base-build-*"), final]:  # a killed build's leftovers
            remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=".base-build-", dir=cache_dir))
        try:
            _build(tmp, recipe, deadline, log, mirror)
            tmp.rename(final)
        except BaseException:
            with proc.signals_deferred():
                remove_tree(tmp)
            raise
    image = load_base_image(final, key)
    if image is None:  # pragma: no cover - we just wrote it
        raise VMError(f"base image in {final} is incomplete")
    return image


def load_base_image(directory: Path, key: str) -> BaseImage | None:
    """The base image in ``directory`` if it is complete and was built from recipe ``key``."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    disk, ssh_key = directory / "disk.qcow2", directory / "id_ed25519"
    if meta.get("key") != key or not disk.is_file() or not ssh_key.is_file():
        return None
    return BaseImage(directory, disk, ssh_key, meta["user"], meta["suite"], meta["kernel"], key)


def mmdebstrap_argv(
    rootfs: Path, customize: Path, pubkey: Path, *, mirror: str, packages: tuple[str, ...] = LOCAL.packages
) -> list[str]:
    hook = f'sh {shlex.quote(str(customize))} "$1" {shlex.quote(str(pubkey))} {shlex.quote(BUILD_USER)}'
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        f"--customize-hook={hook}",
        SUITE,
        str(rootfs),
        mirror,
    ]


def grub_install_argv(disk: Path, kernel: Path, initrd: Path, serial_log: Path) -> list[str]:
    """Direct kernel boot whose PID 1 is the GRUB install script; panic=-1 + -no-reboot end QEMU."""
    append = f"root=LABEL={ROOT_LABEL} rw console=ttyS0,115200n8 panic=-1 init=/usr/local/sbin/bakery-install-grub"
    return [
        QEMU,
        *qemu_accel_args("tcg"),
        "-smp",
        "2",
        "-m",
        "1024",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-serial",
        f"file:{serial_log}",
        "-drive",
        f"file={disk},format=raw,if=virtio",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        append,
    ]


def _build(tmp: Path, recipe: Recipe, deadline: proc.Deadline, log: Callable[[str], None], mirror: str) -> None:
    started = time.monotonic()
    ssh_key = tmp / "id_ed25519"
    generate_key(ssh_key, "bakery-build")
    customize = tmp / "customize.sh"
    customize.write_text(recipe.customize)
    rootfs = tmp / "rootfs"
    log(f"base image: mmdebstrap {SUITE} with {len(recipe.packages)} packages from {mirror} (recipe {recipe.name})")
    proc.run(
        mmdebstrap_argv(rootfs, customize, ssh_key.with_suffix(".pub"), mirror=mirror, packages=recipe.packages),
        timeout=deadline.left(),
        what="mmdebstrap (base image)",
        env={"TMPDIR": str(tmp)},
        output_file=tmp / "mmdebstrap.log",
    )
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise VMError(f"expected one kernel in the base image, found {[k.name for k in kernels]}")
    kernel_release = kernels[0].name.removeprefix("vmlinuz-")
    kernel, initrd = tmp / "vmlinuz", tmp / "initrd.img"
    shutil.copyfile(kernels[0], kernel)
    shutil.copyfile(rootfs / "boot" / f"initrd.img-{kernel_release}", initrd)

    log(f"base image: {DISK_MIB} MiB disk (MBR, ext4 label {ROOT_LABEL})")
    raw = tmp / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(DISK_MIB * 1024 * 1024)
    proc.run(["sfdisk", "--quiet", str(raw)], input_text="start=2048, type=83, bootable\n", timeout=60)
    proc.run(
        [
            "mkfs.ext4",
            "-q",
            "-L",
            ROOT_LABEL,
            "-E",
            "offset=1048576",
            "-d",
            str(rootfs),
            str(raw),
            f"{DISK_MIB - 1}M",
        ],
        timeout=deadline.left(),
        what="mkfs.ext4 (base image)",
    )
    remove_tree(rootfs)

    log("base image: installing GRUB from inside the VM (direct kernel boot, TCG)")
    serial = tmp / "grub-install.serial.log"
    proc.run(grub_install_argv(raw, kernel, initrd, serial), timeout=deadline.left(), what="GRUB install boot")
    if GRUB_MARKER not in serial.read_text(errors="replace"):
        raise VMError(f"installing GRUB in the base image failed; serial log {serial}:\n{proc.file_tail(serial)}")
    for done in (kernel, initrd, customize, serial, tmp / "mmdebstrap.log"):
        done.unlink()

    disk = tmp / "disk.qcow2"
    proc.run(
        ["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(disk)],
        timeout=deadline.left(),
        what="qemu-img convert (base image)",
    )
    raw.unlink()

    log("base image: verification boot (TCG)")
    boot_started = time.monotonic()
    with boot_vm(
        disk,
        accelerator="tcg",
        ssh_key=ssh_key,
        user=BUILD_USER,
        workdir=tmp / "verify",
        boot_timeout=min(deadline.left(), 300.0),
        alias="bakery-base",
    ) as vm:
        vm.run(["sudo", "-n", "true"], timeout=min(deadline.left(), 60.0))
    boot_seconds = time.monotonic() - boot_started
    remove_tree(tmp / "verify")

    meta = {
        "key": recipe.key,
        "recipe": RECIPE_VERSION,
        "recipe_name": recipe.name,
        "suite": SUITE,
        "mirror": mirror,
        "packages": list(recipe.packages),
        "user": BUILD_USER,
        "kernel": kernel_release,
        "disk": disk.name,
        "disk_bytes": disk.stat().st_size,
        "virtual_size_mib": DISK_MIB,
        "public_key": ssh_key.with_suffix(".pub").read_text().strip(),
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "verify_boot_seconds": round(boot_seconds, 1),
    }
    write_json_atomic(tmp / "meta.json", meta)
    log(f"base image: built in {meta['build_seconds']} s, {disk.stat().st_size / 1e6:.0f} MB")
