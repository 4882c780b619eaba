"""Benchmark: `invoke doctor` wall time for one environment (gstg, all three variants).

1. Against the fakes (Compute, Resource Manager, IAM, Pub/Sub on one 127.0.0.1 port, seeded as a correct
   environment, as tests/integration/gce/test_doctor.py does): the real command, ``invoke doctor --env gstg``,
   in a subprocess (Python start-up, config load, client creation, every check), best and median of RUNS;
   then the checks alone in-process (``Doctor.run`` with the clients built), to separate start-up from work.
2. Against an endpoint that accepts connections and never answers (every API pointed at it): the real
   command again, once.

Run from the repository root: ``python benchmarks/bench_doctor.py`` (targets: < 3 s against the fakes, < 30 s
against a silent endpoint). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bakery.gce import doctor  # noqa: E402
from bakery.gce.client import ENDPOINT_ENV  # noqa: E402
from bakery.gce.cloud import ENDPOINT_ENVS  # noqa: E402
from tests.fakes.compute import FakeCompute  # noqa: E402
from tests.integration.gce import test_doctor as scenario  # noqa: E402
from tests.integration.gce.gce_env import seed_public_images  # noqa: E402

RUNS = 5
VARIABLES = (ENDPOINT_ENV, *ENDPOINT_ENVS.values())


def run_cli(endpoint: str, runtime: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({variable: endpoint for variable in VARIABLES})
    env.update(NO_PROXY="127.0.0.1", CHECKPOINT_DISABLE="1", GOOGLE_APPLICATION_CREDENTIALS="/nonexistent.json")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(runtime), "doctor", "--env", "gstg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return time.monotonic() - started, proc


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as scratch:
        runtime = Path(scratch) / "runtime.yaml"
        runtime.write_text(
            scenario.RUNTIME.replace("variants: [debian-12]", "variants: [ubuntu-2204, ubuntu-2404, debian-12]")
            + f"  build_dir: {scratch}/build\n"
        )
        fake = FakeCompute(project=scenario.PROJECT)
        seed_public_images(fake)
        scenario.seed_ready(fake)
        with fake.serve():
            times = []
            for _ in range(RUNS):
                seconds, proc = run_cli(fake.endpoint, runtime)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                times.append(seconds)
            checks = len(proc.stdout.splitlines()) - 1
            print(f"invoke doctor --env gstg (3 variants, {checks} checks) against the fakes, {RUNS} runs:")
            print(f"  best {min(times):.2f} s, median {statistics.median(times):.2f} s, worst {max(times):.2f} s")
            for variable in VARIABLES:
                os.environ[variable] = fake.endpoint
            specs = scenario.doctor_specs(Path(scratch), use_iap=False)  # as the CLI runs (RUNTIME)
            started = time.monotonic()
            built = doctor.doctor_for(specs, tools=doctor.Tools())
            build_seconds = time.monotonic() - started
            report = built.run()
            print(f"  in-process: clients built in {build_seconds:.2f} s, checks ran in {report.seconds:.2f} s")
            print(f"  API calls: {len(fake.calls)}; violations: {len(fake.violations)}")

        with scenario.never_answering() as silent:
            seconds, proc = run_cli(silent, runtime)
        failed = sum(line.startswith("FAIL") for line in proc.stdout.splitlines())
        print(
            f"invoke doctor --env gstg against a silent endpoint: {seconds:.1f} s, exit {proc.returncode}, "
            f"{failed} checks failed"
        )


if __name__ == "__main__":
    main()
