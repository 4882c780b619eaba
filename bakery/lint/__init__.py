"""Lint osquery configuration and packs (schema-aware), Fluentd snippets and rsyslog snippets.

``lint_*`` return :class:`Finding` lists; :func:`format_text`/:func:`format_json` render them and
:func:`exit_code` turns them into the CLI's exit status.
"""

from bakery.lint.fluentd import lint_fluentd
from bakery.lint.osquery import SHIPPED_PACK_FLAGS, lint_osquery
from bakery.lint.rendered import lint_settings, lint_tree
from bakery.lint.report import Finding, exit_code, format_json, format_text
from bakery.lint.rsyslog import lint_rsyslog
from bakery.lint.schema import load_schema

__all__ = [
    "SHIPPED_PACK_FLAGS",
    "Finding",
    "exit_code",
    "format_json",
    "format_text",
    "lint_fluentd",
    "lint_osquery",
    "lint_rsyslog",
    "lint_settings",
    "lint_tree",
    "load_schema",
]
