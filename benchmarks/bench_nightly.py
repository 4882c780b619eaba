"""Benchmark: a no-op nightly over every variant of gstg against the fake Compute API.

1. Start the fake Compute API on 127.0.0.1 as project gstg's project, with the variants' public source
   families (debian-cloud, ubuntu-os-cloud).
2. Run one nightly in-process that bakes every variant (the Packer build and the SSH test run replaced
   at their seams, as in tests/integration/gce/test_gce_nightly.py), so every family head carries its
   input fingerprint.
3. Time RUNS runs of the real command, ``invoke nightly --env gstg`` (a subprocess: Python start-up,
   config load, source image resolution, render, head lookup, report), pointed at the fake with
   BAKERY_COMPUTE_ENDPOINT; count the builder VMs it started (variants it tried to bake: it would run
   ``packer build``) and the instances it created on the fake.

Run it from a checkout: ``python benchmarks/bench_nightly.py`` (target: 0 VMs, < 20 s). It measures that
checkout's code with its test doubles (``tests.fakes``), whatever the working directory, PYTHONPATH, or the
checkout the virtualenv was installed from (see the sys.path line below).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, not the checkout: put the checkout (the parent
# of this file's folder) first, so ``bakery`` and the test doubles under ``tests/`` are this checkout's.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bakery import cli, nightly  # noqa: E402
from bakery.config import Settings  # noqa: E402
from bakery.gce.client import ComputeClients  # noqa: E402
from bakery.gce.target import GceTarget, SuiteRun  # noqa: E402
from bakery.imagetest import Package, RunningVM, TestOutcome  # noqa: E402
from tests.fakes.compute import FakeCompute  # noqa: E402
from tests.integration.gce.gce_env import PackerOnFake, RecordedRunner, seed_public_images  # noqa: E402

RUNS = 5


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as scratch:
        tmp = Path(scratch)
        runtime = tmp / "bench.yaml"
        # use_iap: false, as in tests/integration/gce: Debian's Packer 1.6.6 cannot bake through IAP, and the
        # bake refuses it before any API call; the no-op path measured here opens no tunnel either way.
        runtime.write_text(
            f"bakery:\n  build_dir: {tmp / 'build'}\n  environments:\n    gstg:\n      gce:\n        use_iap: false\n"
        )
        settings = cli.project_settings(runtime)
        gce = settings.config.environments["gstg"].gce
        assert gce is not None
        fake = FakeCompute(project=gce.project)
        fake.seed_image("debian-12-base", "debian-12")
        seed_public_images(fake)
        with fake.serve():
            seed_heads(fake, settings, gce.project, gce.zone, tmp)
            variants = len(settings.specs("gstg"))
            inserts = len(fake.calls_of("compute.instances.insert"))
            times, attempted = [], 0
            env = {**os.environ, "BAKERY_COMPUTE_ENDPOINT": fake.endpoint, "NO_GCE_CHECK": "True"}
            for run in range(RUNS):
                reports = tmp / "reports" / str(run)
                first_call = len(fake.calls)
                start = time.monotonic()
                proc = subprocess.run(
                    # the preflight (the doctor's checks, measured by bench_doctor.py) is skipped: only the
                    # Compute API is faked here
                    [sys.executable, "-m", "invoke", "-f", str(runtime), "nightly", "--env", "gstg",
                     "--report-dir", str(reports), "--skip-preflight"],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
                times.append(time.monotonic() - start)
                report = json.loads((reports / "nightly.json").read_text())
                attempted += sum(v["action"] != "skipped" for v in report["variants"])
                if proc.returncode != 0:
                    sys.exit(f"nightly run {run} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            created = len(fake.calls_of("compute.instances.insert")) - inserts
        print(
            f"no-op nightly over {variants} variants (gstg, fake Compute API), {RUNS} runs of `invoke nightly`: "
            f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
            f"builder VMs started {attempted}; instances created {created}; "
            f"Compute API calls per run: {calls_since(fake, first_call)}"
        )
        print(f"\nthe last run's {reports / 'nightly.md'}:\n")
        print((reports / "nightly.md").read_text())


def seed_heads(fake: FakeCompute, settings: Settings, project: str, zone: str, tmp: Path) -> None:
    """Bake every variant once (build and SSH test run replaced) so each family head has its fingerprint."""
    clients = ComputeClients.create(project, zone, endpoint=fake.endpoint)
    packages = [Package("osquery", "5.23.1-1.linux", "amd64")]

    def runner(vm: RunningVM, run: SuiteRun) -> TestOutcome:
        return dataclasses.replace(RecordedRunner()(vm, run), packages=packages)

    def target(spec: object) -> GceTarget:
        return GceTarget(spec, clients=clients, runner=runner)  # type: ignore[arg-type]

    nightly.run(
        settings, "gstg", None, lambda _line: None, report_dir=tmp / "seed", target_for=target, build=PackerOnFake(fake)
    )


def calls_since(fake: FakeCompute, first: int) -> str:
    """The Compute API methods called since call number ``first``, with counts."""
    counts: dict[str, int] = {}
    for call in fake.calls[first:]:
        method = call.method.removeprefix("compute.")
        counts[method] = counts.get(method, 0) + 1
    return ", ".join(f"{m} x{n}" for m, n in sorted(counts.items()))


if __name__ == "__main__":
    main()
