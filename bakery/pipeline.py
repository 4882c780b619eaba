"""The bake pipeline, the same for every target: render → validate/lint → prepare → bake → test → publish → retain.

The pipeline talks to a :class:`Target` (local QEMU + registry today); it never knows which one.
Nothing is published unless every image test passed.
"""

from __future__ import annotations

import datetime
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bakery import __version__, provenance, render
from bakery.config import BuildSpec
from bakery.encode import label_value
from bakery.errors import BakeryError, ConfigError, ImageNotFoundError, ImageTestError, PackerError, RegistryError
from bakery.identity import Identity
from bakery.identity import write_expectations as write_identity_expectations
from bakery.imagefiles import package_versions
from bakery.images import ImageRecord, ImageStore, rollback_plan
from bakery.imagetest import TestOutcome
from bakery.packer import Packer, PackerEvent, detect_version
from bakery.target import Say, Target, ZoneAttempt, git_sha, image_name
from bakery.validate import validate_rendered


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
    sbom: Path | None = None
    git_sha: str = "nogit"
    packer_version: tuple[int, int, int] = (0, 0, 0)
    zones: list[ZoneAttempt] = field(default_factory=list)  # where the builder and test VMs were tried, and why


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


def build_with_retries(
    build: Builder, rendered: render.Rendered, variables: dict[str, str], *, timeout: float, target: Target, say: Say
) -> None:
    """``build``, and after a PackerError again with the variables ``target.retry_build`` changes (GCE: the
    next zone when the builder VM found no capacity) until it succeeds, the target gives up (None, or its
    own error) or ``timeout`` (for all attempts together) has passed."""
    deadline = time.monotonic() + timeout
    attempt = dict(variables)
    while True:
        try:
            build(rendered, attempt, max(1.0, deadline - time.monotonic()), _progress(say))
            return
        except PackerError as exc:
            changes = target.retry_build(exc, say)
            if changes is None or time.monotonic() >= deadline:
                raise
            attempt |= changes


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
    started = now or datetime.datetime.now(datetime.UTC)
    report.image_name = image_name(spec.family, started, report.git_sha)
    packer_name = target.candidate_name(report.image_name)
    # The identity names the image as published (not the GCE candidate) and is a runtime variable, so it
    # never enters the rendered tree or its fingerprint (bakery/identity.py).
    image_identity = Identity(report.image_name, spec.variant_name, rendered.fingerprint)
    variables |= {"image_name": packer_name, "input_fingerprint": rendered.fingerprint}
    variables |= image_identity.packer_variables()
    candidate = target.output(rendered, packer_name)
    run_dir = spec.runs_dir / report.image_name
    write_identity_expectations(image_identity, run_dir)  # the image suite's --identity
    try:
        with phase(report, "bake", say):
            build_with_retries(build, rendered, variables, timeout=config.timeouts.packer_build, target=target, say=say)
        with phase(report, "test", say):
            report.outcome = target.test(rendered, candidate, run_dir, say)
        outcome = report.outcome
        say(
            f"image tests: {outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
            f"{outcome.skipped} skipped (JUnit: {outcome.junit})"
        )
        report.sbom = write_sbom(report, image_identity, run_dir, baked_at=started)
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
                "sbom-sha256": provenance.digest_label(report.sbom),
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
        report.zones = target.zones_tried()
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
        sbom_file=report.sbom,
    )
    return provenance.write(manifest, run_dir / provenance.MANIFEST_FILE)


def write_sbom(report: BakeReport, image_identity: Identity, run_dir: Path, *, baked_at: datetime.datetime) -> Path:
    """The CycloneDX SBOM of the package list read from the test VM (bakery/sbom.py), beside the manifest."""
    from bakery import sbom  # cyclonedx takes seconds to import: only when an SBOM is written

    spec = report.spec
    facts = sbom.ImageFacts(
        identity=image_identity,
        family=spec.family,
        environment=spec.env_name,
        artifact_source=spec.artifact_source,
        os=spec.variant.os,
        codename=spec.variant.codename,
        baked_at=baked_at,
    )
    packages = report.outcome.packages if report.outcome else []
    return sbom.write(facts, packages, run_dir / sbom.SBOM_FILE)


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


def describe(record: ImageRecord) -> str:
    """One line per image for listings."""
    replacement = f" -> {record.replacement}" if record.replacement else ""
    source = record.labels.get("artifact-source", "?")
    return f"{record.name:<50} {record.state.value:<10} {record.creation_timestamp}  source={source}{replacement}"


def promote(spec: BuildSpec, target: Target, name: str, say: Say, *, dry_run: bool = False) -> ImageRecord | None:
    """Copy tested image ``name`` into the environment's family as its new head (``--dry-run``: plan only)."""
    store = target.store
    try:
        source = store.get(name)
    except ImageNotFoundError as exc:  # the user named the image: bad input
        raise ConfigError(f"{exc}: give a name that `invoke images --env {spec.env_name}` lists") from None
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
    zones = zones_summary(report.zones)
    return (
        f"published {report.image_name} into {report.spec.family} (head: {head.name if head else 'none'}); "
        f"{tests}; manifest {report.manifest}; retention deleted {', '.join(report.deleted) or 'nothing'}"
        + (f"; {zones}" if zones else "")
    )


def zones_summary(attempts: list[ZoneAttempt]) -> str:
    """``zones: build us-east1-c (REASON) then us-east1-b; test us-east1-b`` when a stage tried more than
    one zone, else ''."""
    stages = dict.fromkeys(a.stage for a in attempts)
    if all(sum(a.stage == stage for a in attempts) < 2 for stage in stages):
        return ""
    parts = [
        f"{stage} "
        + " then ".join(f"{a.zone} ({a.reason})" if a.reason else a.zone for a in attempts if a.stage == stage)
        for stage in stages
    ]
    return "zones: " + "; ".join(parts)


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
