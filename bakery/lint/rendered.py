"""Lint what a render produced: osquery.conf and packs, the Fluentd and rsyslog snippets."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from bakery import imagefiles, render
from bakery.config import Settings
from bakery.errors import ConfigError
from bakery.lint.fluentd import lint_fluentd, lint_fluentd_main
from bakery.lint.osquery import lint_osquery
from bakery.lint.report import Finding
from bakery.lint.rsyslog import lint_rsyslog
from bakery.packer import detect_version

OSQUERY_CONF = Path("etc/osquery/osquery.conf")
PACKS_DIR = Path("etc/osquery/packs")
FLUENTD_CONF = Path("etc/fluent/fluentd.conf")
FLUENTD_SNIPPETS = "etc/fluent/conf.d/*.conf"
RSYSLOG_SNIPPETS = "etc/rsyslog.d/*.conf"
PLATFORMS = ("linux", "darwin", "windows")  # what lint_osquery checks queries against
_POS_FILE = re.compile(r"^\s*pos_file\s+(\S+)")


def lint_tree(
    files: Path,
    *,
    osquery_version: str,
    flags: dict[str, str | bool | int],
    platform: str = "linux",
) -> list[Finding]:
    """Lint a rendered ``files/`` tree. A finding in a pack names the project's ``packs/NAME.conf`` (the
    rendered copy is byte-identical, so lines match); other files are named as rendered."""
    findings = lint_osquery(
        [files / OSQUERY_CONF],
        platform=platform,
        osquery_version=osquery_version,
        flags=flags,
        packs_dir=files / PACKS_DIR,
    )
    if (files / FLUENTD_CONF).is_file():
        findings += lint_fluentd_main(files / FLUENTD_CONF)
    snippets = sorted(files.glob(FLUENTD_SNIPPETS))
    for snippet in snippets:
        findings += lint_fluentd(snippet)
    findings += _shared_pos_files(snippets)
    for snippet in sorted(files.glob(RSYSLOG_SNIPPETS)):
        findings += lint_rsyslog(snippet)
    return [dataclasses.replace(f, file=_source_file(files, f.file)) for f in findings]


def _source_file(files: Path, where: str) -> str:
    """``packs/NAME.conf[:LINE]`` for a rendered pack (render copies packs/NAME.conf verbatim), else ``where``."""
    packs = f"{files / PACKS_DIR}/"
    if not where.startswith(packs):
        return where
    return f"packs/{where.removeprefix(packs)}"


def _shared_pos_files(snippets: list[Path]) -> list[Finding]:
    """A pos_file used by two snippets (each snippet checks its own sources; this checks across them)."""
    owners: dict[str, Path] = {}
    findings = []
    for snippet in snippets:
        for number, line in enumerate(snippet.read_text().splitlines(), 1):
            match = _POS_FILE.match(line)
            if not match:
                continue
            first = owners.setdefault(match.group(1), snippet)
            if first != snippet:
                findings.append(
                    Finding(
                        f"{snippet}:{number}",
                        None,
                        None,
                        "error",
                        "duplicate-pos-file",
                        f"pos_file {match.group(1)} is also used by {first.name}",
                        "give every tail source its own pos_file",
                    )
                )
    return findings


def lint_settings(
    settings: Settings, paths: list[Path], env: str | None, platform: str, output_format: str
) -> list[Finding]:
    """Lint ``paths`` (osquery files), or render every variant of ``env`` and lint the result."""
    if output_format not in ("text", "json"):
        raise ConfigError(f"--format {output_format!r} is not supported: use text or json")
    if platform not in PLATFORMS:
        raise ConfigError(f"--platform {platform!r} is not an osquery platform: use one of {', '.join(PLATFORMS)}")
    osquery = settings.config.osquery
    specs = settings.specs(env)
    if paths:
        flags = imagefiles.flags(specs[0])
        return lint_osquery(paths, platform=platform, osquery_version=osquery.version, flags=flags)
    findings: list[Finding] = []
    version = detect_version()
    for spec in specs:
        rendered = render.render(spec, version)
        findings += lint_tree(
            rendered.directory / "files",
            osquery_version=osquery.version,
            flags=imagefiles.flags(spec),
            platform=platform,
        )
    return findings
