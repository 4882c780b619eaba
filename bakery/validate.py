"""Render and check every environment × variant: ``packer validate``, ``packer fmt -check`` and the lint."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bakery import imagefiles, lint, render
from bakery.config import BuildSpec, Settings, Timeouts
from bakery.errors import LintError
from bakery.local.ssh import generate_key
from bakery.packer import Packer, detect_version


@dataclass(frozen=True)
class Checked:
    """One validated build directory."""

    rendered: render.Rendered
    seconds: float


def _throwaway_key(directory: Path) -> Path:
    """An SSH key that exists only so Packer's qemu Prepare step can parse one (never used to connect)."""
    key = directory / "validate_ed25519"
    if not key.exists():
        generate_key(key, "bakery-validate")
    return key


def lint_rendered(rendered: render.Rendered) -> None:
    """Lint what would be baked (osquery config and packs with the flags actually baked, Fluentd, rsyslog)."""
    spec = rendered.spec
    findings = lint.lint_tree(
        rendered.directory / "files", osquery_version=spec.config.osquery.version, flags=imagefiles.flags(spec)
    )
    if lint.exit_code(findings, strict=False):
        where = f"{spec.env_name}/{spec.variant_name}"
        raise LintError(f"lint found errors in {where}, nothing was baked:\n{lint.format_text(findings)}")


def validate_rendered(rendered: render.Rendered, timeouts: Timeouts, key_dir: Path) -> None:
    """``packer init`` (Packer >= 1.7: installs the pinned plugins; a bake always validates before it
    builds), ``packer validate`` with placeholder runtime values, ``packer fmt -check``, then the lint."""
    variables = render.runtime_vars(rendered.spec)
    if rendered.spec.env.target == "local":
        variables["ssh_private_key_file"] = str(_throwaway_key(key_dir))
    client = Packer(rendered.template, rendered.var_file, variables)
    if rendered.needs_init:
        client.init(timeouts.packer_init)
    client.validate(timeouts.packer_validate)
    client.fmt_check(timeouts.packer_validate)
    lint_rendered(rendered)


def validate_all(
    settings: Settings,
    specs: list[BuildSpec] | None = None,
    on_done: Callable[[Checked], None] | None = None,
) -> list[Checked]:
    """Render and validate ``specs`` (default: every environment × variant) with the real Packer."""
    version = detect_version()
    timeouts = settings.config.timeouts
    results = []
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        for spec in specs if specs is not None else settings.all_specs():
            start = time.monotonic()
            rendered = render.render(spec, version)
            validate_rendered(rendered, timeouts, Path(tmp))
            checked = Checked(rendered, time.monotonic() - start)
            results.append(checked)
            if on_done:
                on_done(checked)
    return results
