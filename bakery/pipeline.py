"""The bake pipeline, the same for every target: render → validate/lint → prepare → bake → test → publish → retain.

The pipeline talks to a :class:`Target` (local QEMU + registry today); it never knows which one.
Nothing is published unless every image test passed.
"""

from __future__ import annotations

import datetime
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bakery import __version__, provenance, render
from bakery.config import BuildSpec
from bakery.encode import label_value
from bakery.errors import BakeryError, ImageTestError, RegistryError
from bakery.imagefiles import package_versions
from bakery.images import ImageRecord, ImageStore, rollback_plan
from bakery.local.vm import TestOutcome
from bakery.packer import Packer, PackerEvent, detect_version
from bakery.validate import validate_rendered

Say = Callable[[str], None]


class Target(Protocol):
    """What the pipeline needs from a target (local QEMU today, GCE next)."""

    store: ImageStore

    def source_image(self, say: Say) -> str:
        """The exact image the bake starts from (GCE: the public family resolved now; local: the base
        image's recipe key), the same for every call on this target."""
        ...

    def consumers(self, family: str) -> list[str]:
        """One line per instance template or managed instance group booting from ``family``."""
        ...

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        """Raise ToolMissingError when a tool the bake needs is missing or cannot do the job; runs first."""
        ...

    def prepare(self, rendered: render.Rendered, say: Say) -> dict[str, str]:
        """Get ready to bake; return the runtime Packer variables (base image, accelerator, …)."""
        ...

    def candidate_name(self, image_name: str) -> str:
        """The name Packer gives the candidate (GCE: image names are project-global, so not ``image_name``)."""
        ...

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        """Where Packer leaves the baked candidate."""
        ...

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: Say) -> TestOutcome:
        """Boot the candidate and run the image test suite; always stop what was booted."""
        ...

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        """Make the tested ``candidate`` image ``image_name``, the new head of ``family``."""
        ...

    def discard(self, candidate: str) -> None:
        """Remove what is left of a candidate (after publishing, a failure or an interrupt)."""
        ...

    def keep(self, candidate: str, run_dir: Path) -> str:
        """Keep a candidate that failed its tests for inspection; return where it is."""
        ...

    def plan(self, rendered_dir: Path) -> list[str]:
        """Human lines describing what prepare/test would do (for --dry-run)."""
        ...


@dataclass
class BakeReport:
    """What a bake did, for the summary (and the nightly report)."""

    spec: BuildSpec
    image_name: str = ""
    fingerprint: str = ""
    source_image: str = ""
    consumers: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    outcome: TestOutcome | None = None
    published: ImageRecord | None = None
    head: ImageRecord | None = None
    deleted: list[str] = field(default_factory=list)
    manifest: Path | None = None
    git_sha: str = "nogit"
    packer_version: tuple[int, int, int] = (0, 0, 0)


def git_sha(root: Path = render.PROJECT_ROOT) -> str:
    """Short git sha of the checkout (``nogit`` outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    return out.stdout.strip() or "nogit"


def image_name(family: str, now: datetime.datetime, sha: str) -> str:
    """``FAMILY-YYYYMMDD-HHMMSS-SHA``, within GCE's 63 characters (the family part is cut if needed)."""
    suffix = f"-{now:%Y%m%d-%H%M%S}-{label_value(sha)[:7]}"
    return family[: 63 - len(suffix)].rstrip("-") + suffix


@contextmanager
def phase(report: BakeReport, name: str, say: Say) -> Iterator[None]:
    """Banner, elapsed time, and the time recorded in the report."""
    say(f"==> {name}")
    start = time.monotonic()
    try:
        yield
    finally:
        report.phases[name] = time.monotonic() - start
        say(f"<== {name} ({report.phases[name]:.1f} s)")


Builder = Callable[[render.Rendered, dict[str, str], float, Callable[[PackerEvent], None]], None]


def packer_build(
    rendered: render.Rendered, variables: dict[str, str], timeout: float, on_event: Callable[[PackerEvent], None]
) -> None:
    """The real build step: ``packer build`` of the rendered template (tests replace it on the fake API,
    where no Packer builder can run)."""
    Packer(rendered.template, rendered.var_file, variables).build(timeout, on_event=on_event)


def bake(
    spec: BuildSpec,
    target: Target,
    say: Say,
    *,
    now: datetime.datetime | None = None,
    build: Builder = packer_build,
    report: BakeReport | None = None,
) -> BakeReport:
    """Bake, test and (only if every test passed) publish one image; then apply retention. ``report`` (made
    by the caller, with the git sha and Packer version it read once) is filled in as the phases run, so the
    caller keeps what was done when a phase fails."""
    report = report or BakeReport(spec, git_sha=git_sha(), packer_version=detect_version())
    config = spec.config
    if spec.artifact_source == "stand-in":
        say(
            "NOTE: artifact source is 'stand-in': the image gets the project's STAND-IN osquery and Fluentd "
            "packages (no real agent). Set environments.<env>.artifacts.source to 'upstream' or 'mirror' "
            "for real packages."
        )
    target.check_tools(report.packer_version)  # before anything starts: no API call, no render, no VM
    with phase(report, "render", say):
        report.source_image = target.source_image(say)
        rendered = render.render(spec, report.packer_version, report.source_image)
        report.fingerprint = rendered.fingerprint
        say(f"rendered {rendered.directory} (source {report.source_image}, fingerprint {rendered.fingerprint[:16]})")
    with phase(report, "validate", say), tempfile.TemporaryDirectory(prefix="bakery-validate-") as scratch:
        validate_rendered(rendered, config.timeouts, Path(scratch))
    with phase(report, "prepare", say):
        variables = target.prepare(rendered, say)
    report.image_name = image_name(spec.family, now or datetime.datetime.now(datetime.UTC), report.git_sha)
    packer_name = target.candidate_name(report.image_name)
    variables |= {"image_name": packer_name, "input_fingerprint": rendered.fingerprint}
    candidate = target.output(rendered, packer_name)
    run_dir = spec.runs_dir / report.image_name
    try:
        with phase(report, "bake", say):
            build(rendered, variables, config.timeouts.packer_build, _progress(say))
        with phase(report, "test", say):
            report.outcome = target.test(rendered, candidate, run_dir, say)
        outcome = report.outcome
        say(
            f"image tests: {outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
            f"{outcome.skipped} skipped (JUnit: {outcome.junit})"
        )
        report.manifest = write_manifest(report, rendered, run_dir, candidate=packer_name)
        if not outcome.ok:
            failed = ", ".join(outcome.failures) or "no test passed"
            kept = target.keep(candidate, run_dir)
            raise ImageTestError(
                f"image tests failed, nothing published (family head unchanged): {failed}; JUnit: {outcome.junit}; "
                f"the failed image is kept for inspection at {kept}"
            )
        report.consumers = blast_radius(target, spec.family, say)
        with phase(report, "publish", say):
            labels = {
                **render.image_labels(spec),
                "input-fingerprint": render.fingerprint_label(rendered.fingerprint),
                "git-sha": label_value(report.git_sha),
                "manifest-sha256": provenance.digest_label(report.manifest),
                "source-image": label_value(report.source_image.rsplit("/", 1)[-1]),
            }
            report.published = target.publish(
                candidate,
                report.image_name,
                spec.family,
                labels=labels,
                description=f"osquery image {spec.variant_name} ({spec.artifact_source}), tested",
                manifest=str(report.manifest),
            )
            report.head = target.store.get_from_family(spec.family)
    finally:
        target.discard(candidate)
    with phase(report, "retention", say):
        report.deleted = retain(spec, target.store)
    return report


def retain(spec: BuildSpec, store: ImageStore) -> list[str]:
    """Bake's retention phase: delete what ``store.plan_retention`` plans for the family (as ``plan``
    printed it, with the new image published); return the names."""
    retention = spec.env.retention
    return store.retention(spec.family, retention.keep, max_age_days=retention.max_age_days)


def blast_radius(target: Target, family: str, say: Say) -> list[str]:
    """Print (and return) who boots from ``family`` before it changes; informational, so an error
    reading it is a warning, never a reason to throw a tested image away."""
    try:
        found = target.consumers(family)
    except BakeryError as exc:
        say(f"WARNING: cannot list the consumers of {family}: {exc}")
        return [f"unavailable: {exc}"]
    say(f"blast radius of {family}: {len(found)} consumer(s)")
    for line in found:
        say(f"    {line}")
    return found


def _progress(say: Say) -> Callable[[PackerEvent], None]:
    def on_event(event: PackerEvent) -> None:
        if event.type == "ui" and len(event.data) >= 2 and event.data[0] in ("say", "message", "error"):
            for line in event.message.rstrip("\n").splitlines():
                say(f"    packer: {line}")

    return on_event


def write_manifest(report: BakeReport, rendered: render.Rendered, run_dir: Path, *, candidate: str) -> Path:
    """Provenance of one bake (see bakery/provenance.py), written into the run directory."""
    spec = report.spec
    identity = {
        "image": report.image_name,
        "candidate": candidate,
        "family": spec.family,
        "environment": spec.env_name,
        "variant": spec.variant_name,
        "artifact_source": spec.artifact_source,
        "stand_in": spec.artifact_source == "stand-in",
        "bakery_version": __version__,
        "git_sha": report.git_sha,
        "packer_version": ".".join(str(p) for p in report.packer_version),
        "agent_packages": dict(zip(("osquery", "fluent-package"), package_versions(spec), strict=True)),
    }
    manifest = provenance.build(
        identity=identity,
        rendered_dir=rendered.directory,
        fingerprint=rendered.fingerprint,
        source_image=rendered.source_image,
        outcome=report.outcome,
    )
    return provenance.write(manifest, run_dir / provenance.MANIFEST_FILE)


def plan(spec: BuildSpec, target: Target) -> list[str]:
    """What ``bake`` would do, changing nothing (``--dry-run``); refuses what ``bake`` would refuse first."""
    target.check_tools(detect_version())
    store = target.store
    head = head_or_none(store, spec.family)
    now = datetime.datetime.now(datetime.UTC)
    name = image_name(spec.family, now, git_sha())
    retention = spec.env.retention
    pruning = store.plan_retention(
        spec.family, retention.keep, max_age_days=retention.max_age_days, now=now, incoming=name
    )
    return [
        f"environment {spec.env_name}, variant {spec.variant_name}, artifact source {spec.artifact_source}",
        f"source image {target.source_image(lambda _line: None)}",
        f"render into {spec.build_dir}",
        "validate: packer validate + packer fmt -check; lint osquery.conf, packs, Fluentd and rsyslog snippets",
        *target.plan(spec.build_dir),
        f"packer build -machine-readable -force -var-file={render.VARS_FILE} {render.TEMPLATE_FILE} "
        f"(candidate {target.candidate_name(name)})",
        f"boot the baked image and run {spec.image_suite} over SSH; publish only if every test passes",
        f"publish as {name}",
        f"publish into family {spec.family} (current head: {head.name if head else 'none'})",
        f"retention of {spec.family} once {name} is its head (keep {retention.keep}, max age "
        f"{retention.max_age_days} days): would delete {', '.join(pruning.names) or 'nothing'}",
        *(f"retention keeps {kept}: {why}" for kept, why in pruning.kept.items()),
    ]


def head_or_none(store: ImageStore, family: str) -> ImageRecord | None:
    """The family's head, or None when the family has no ACTIVE image. An error reading it (permission,
    a 5xx after retries) is raised, never taken for an empty family (the nightly would bake for nothing)."""
    try:
        return store.get_from_family(family)
    except RegistryError:
        if not any(record.active for record in store.list(family)):
            return None
        raise


def target_for(spec: BuildSpec, *, dry_run: Say | None = None) -> Target:
    """The target implementation for the environment's ``target`` (``dry_run``: GCE mutations are printed)."""
    if spec.env.target == "local":
        from bakery.local.target import LocalTarget

        return LocalTarget(spec)
    from bakery.gce.target import GceTarget

    return GceTarget(spec, dry_run=dry_run)


def describe(record: ImageRecord) -> str:
    """One line per image for listings."""
    replacement = f" -> {record.replacement}" if record.replacement else ""
    source = record.labels.get("artifact-source", "?")
    return f"{record.name:<50} {record.state.value:<10} {record.creation_timestamp}  source={source}{replacement}"


def promote(spec: BuildSpec, target: Target, name: str, say: Say, *, dry_run: bool = False) -> ImageRecord | None:
    """Copy tested image ``name`` into the environment's family as its new head (``--dry-run``: plan only)."""
    store = target.store
    source = store.get(name)
    if spec.env.target != "local" and source.labels.get("artifact-source") == "stand-in":
        raise RegistryError(f"refusing to promote {name}: it was baked from stand-in packages, not osquery")
    new_name = image_name(spec.family, datetime.datetime.now(datetime.UTC), source.labels.get("git-sha", "nogit"))
    before = head_or_none(store, spec.family)
    say(
        f"{'plan (dry run): ' if dry_run else ''}copy {name} as {new_name} into {spec.family} "
        f"(head before: {before.name if before else 'none'})"
    )
    blast_radius(target, spec.family, say)
    if dry_run:
        return None
    record = store.promote(name, spec.family, new_name=new_name)
    say(f"after: {spec.family} -> {store.get_from_family(spec.family).name}")
    return record


def summary(report: BakeReport) -> str:
    """The final line of a successful bake."""
    outcome, head = report.outcome, report.head
    tests = f"tests {outcome.passed} passed, {outcome.skipped} skipped; JUnit {outcome.junit}" if outcome else ""
    return (
        f"published {report.image_name} into {report.spec.family} (head: {head.name if head else 'none'}); "
        f"{tests}; manifest {report.manifest}; retention deleted {', '.join(report.deleted) or 'nothing'}"
    )


def listing(spec: BuildSpec, target: Target) -> list[str]:
    """A family's images, newest first, with states; ``*`` marks the head."""
    head = head_or_none(target.store, spec.family)
    lines = [f"family {spec.family} (head: {head.name if head else 'none'})"]
    for record in target.store.list(spec.family):
        lines.append(("* " if head and record.name == head.name else "  ") + describe(record))
    return lines


def rollback(spec: BuildSpec, target: Target, say: Say, *, dry_run: bool = False) -> None:
    """Deprecate the family's head (refused when it would empty the family); print before and after."""
    old, new = rollback_plan(target.store.list(spec.family), spec.family)
    if dry_run:
        say(f"plan (dry run): deprecate {old.name} (replacement {new.name}); head becomes {new.name}")
        return
    say(f"before: {spec.family} -> {old.name}")
    target.store.rollback(spec.family)
    say(f"after:  {spec.family} -> {target.store.get_from_family(spec.family).name}")
