"""Benchmark the local end-to-end bake (not a test): phase times of `invoke bake`, boot-to-SSH, image
sizes, and the Packer phase under `invoke bake` against a raw `packer build` of the same rendered template.

    python benchmarks/bench_local_bake.py [--runs 3] [--cache /var/tmp/bakery-test-cache]

Uses a scratch build dir and registry under /var/tmp/bakery-bench; the base image must be cached (or is
built once first, and that build is timed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bakery.identity import Identity  # noqa: E402
from bakery.local.baseimage import ensure_base_image  # noqa: E402
from bakery.render import TEMPLATE_FILE, VARS_FILE  # noqa: E402

PHASE = re.compile(r"^<== (\w+) \(([\d.]+) s\)$", re.M)
SSH = re.compile(r"VM answered SSH after ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", default=os.environ.get("BAKERY_CACHE_DIR", "/var/tmp/bakery-test-cache"))
    args = parser.parse_args()
    scratch = Path("/var/tmp/bakery-bench")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cache = Path(args.cache)

    start = time.monotonic()
    base = ensure_base_image(cache, timeout=1800, log=lambda _m: None)
    size = base.disk.stat().st_size / 1e6
    print(f"base image: {base.disk} ({size:.1f} MB), ensure took {time.monotonic() - start:.1f} s")

    cfg = scratch / "bench.yaml"
    cfg.write_text(
        f"bakery:\n  build_dir: {scratch / 'build'}\n  environments:\n    local:\n      retention: {{keep: 10}}\n"
        f"      local:\n        cache_dir: {cache}\n        registry_dir: {scratch / 'registry'}\n"
    )
    totals, phases, ssh = [], {}, []
    for run in range(args.runs):
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "-f", str(cfg), "bake"], cwd=ROOT, capture_output=True, text=True
        )
        totals.append(time.monotonic() - t0)
        if proc.returncode != 0:
            sys.exit(f"run {run}: invoke bake failed:\n{proc.stdout[-2000:]}{proc.stderr}")
        for name, seconds in PHASE.findall(proc.stdout):
            phases.setdefault(name, []).append(float(seconds))
        ssh += [float(s) for s in SSH.findall(proc.stdout)]
        print(f"run {run + 1}: total {totals[-1]:.1f} s", flush=True)

    build = scratch / "build" / "local" / "debian-12"
    raw = []
    for run in range(args.runs):
        out = build / "output-raw"
        variables = {
            "image_name": f"raw-{run}",
            "input_fingerprint": "0" * 64,
            "base_image": str(base.disk),
            "base_image_checksum": "none",
            "accelerator": "tcg",
            "ssh_private_key_file": str(base.ssh_key),
            "output_directory": str(out),
            # provision/80-identity.sh refuses to bake without the image identity the pipeline passes.
            **Identity(f"raw-{run}", "debian-12", "0" * 64).packer_variables(),
        }
        argv = ["packer", "build", "-force", f"-var-file={VARS_FILE}"]
        for key, value in variables.items():
            argv += ["-var", f"{key}={value}"]
        t0 = time.monotonic()
        subprocess.run(
            [*argv, TEMPLATE_FILE],
            cwd=build,
            check=True,
            capture_output=True,
            env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        )
        raw.append(time.monotonic() - t0)
        shutil.rmtree(out, ignore_errors=True)
        print(f"raw packer build {run + 1}: {raw[-1]:.1f} s", flush=True)

    images = sorted((scratch / "registry" / "images").glob("*/disk.qcow2"))
    median = statistics.median
    report = {
        "runs": args.runs,
        "total_median_s": round(median(totals), 1),
        "phase_median_s": {k: round(median(v), 1) for k, v in phases.items()},
        "boot_to_ssh_median_s": round(median(ssh), 1),
        "raw_packer_build_median_s": round(median(raw), 1),
        "packer_overhead_ratio": round(median(phases["bake"]) / median(raw), 3),
        "baked_image_mb": round(images[-1].stat().st_size / 1e6, 1) if images else None,
        "base_image_mb": round(base.disk.stat().st_size / 1e6, 1),
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
