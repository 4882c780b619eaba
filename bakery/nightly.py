"""The nightly run: every variant of an environment, baked only when its inputs changed.

Per variant: resolve the source image (GCE: the public family's current image), render, and compare the
input fingerprint with the ``input-fingerprint`` label of the family's head. Equal: skip, no builder VM.
Different (or no head): the full bake (render → validate → bake → test → publish → retention). A failing
variant is recorded and the next one runs; the run fails (exit 1) if any variant failed. The report
(JSON, Markdown, merged JUnit, the manifests) is written even then, and on Ctrl-C.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bakery import __version__, notify, pipeline, provenance, render, runreport, targets
from bakery.config import BuildSpec, Settings, check_output_location
from bakery.encode import label_value
from bakery.errors import BakeryError, Interrupted, NightlyFailed
from bakery.gce import coverage as fleet
from bakery.gce import doctor as gce_doctor
from bakery.gce.client import ComputeClients
from bakery.images import ImageRecord, ImageStore
from bakery.packer import detect_version
from bakery.pipeline import BakeReport, Builder
from bakery.runreport import NightlyRun, VariantResult
from bakery.target import Say, Target, git_sha

TargetFactory = Callable[[BuildSpec], Target]
Preflight = Callable[[Sequence[BuildSpec], Say], object]


def default_report_dir(settings: Settings, env_name: str, started: datetime.datetime) -> Path:
    """``build/reports/nightly/ENV/YYYYMMDD-HHMMSS``."""
    return settings.build_root / "reports" / "nightly" / env_name / f"{started:%Y%m%d-%H%M%S}"


def run(
    settings: Settings,
    env: str | None,
    variant: str | None,
    say: Say,
    *,
    report_dir: Path | None = None,
    target_for: TargetFactory = targets.target_for,
    build: Builder = pipeline.packer_build,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    dry_run: bool = False,
    coverage_clients: ComputeClients | None = None,
    preflight: bool | Preflight = True,
) -> NightlyRun:
    """Run the nightly over ``env``'s variants (or one); write the report; raise NightlyFailed if any
    variant failed (after the report and the webhook). ``dry_run``: decide and report, bake nothing.
    With ``coverage.enabled``, the report gains the fleet's coverage (``coverage_clients``: default, the
    environment's own). A GCE nightly runs the doctor's checks first (``preflight``: False skips them, a
    callable replaces them); if one fails, no variant runs: the report and the webhook say so, then
    PreflightFailed (exit 2, 3 for a missing tool) is raised."""
    specs = settings.specs(env, variant)
    nightly = NightlyRun(specs[0].env_name, now(), [VariantResult(spec) for spec in specs])
    nightly.git_sha = git_sha()
    directory = report_dir or default_report_dir(settings, nightly.env_name, nightly.started)
    # Before any work (the build, registry and cache directories were checked when the config loaded): a
    # report directory that cannot be written would otherwise fail only after the whole run.
    check_output_location(directory, "--report-dir" if report_dir else "the report directory")
    packer_version = detect_version()
    stopped: gce_doctor.PreflightFailed | None = None
    try:
        if preflight and not dry_run and specs[0].env.target == "gce":
            try:
                (gce_doctor.preflight if preflight is True else preflight)(specs, say)
            except gce_doctor.PreflightFailed as exc:
                stopped = exc
                checks = ", ".join(c.name for c in exc.report.failed)
                for result in nightly.results:
                    result.reason = f"not run: preflight failed ({checks}); see `invoke doctor --env {exc.report.env}`"
        for result in nightly.results if stopped is None else ():
            say(f"=== {result.spec.env_name}/{result.spec.variant_name} ({result.spec.family})")
            report = BakeReport(result.spec, git_sha=nightly.git_sha, packer_version=packer_version)
            run_variant(result, report, target_for, build, say, now=now(), dry_run=dry_run)
            say(f"=== {result.spec.variant_name}: {result.action} ({result.seconds:.1f} s): {result.reason}")
        if stopped is None:
            nightly.coverage = coverage_section(settings, nightly.env_name, say, coverage_clients)
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, Interrupted | KeyboardInterrupt) else f"stopped by {exc!r}"
        for result in nightly.results:
            if result.action == "not run":
                result.reason = result.reason or f"not run: the nightly was {why}"
        raise
    finally:
        nightly.finished = now()
        written = write_reports(nightly, directory)
        say(f"nightly report: {written.markdown} (JSON {written.json.name}, JUnit {written.junit.name})")
    say(runreport.summary_line(nightly))
    if nightly.failed:
        url = settings.config.notify.webhook_url
        if url:
            try:
                notify.post(url, runreport.webhook_payload(nightly, written), settings.config.notify.timeout)
                say(f"failure summary sent to the webhook at {notify.safe_url(url)}")
            except BakeryError as exc:
                say(f"WARNING: {exc}")
        if stopped is not None:  # exit 2 (3: a tool), as a bake's preflight: the environment, not an image
            raise stopped
        failed = ", ".join(
            f"{r.spec.variant_name} ({r.reason.splitlines()[0] if r.reason else '?'})" for r in nightly.failed
        )
        raise NightlyFailed(
            f"nightly {nightly.env_name}: {len(nightly.failed)} of {len(nightly.results)} variants failed: "
            f"{failed}; report {written.markdown}"
        )
    return nightly


def coverage_section(
    settings: Settings, env_name: str, say: Say, clients: ComputeClients | None
) -> dict[str, Any] | None:
    """The report's coverage section if the environment enables it. Coverage is read-only and does not
    fail the nightly: an error becomes the section's ``error``."""
    if not settings.config.environments[env_name].coverage.enabled:
        return None
    try:
        report = fleet.measure(settings, env_name, clients=clients)
    except BakeryError as exc:
        say(f"WARNING: fleet coverage: {exc}")
        return {"error": str(exc)}
    say(report.summary())
    for line in report.errors:
        say(f"WARNING: {line}")
    return fleet.nightly_section(report)


def run_variant(
    result: VariantResult,
    report: BakeReport,
    target_for: TargetFactory,
    build: Builder,
    say: Say,
    *,
    now: datetime.datetime,
    dry_run: bool = False,
) -> None:
    """Decide and, if needed, bake one variant; record the outcome in ``result`` (``report`` carries the
    run's git sha and Packer version). Only an interrupt escapes: any other error fails this variant and
    the nightly goes on with the next."""
    spec = result.spec
    result.bake = report
    start = time.monotonic()
    try:
        target = target_for(spec)
        target.check_tools(report.packer_version)  # a pipeline that cannot bake fails every night, changed or not
        with pipeline.phase(report, "check", say):
            report.source_image = target.source_image(say)
            rendered = render.render(spec, report.packer_version, report.source_image)
            report.fingerprint = rendered.fingerprint
            head = pipeline.head_or_none(target.store, spec.family)
            label = render.fingerprint_label(rendered.fingerprint)
            rolled_back = None if head_matches(head, label) else rolled_back_image(target.store, spec.family, label)
        result.head_before = result.head_after = head.name if head else ""
        if head is not None and head_matches(head, label):
            result.action = "skipped"
            result.reason = f"unchanged: head {head.name} carries input fingerprint {report.fingerprint[:16]}"
            return
        if rolled_back is not None:
            result.action = "skipped"
            result.reason = (
                f"rolled back: {rolled_back.name}, baked from these inputs, is {rolled_back.state.value}; not "
                "rebaking the same inputs (change an input, or `invoke promote` an image, to publish again)"
            )
            return
        result.reason = rebake_reason(head, rendered)
        if dry_run:
            result.action = "would bake"
            return
        say(f"rebake: {result.reason}")
        pipeline.bake(spec, target, say, build=build, report=report, now=now)
        result.action = "baked"
        result.reason = f"{result.reason}; published {report.image_name}"
    except Interrupted as exc:
        result.action, result.reason = "failed", str(exc)
        raise
    except KeyboardInterrupt:
        result.action, result.reason = "failed", "interrupted"
        raise
    except BakeryError as exc:
        result.action, result.reason = "failed", str(exc)
        say(f"FAILED {spec.variant_name}: {exc}")
    except Exception as exc:  # noqa: BLE001 - an unexpected error fails this variant, not the others
        result.action, result.reason = "failed", f"unexpected {type(exc).__name__}: {exc}"
        say(f"FAILED {spec.variant_name}: {result.reason}")
    finally:
        result.seconds = time.monotonic() - start
        if report.published is not None:  # published, whatever failed afterwards (head read, retention)
            result.head_after = report.head.name if report.head else report.published.name


def head_matches(head: ImageRecord | None, label: str) -> bool:
    return head is not None and head.labels.get("input-fingerprint") == label


def rolled_back_image(store: ImageStore, family: str, label: str) -> ImageRecord | None:
    """A rolled-back image of the family baked from the same inputs: the nightly must not publish those
    inputs again. Rolled back = deprecated with an OLDER replacement (a publish deprecates with the newer
    image as replacement, and inputs that return to an old state are baked again)."""
    records = store.list(family)
    by_name = {record.name: record for record in records}
    for record in records:
        if record.active or record.labels.get("input-fingerprint") != label or not record.replacement:
            continue
        replacement = by_name.get(record.replacement.rsplit("/", 1)[-1])
        if replacement is not None and replacement.created < record.created:
            return record
    return None


def rebake_reason(head: ImageRecord | None, rendered: render.Rendered) -> str:
    """Why the variant is baked: no head, or what differs from the head (source image, changed inputs
    when the head's manifest is at hand)."""
    if head is None:
        return "the family has no ACTIVE image yet"
    if "input-fingerprint" not in head.labels:
        return f"head {head.name} has no input-fingerprint label (not baked by this tool)"
    parts = []
    source = label_value(rendered.source_image.rsplit("/", 1)[-1])
    if head.labels.get("source-image") not in (None, source):
        parts.append(f"source image {head.labels['source-image']} -> {source}")
    changed = changed_inputs(head, rendered)
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        parts.append("changed " + ", ".join(changed[:5]) + more)
    return f"inputs differ from head {head.name}" + (f": {'; '.join(parts)}" if parts else "")


def changed_inputs(head: ImageRecord, rendered: render.Rendered) -> list[str]:
    """Input files that differ from the head's manifest (empty if the manifest is not at hand)."""
    if not head.manifest or not Path(head.manifest).is_file():
        return []
    try:
        before = provenance.read(Path(head.manifest)).get("inputs", {})
    except BakeryError:
        return []
    now = json.loads((rendered.directory / render.FINGERPRINT_FILE).read_text())["files"]
    return [path for path in sorted(before.keys() | now.keys()) if before.get(path) != now.get(path)]


def write_reports(nightly: NightlyRun, directory: Path) -> runreport.Written:
    """The JSON and Markdown reports, the merged JUnit and a copy of each manifest and SBOM, under ``directory``
    (``manifests/IMAGE.json`` and ``manifests/IMAGE.cdx.json``, where ``invoke diff`` finds them)."""
    manifests = directory / "manifests"
    for result in nightly.results:
        bake = result.bake
        if bake is not None and bake.manifest is not None and bake.manifest.is_file():
            manifests.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bake.manifest, manifests / f"{bake.image_name}.json")
            if bake.sbom is not None and bake.sbom.is_file():
                shutil.copyfile(bake.sbom, manifests / f"{bake.image_name}.cdx.json")
    return runreport.write(nightly, directory, bakery_version=__version__)
