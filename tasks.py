"""Invoke tasks: parse flags, load config once, call one function of the ``bakery`` package."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, Exit, task

from bakery import cli, lint, pipeline, targets, validate
from bakery.defaults import DEFAULTS
from bakery.packer import detect_version
from bakery.render import render as render_spec

cli.install_config_error_reporting()

ENV_HELP = "environment from bakery.environments (default: bakery.env, i.e. 'local')"
VARIANT_HELP = "only this image variant (default: every variant of the environment)"


@task(help={"env": ENV_HELP, "variant": VARIANT_HELP})
def render(c: Context, env: str | None = None, variant: str | None = None) -> None:
    """Render the Packer template, variables and image files into build/ENV/VARIANT."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        specs = settings.specs(env, variant)
        version = detect_version()
        for spec in specs:
            rendered = render_spec(spec, version)
            cli.say(f"rendered {rendered.directory}  fingerprint {rendered.fingerprint[:16]}")


@task(
    name="validate",
    help={"env": "only this environment (default: every environment)", "variant": VARIANT_HELP},
)
def validate_(c: Context, env: str | None = None, variant: str | None = None) -> None:
    """Render and validate every environment x variant with the real packer (validate + fmt -check)."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        specs = settings.specs(env, variant) if env or variant else settings.all_specs()
        validate.validate_all(
            settings,
            specs,
            on_done=lambda ch: cli.say(
                f"valid  {ch.rendered.spec.env_name}/{ch.rendered.spec.variant_name}  ({ch.seconds:.1f}s)"
            ),
        )


@task(
    name="lint",
    iterable=["path"],
    help={
        "path": "osquery.conf or pack file to lint (repeatable); default: the rendered files of --env",
        "env": ENV_HELP,
        "platform": "osquery platform the queries must run on (default: linux)",
        "format": "output format: text or json (default: text)",
        "strict": "exit 2 on warnings too",
    },
)
def lint_(
    c: Context,
    path: list[str] | None = None,
    env: str | None = None,
    platform: str = "linux",
    format: str = "text",
    strict: bool = False,
) -> None:
    """Lint osquery config and packs against the table schema, and the Fluentd and rsyslog snippets."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        findings = lint.lint_settings(settings, [Path(p) for p in path or []], env, platform, format)
        cli.say(lint.format_json(findings) if format == "json" else lint.format_text(findings) or "lint: clean")
        code = lint.exit_code(findings, strict)
        if code:
            raise Exit(code=code)


PREFLIGHT_HELP = "GCE: do not run the doctor's checks first (emergencies only: a broken setup then fails mid-bake)"


@task(
    help={
        "env": ENV_HELP,
        "variant": VARIANT_HELP,
        "dry_run": "print the plan and change nothing",
        "skip_preflight": PREFLIGHT_HELP,
    }
)
def bake(
    c: Context, env: str | None = None, variant: str | None = None, dry_run: bool = False, skip_preflight: bool = False
) -> None:
    """Bake, boot, test and publish images (GCE: preflight, then render, validate, packer build, testinfra, publish)."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        specs = settings.specs(env, variant)
        if not dry_run and not skip_preflight and specs[0].env.target == "gce":
            from bakery.gce import doctor as gce_doctor

            gce_doctor.preflight(specs, cli.say)
        for spec in specs:
            target = targets.target_for(spec)
            if dry_run:
                cli.say("\n".join(["plan (dry run, nothing changes):", *pipeline.plan(spec, target)]))
                continue
            cli.say(pipeline.summary(pipeline.bake(spec, target, cli.say)))


@task(
    help={
        "env": ENV_HELP,
        "variant": "only this variant's source image and family (default: every variant of the environment)",
        "format": "output format: text or json (default: text)",
    }
)
def doctor(c: Context, env: str | None = None, variant: str | None = None, format: str = "text") -> None:
    """GCE: read-only checks that a bake can work (tools, credentials, project, IAM, network, images, Pub/Sub)."""
    from bakery.gce import doctor as gce_doctor

    settings = cli.settings(c)
    with cli.errors_to_exit():
        code = gce_doctor.command(settings.specs(env, variant), format, cli.say)
        if code:
            raise Exit(code=code)


@task(help={"env": ENV_HELP, "variant": VARIANT_HELP})
def images(c: Context, env: str | None = None, variant: str | None = None) -> None:
    """List each family's images, newest first, with states; the head is marked with *."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        for spec in settings.specs(env, variant):
            cli.say("\n".join(pipeline.listing(spec, targets.target_for(spec))))


@task(help={"env": ENV_HELP, "variant": VARIANT_HELP, "dry_run": "print the plan and change nothing"})
def rollback(c: Context, env: str | None = None, variant: str | None = None, dry_run: bool = False) -> None:
    """Deprecate a family's head so it resolves to the previous image (refuses to empty the family)."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        for spec in settings.specs(env, variant):
            pipeline.rollback(spec, targets.target_for(spec), cli.say, dry_run=dry_run)


@task(
    help={
        "image": "name of the image to promote (see invoke images)",
        "env": ENV_HELP,
        "variant": "variant whose family receives the image (default: the environment's first)",
        "dry_run": "print the plan and change nothing",
    }
)
def promote(c: Context, image: str, env: str | None = None, variant: str | None = None, dry_run: bool = False) -> None:
    """Copy a tested image into its family as the new head (e.g. to roll forward to a known-good image)."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        spec = settings.specs(env, variant)[0]
        pipeline.promote(spec, targets.target_for(spec), image, cli.say, dry_run=dry_run)


@task(help={"env": ENV_HELP, "variant": VARIANT_HELP, "dry_run": "print the exact API calls and change nothing"})
def prune(c: Context, env: str | None = None, variant: str | None = None, dry_run: bool = False) -> None:
    """GCE retention: keep N, delete older than max_age_days; never the head, rollback target or template images."""
    from bakery.gce import target as gce_target

    settings = cli.settings(c)
    with cli.errors_to_exit():
        for spec in settings.specs(env, variant):
            gce_target.prune(spec, cli.say, dry_run=dry_run)


@task(help={"env": ENV_HELP, "dry_run": "print the exact API calls and change nothing"})
def reap(c: Context, env: str | None = None, dry_run: bool = False) -> None:
    """GCE: delete expired builder/test instances, their disks and candidate images left by killed runs."""
    from bakery.gce import reaper

    settings = cli.settings(c)
    with cli.errors_to_exit():
        reaper.reap_environment(settings.specs(env), cli.say, dry_run=dry_run)


@task(
    help={
        "env": ENV_HELP,
        "variant": VARIANT_HELP,
        "report_dir": "where the report goes (default: build/reports/nightly/ENV/YYYYMMDD-HHMMSS)",
        "dry_run": "decide and report which variants would be baked; bake nothing",
        "skip_preflight": PREFLIGHT_HELP,
    }
)
def nightly(
    c: Context,
    env: str | None = None,
    variant: str | None = None,
    report_dir: str | None = None,
    dry_run: bool = False,
    skip_preflight: bool = False,
) -> None:
    """Bake every variant whose inputs changed (skip the rest); report JSON, Markdown and JUnit; exit 1 on failure."""
    from bakery import nightly as nightly_run

    settings = cli.settings(c)
    with cli.errors_to_exit():
        directory = Path(report_dir) if report_dir else None
        nightly_run.run(
            settings, env, variant, cli.say, report_dir=directory, dry_run=dry_run, preflight=not skip_preflight
        )


@task(
    iterable=["project"],
    help={
        "env": ENV_HELP,
        "project": "count the VMs of this project (repeatable; default: coverage.projects, else the env's project)",
        "format": "output format: text, json or md (default: text)",
        "fail_under": "exit 1 if coverage (percent) is below this, or if a project could not be read",
        "max_age_days": "call out images older than this (default: coverage.max_age_days, else retention's)",
    },
)
def coverage(
    c: Context,
    env: str | None = None,
    project: list[str] | None = None,
    format: str = "text",
    fail_under: str | None = None,
    max_age_days: str | None = None,
) -> None:
    """Which VMs boot from the environment's families: current, stale, uncovered, exempt, unknown (read-only)."""
    from bakery.gce import coverage as fleet

    settings = cli.settings(c)
    with cli.errors_to_exit():
        fleet.command(
            settings,
            env,
            projects=project or [],
            fmt=format,
            fail_under=fail_under,
            max_age_days=max_age_days,
            say=cli.say,
            warn=cli.warn,
        )


@task(help={"env": ENV_HELP, "variant": VARIANT_HELP})
def consumers(c: Context, env: str | None = None, variant: str | None = None) -> None:
    """List the instance templates and managed instance groups that boot from each family (blast radius)."""
    settings = cli.settings(c)
    with cli.errors_to_exit():
        for spec in settings.specs(env, variant):
            found = targets.target_for(spec).consumers(spec.family)
            cli.say(f"family {spec.family}: {len(found)} consumer(s)")
            for line in found:
                cli.say(f"  {line}")


@task(
    name="diff",
    iterable=["manifest_dir"],
    help={
        "image_a": "older image name (or a manifest .json file)",
        "image_b": "newer image name (or a manifest .json file)",
        "env": ENV_HELP,
        "manifest_dir": "where GCE manifests are (repeatable; default: build/runs and build/reports)",
    },
)
def diff_(
    c: Context, image_a: str, image_b: str, env: str | None = None, manifest_dir: list[str] | None = None
) -> None:
    """Show what changed between two images: packages, packs, config files and other inputs."""
    from bakery import provenance

    settings = cli.settings(c)
    with cli.errors_to_exit():
        spec = settings.specs(env)[0]
        dirs = [Path(d) for d in manifest_dir or []] or [settings.build_root / "runs", settings.build_root / "reports"]
        old, new = (
            provenance.load(provenance.resolve(ref, lambda: targets.target_for(spec).store, dirs))
            for ref in (image_a, image_b)
        )
        cli.say("\n".join(provenance.diff(old, new)))


@task(
    help={
        "env": "the GCE environment to rehearse (default: the first one with target: gce, e.g. 'gstg')",
        "variant": "the variant to bake with the qemu builder (default: debian-12, the one the local base is)",
    }
)
def rehearse(c: Context, env: str | None = None, variant: str = "debian-12") -> None:
    """GCE dress rehearsal: bake locally, then the GCE test stage, publish and retention against the fake
    Compute API, on a local VM that boots like a Compute Engine instance (real guest agent, fake metadata)."""
    from tests import rehearsal  # test doubles: the rehearsal is a test harness, not a way to reach GCE

    settings = cli.settings(c)
    with cli.errors_to_exit():
        cli.say(rehearsal.rehearse(settings, cli.say, env=env, variant=variant))


ns = Collection(
    render,
    validate_,
    lint_,
    doctor,
    bake,
    nightly,
    images,
    promote,
    rollback,
    consumers,
    coverage,
    diff_,
    prune,
    reap,
    rehearse,
)
ns.configure(DEFAULTS)
