"""Benchmark: fleet coverage of 10,000 VMs across 3 projects booted from 50 distinct images, on the fake
Compute API.

1. Start the fake Compute API on 127.0.0.1: project ``fleet-one`` holds gstg's three families (8 images each,
   older ones partly deprecated) and 6 other images; ``fleet-two`` and ``fleet-three`` hold 8 images each;
   ``debian-cloud`` 4 public ones (50 images). 10,000 VMs (4,000 + 3,000 + 3,000) over 4 zones boot from
   them round-robin (cross-project, as instance templates do); every 5th was made by a MIG, every 20th is
   a GKE node (exempt).
2. Time the read and the classification in-process (``read_fleet`` + ``classify``, the real
   google-cloud-compute client over REST), then the real command, ``invoke coverage --env gstg --format
   json`` (a subprocess: Python start-up, config load, the same calls), pointed at the fake.
3. Count the API calls by method and check they are exactly pages + distinct images + families:
   2 × ceil(VMs of a project / 500) per project, one images.get per image, one getFromFamily per family.

Run from the repository root: ``python benchmarks/bench_coverage.py`` (target: < 5 s).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ (the fake) is not installed; bakery is, or comes from ROOT too

from bakery import cli  # noqa: E402
from bakery.gce import coverage  # noqa: E402
from bakery.gce.client import ComputeClients  # noqa: E402
from tests.fakes.compute import FakeCompute  # noqa: E402

PROJECTS = {"fleet-one": 4000, "fleet-two": 3000, "fleet-three": 3000}
HOME = "fleet-one"
ZONES = ("us-east1-b", "us-east1-c", "us-east1-d", "us-central1-a")
PAGE = coverage.PAGE_SIZE


def seed(fake: FakeCompute, families: tuple[str, ...]) -> list[str]:
    """The 50 images (links) and the 10,000 VMs."""
    now = datetime.datetime.now(datetime.UTC)
    images: list[str] = []
    for family in families:
        for n in range(8):  # r7 is the head; r0..r2 deprecated
            name = f"{family}-r{n}"
            state = "DEPRECATED" if n < 3 else ""
            fake.seed_image(name, family, created=now - datetime.timedelta(days=10 * (8 - n)), state=state)
            images.append(f"projects/{HOME}/global/images/{name}")
    for n in range(6):
        fake.seed_image(f"legacy-{n}", "legacy", created=now - datetime.timedelta(days=400 + n))
        images.append(f"projects/{HOME}/global/images/legacy-{n}")
    for project in PROJECTS:
        if project != HOME:
            other = fake.add_project(project)
            for n in range(8):
                other.seed_image(f"own-{n}", "own", created=now - datetime.timedelta(days=30 + n))
                images.append(f"projects/{project}/global/images/own-{n}")
    for n in range(4):
        fake.seed_public_image("debian-cloud", f"debian-12-v2026110{n}", "debian-12")
        images.append(f"projects/debian-cloud/global/images/debian-12-v2026110{n}")
    assert len(images) == 50
    index = 0
    for project, count in PROJECTS.items():
        target = fake if project == HOME else fake.projects[project]
        for n in range(count):
            zone = ZONES[n % len(ZONES)]
            labels = {"goog-gke-node": ""} if index % 20 == 0 else {"team": "web"}
            metadata = (
                {
                    "instance-template": f"projects/1234/global/instanceTemplates/t-{n % 40}",
                    "created-by": f"projects/1234/zones/{zone}/instanceGroupManagers/mig-{n % 40}",
                }
                if index % 5 == 0
                else None
            )
            target.seed_vm(zone, f"vm-{n:05d}", image=images[index % 50], labels=labels, metadata=metadata)
            index += 1
    return images


def main() -> None:
    settings = cli.project_settings()
    families = tuple(spec.family for spec in settings.specs("gstg"))
    fake = FakeCompute(project=HOME)
    images = seed(fake, families)
    with tempfile.TemporaryDirectory(prefix="bench-coverage-") as scratch, fake.serve():
        runtime = Path(scratch) / "bench.yaml"
        projects = ", ".join(PROJECTS)
        runtime.write_text(
            "bakery:\n  environments:\n    gstg:\n"
            f"      gce: {{project: {HOME}}}\n      coverage: {{projects: [{projects}]}}\n"
        )
        bench_settings = cli.project_settings(runtime)
        scope = coverage.scope_for(bench_settings, "gstg")
        clients = ComputeClients.create(HOME, ZONES[0], endpoint=fake.endpoint)

        start, cpu = time.monotonic(), time.process_time()
        report = coverage.classify(coverage.read_fleet(clients, scope), scope, datetime.datetime.now(datetime.UTC))
        in_process, in_process_cpu = time.monotonic() - start, time.process_time() - cpu  # CPU: client + fake
        calls = _counts(fake)
        fake.calls.clear()

        env = {**os.environ, "BAKERY_COMPUTE_ENDPOINT": fake.endpoint, "NO_PROXY": "127.0.0.1"}
        start, children = time.monotonic(), _children_cpu()
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "-f", str(runtime), "coverage", "--env", "gstg", "--format", "json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        command, command_cpu = time.monotonic() - start, _children_cpu() - children  # CPU: the command only
        if proc.returncode != 0:
            sys.exit(f"invoke coverage failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        document = json.loads(proc.stdout)
        cli_calls = _counts(fake)

    pages = sum(math.ceil(count / PAGE) for count in PROJECTS.values())
    expected = {
        "instances.aggregatedList": pages,
        "disks.aggregatedList": pages,
        "images.get": len(images),
        "images.getFromFamily": len(families),
    }
    summary = {k: document[k] for k in ("total", "current", "stale", "uncovered", "exempt", "unknown", "coverage_pct")}
    print(
        f"coverage of {sum(PROJECTS.values())} VMs in {len(PROJECTS)} projects from {len(images)} images "
        f"({len(families)} families), fake Compute API:\n"
        f"  in-process read + classify: {in_process:.2f} s wall, {in_process_cpu:.2f} s CPU (client and fake); "
        f"`invoke coverage --format json`: {command:.2f} s wall, {command_cpu:.2f} s CPU (the command alone; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
        f"  API calls: {_line(calls)} (total {sum(calls.values())})\n"
        f"  expected:  {_line(expected)} = {pages} pages x 2 + {len(images)} images + {len(families)} families\n"
        f"  result: {json.dumps(summary)}"
    )
    if calls != expected or cli_calls != expected:
        sys.exit(f"API calls are not pages + images + families: in-process {calls}, CLI {cli_calls}")
    if report.to_dict()["total"] != document["total"] or document["total"] != sum(PROJECTS.values()):
        sys.exit(f"the command counted {document['total']} VMs, expected {sum(PROJECTS.values())}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _counts(fake: FakeCompute) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in fake.calls:
        method = call.method.removeprefix("compute.")
        counts[method] = counts.get(method, 0) + 1
    return dict(sorted(counts.items()))


def _line(counts: dict[str, int]) -> str:
    return ", ".join(f"{m} x{n}" for m, n in sorted(counts.items()))


if __name__ == "__main__":
    main()
