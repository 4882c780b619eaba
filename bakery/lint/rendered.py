"""Lint what a render produced: osquery.conf and packs, the Fluentd and rsyslog snippets."""

from __future__ import annotations

from pathlib import Path

from bakery import render
from bakery.config import Settings
from bakery.errors import ConfigError
from bakery.lint.fluentd import lint_fluentd
from bakery.lint.osquery import lint_osquery
from bakery.lint.report import Finding
from bakery.lint.rsyslog import lint_rsyslog
from bakery.packer import detect_version

OSQUERY_CONF = Path("etc/osquery/osquery.conf")
PACKS_DIR = Path("etc/osquery/packs")
FLUENTD_SNIPPETS = "etc/fluent/conf.d/*.conf"
RSYSLOG_SNIPPETS = "etc/rsyslog.d/*.conf"


def lint_tree(
    files: Path,
    *,
    osquery_version: str,
    flags: dict[str, str | bool | int],
    platform: str = "linux",
) -> list[Finding]:
    """Lint a rendered ``files/`` tree (paths in findings are as rendered)."""
    findings = lint_osquery(
        [files / OSQUERY_CONF],
        platform=platform,
        osquery_version=osquery_version,
        flags=flags,
        packs_dir=files / PACKS_DIR,
    )
    for snippet in sorted(files.glob(FLUENTD_SNIPPETS)):
        findings += lint_fluentd(snippet)
    for snippet in sorted(files.glob(RSYSLOG_SNIPPETS)):
        findings += lint_rsyslog(snippet)
    return findings


def lint_settings(
    settings: Settings, paths: list[Path], env: str | None, platform: str, output_format: str
) -> list[Finding]:
    """Lint ``paths`` (osquery files), or render every variant of ``env`` and lint the result."""
    if output_format not in ("text", "json"):
        raise ConfigError(f"--format {output_format!r} is not supported: use text or json")
    osquery = settings.config.osquery
    if paths:
        return lint_osquery(paths, platform=platform, osquery_version=osquery.version, flags=dict(osquery.flags))
    findings: list[Finding] = []
    version = detect_version()
    for spec in settings.specs(env):
        rendered = render.render(spec, version)
        findings += lint_tree(
            rendered.directory / "files",
            osquery_version=osquery.version,
            flags=dict(osquery.flags),
            platform=platform,
        )
    return findings
