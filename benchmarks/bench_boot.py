"""Benchmark where a local VM's boot time goes (not a test): boot an image the way the local target's test
stage does (``boot_vm``: snapshot mode, TCG or KVM), time boot-to-SSH, then ask the guest itself:
``systemd-analyze`` (firmware/loader/kernel/initrd/userspace), ``systemd-analyze blame`` and
``critical-chain`` for ssh.service, and the kernel's own timestamps of the handover to userspace.

    python benchmarks/bench_boot.py [--image DISK.qcow2] [--user root|packer] [--runs 2] [--json OUT]

Defaults: the cached base image in $BAKERY_CACHE_DIR (default /var/tmp/bakery-test-cache), logged in as
its build user. For a baked (sealed) image pass ``--user root``: the base's key is then given to root for
that boot only, as a systemd credential, exactly as the local target's test stage does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, not the checkout: put the checkout first, so
# ``bakery`` is this checkout's whatever the working directory or PYTHONPATH (as in bench_nightly.py).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bakery.baserecipe import LOCAL  # noqa: E402
from bakery.local.baseimage import BaseImage, base_dir, load_base_image  # noqa: E402
from bakery.local.vm import boot_vm  # noqa: E402

# "Startup finished in 4.1s (kernel) + 9.8s (initrd) + 20.3s (userspace) = 34.3s"
STARTUP = re.compile(r"([\d.]+(?:min|s|ms))(?: ([\d.]+(?:s|ms)))? \((\w+)\)")
KERNEL_STAMP = re.compile(r"^\[\s*([\d.]+)\] (.*)$", re.M)


def seconds(text: str) -> float:
    """systemd's ``1min 2.345s`` / ``345ms`` / ``2.1s`` as seconds."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(min|ms|s|us)", text):
        total += float(value) * {"min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def startup_phases(line: str) -> dict[str, float]:
    """Phases of ``systemd-analyze time``'s first line, e.g. {'kernel': 4.1, 'initrd': 9.8, ...}."""
    head = line.split("=", 1)[0]
    return {phase: round(seconds(value + (rest or "")), 2) for value, rest, phase in STARTUP.findall(head)}


def cached_base(cache: Path) -> BaseImage:
    base = load_base_image(base_dir(cache), LOCAL.key)
    if base is None:
        sys.exit(f"no cached base image for the current recipe in {cache}: run `invoke bake` once first")
    return base


def one_boot(
    image: Path, base: BaseImage, user: str, *, accelerator: str, workdir: Path, raw: Path | None = None
) -> dict[str, object]:
    pubkey = base.ssh_key.with_name(base.ssh_key.name + ".pub")
    credentials = {"ssh.authorized_keys.root": pubkey.read_bytes()} if user == "root" else None
    started = time.monotonic()
    with boot_vm(
        image,
        accelerator=accelerator,
        ssh_key=base.ssh_key,
        user=user,
        credentials=credentials,
        workdir=workdir,
        boot_timeout=600,
        alias="bench-boot",
    ) as vm:
        to_ssh = time.monotonic() - started
        sudo = [] if user == "root" else ["sudo", "-n"]
        # systemd-analyze answers only once the boot job queue is empty: wait for it (bounded).
        vm.run([*sudo, "systemctl", "is-system-running", "--wait"], timeout=300, check=False)
        analyze = vm.run([*sudo, "systemd-analyze", "time"], timeout=60).output.strip()
        blame = vm.run([*sudo, "systemd-analyze", "blame", "--no-pager"], timeout=60).output
        chain = vm.run([*sudo, "systemd-analyze", "critical-chain", "--no-pager", "ssh.service"], timeout=60).output
        dmesg = vm.run([*sudo, "dmesg"], timeout=60).output
        if raw is not None:  # everything the guest said, for reading by hand
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "blame.txt").write_text(blame)
            (raw / "critical-chain.txt").write_text(chain)
            (raw / "dmesg.txt").write_text(dmesg)
            plot = vm.run([*sudo, "systemd-analyze", "plot"], timeout=60, check=False).output
            (raw / "plot.svg").write_text(plot)
            journal = vm.run([*sudo, "journalctl", "-b", "-o", "short-monotonic", "--no-pager"], timeout=60).output
            (raw / "journal.txt").write_text(journal)
        ssh_ready = vm.run(
            [*sudo, "systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value", "ssh.service"], timeout=60
        ).output.strip()
    handover = next((float(t) for t, msg in KERNEL_STAMP.findall(dmesg) if "Run /init as init process" in msg), None)
    switch_root = next((float(t) for t, msg in KERNEL_STAMP.findall(dmesg) if "systemd 252" in msg), None)
    return {
        "boot_to_ssh_s": round(to_ssh, 1),
        "systemd_analyze": analyze.splitlines()[0] if analyze else "",
        "phases_s": startup_phases(analyze.splitlines()[0]) if analyze else {},
        "kernel_to_initramfs_s": handover,
        "kernel_to_real_systemd_s": switch_root,
        "ssh_active_after_kernel_start_s": round(int(ssh_ready) / 1e6, 2) if ssh_ready.isdigit() else None,
        "blame_top": [line.strip() for line in blame.splitlines()[:15]],
        "critical_chain_ssh": [line.rstrip() for line in chain.splitlines()[2:]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="qcow2 to boot (default: the cached base image)")
    parser.add_argument("--user", default="packer", help="root for a baked (sealed) image")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--accelerator", default="tcg", choices=("tcg", "kvm"))
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("BAKERY_CACHE_DIR", "/var/tmp/bakery-test-cache"))
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--raw", type=Path, help="keep blame, critical chain, dmesg, journal, plot per run here")
    args = parser.parse_args()
    base = cached_base(args.cache)
    image = args.image or base.disk
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-boot-", dir="/var/tmp") as tmp:
        for run in range(args.runs):
            raw = args.raw / f"run{run + 1}" if args.raw else None
            result = one_boot(
                image, base, args.user, accelerator=args.accelerator, workdir=Path(tmp) / f"run{run}", raw=raw
            )
            runs.append(result)
            print(f"run {run + 1}: SSH after {result['boot_to_ssh_s']} s; {result['systemd_analyze']}", flush=True)
    report = {
        "image": str(image),
        "accelerator": args.accelerator,
        "load_average_at_end": os.getloadavg(),
        "boot_to_ssh_median_s": statistics.median(float(str(r["boot_to_ssh_s"])) for r in runs),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
