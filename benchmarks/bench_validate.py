"""Benchmark `invoke validate` (not a test) against the same Packer checks run by hand one after another.

    python benchmarks/bench_validate.py [--rounds 5] [--json OUT]

The hand-run sequence is, for every rendered template (all environments × variants), exactly the
commands bakery runs: ``packer validate -var … -var-file=variables.pkrvars.hcl image.pkr.hcl`` then
``packer fmt -check -diff image.pkr.hcl`` in the template's directory (plus ``packer init`` first on
Packer >= 1.7). Rounds interleave the two (A, B, A, B …) so both see the same machine load; the
report gives medians, minima, the CPU count and the load average. Uses a scratch build dir under
/var/tmp/bakery-bench-validate (the checkout's build/ is not touched).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, not the checkout: put the checkout first, so
# ``bakery`` is this checkout's whatever the working directory or PYTHONPATH (as in bench_nightly.py).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bakery import cli, render  # noqa: E402
from bakery.config import BuildSpec  # noqa: E402
from bakery.packer import detect_version, packer_path  # noqa: E402

SCRATCH = Path("/var/tmp/bakery-bench-validate")
TIMEOUT = 300.0


def scratch_specs() -> list[BuildSpec]:
    """Every environment × variant of the project, rendering under the scratch build dir."""
    specs = cli.project_settings().all_specs()
    build = str(SCRATCH / "build")
    return [replace(spec, config=spec.config.model_copy(update={"build_dir": build})) for spec in specs]


def hand_argvs(spec: BuildSpec, key: Path, packer: str) -> list[tuple[Path, list[str]]]:
    """(directory, argv) of the checks bakery runs for one rendered template, in bakery's order."""
    directory = spec.build_dir
    variables = render.runtime_vars(spec)
    if spec.env.target == "local":
        variables["ssh_private_key_file"] = str(key)
    validate = [packer, "validate"]
    for name, value in variables.items():
        validate += ["-var", f"{name}={value}"]
    validate += [f"-var-file={render.VARS_FILE}", render.TEMPLATE_FILE]
    runs = [(directory, validate), (directory, [packer, "fmt", "-check", "-diff", render.TEMPLATE_FILE])]
    if "required_plugins" in (directory / render.TEMPLATE_FILE).read_text():  # Packer >= 1.7 only
        runs.insert(0, (directory, [packer, "init", render.TEMPLATE_FILE]))
    return runs


def time_invoke(cfg: Path) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(cfg), "validate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"invoke validate failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return elapsed


def time_hand(runs: list[tuple[Path, list[str]]]) -> float:
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
    started = time.monotonic()
    for directory, argv in runs:
        result = subprocess.run(argv, cwd=directory, capture_output=True, text=True, timeout=TIMEOUT, env=env)
        if result.returncode != 0:
            sys.exit(f"{' '.join(argv[:2])} in {directory} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    cfg = SCRATCH / "bench.yaml"
    cfg.write_text(f"bakery:\n  build_dir: {SCRATCH / 'build'}\n")
    time_invoke(cfg)  # renders every template into the scratch build dir (and warms the page cache)
    specs = scratch_specs()
    packer = packer_path()
    detect_version()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        key = Path(tmp) / "validate_ed25519"  # only parsed by Packer's qemu Prepare step, never used
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
        runs = [run for spec in specs for run in hand_argvs(spec, key, packer)]
        time_hand(runs)  # warm-up
        invoke_s, hand_s = [], []
        for number in range(args.rounds):
            invoke_s.append(time_invoke(cfg))
            hand_s.append(time_hand(runs))
            print(f"round {number + 1}: invoke validate {invoke_s[-1]:.2f} s, by hand {hand_s[-1]:.2f} s", flush=True)
    report = {
        "templates": len(specs),
        "packer_commands_by_hand": len(runs),
        "rounds": args.rounds,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "invoke_validate_median_s": round(statistics.median(invoke_s), 2),
        "invoke_validate_min_s": round(min(invoke_s), 2),
        "by_hand_median_s": round(statistics.median(hand_s), 2),
        "by_hand_min_s": round(min(hand_s), 2),
        "ratio_median": round(statistics.median(invoke_s) / statistics.median(hand_s), 3),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
