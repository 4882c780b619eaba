"""Structure lint of Fluentd config snippets (no Fluentd binary is available to run ``--dry-run``).

Checks: balanced ``<directive>``/``</directive>`` tags; top-level directives; ``@type`` on sources,
matches and filters; ``in_tail`` sources have ``path``, ``pos_file`` (without it a restart re-reads or
skips lines), ``tag`` and a ``<parse>`` with ``@type``; no two sources share a ``pos_file``; a parser
with ``time_key`` keeps it (``keep_time_key true``: osquery's ``unixTime`` is needed downstream);
``gcloud_pubsub`` outputs have a ``topic`` and no ``key`` credential file (the VM's service account is
used; ``project`` is optional on GCE).

The main config (:func:`lint_fluentd_main`) must load only what the project ships: fluent-package 6 runs
fluentd 1.19 with ``FLUENT_CONF_INCLUDE_DIR=/etc/fluent/conf.d``, and fluentd loads every ``.conf``/``.yaml``
below that directory unless ``<system> config_include_dir ""`` (fluent/fluentd v1.19.0
``lib/fluent/supervisor.rb:1209-1230``), the vendor's ``update_notifier.conf`` (calls api.github.com) and
``obsolete_plugins.conf`` included; an ``@include`` with a wildcard loads them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bakery.errors import ConfigError
from bakery.lint.report import Finding, Severity

TOP_LEVEL = frozenset({"source", "match", "filter", "label", "system", "worker"})
_OPEN = re.compile(r"^<([A-Za-z_][\w-]*)(?:\s+[^>]*)?>$")
_CLOSE = re.compile(r"^</([A-Za-z_][\w-]*)\s*>$")
_PARAM = re.compile(r"^(@?[A-Za-z_][\w-]*)(?:\s+(.*))?$")


def _open_brackets(value: str) -> bool:
    """True while a value that starts with [ or { has not closed all its brackets."""
    if not value.startswith(("[", "{")):
        return False
    return value.count("[") + value.count("{") > value.count("]") + value.count("}")


@dataclass
class Section:
    """A ``<name ...>`` directive: its parameters (value, line) and nested sections."""

    name: str
    line: int
    params: dict[str, tuple[str, int]] = field(default_factory=dict)
    children: list[Section] = field(default_factory=list)

    def value(self, key: str) -> str | None:
        found = self.params.get(key)
        return found[0] if found else None


class _Lint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.pos_files: dict[str, int] = {}

    def add(self, line: int, severity: Severity, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(f"{self.path}:{line}", None, None, severity, code, message, fix))

    def parse(self, text: str) -> Section:
        root = Section("", 0)
        stack = [root]
        pending: tuple[str, str, int] | None = None  # a multi-line [array] or {hash} value being read
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if pending is not None:
                key, value, start = pending
                value = f"{value}\n{line}"
                pending = (key, value, start) if _open_brackets(value) else None
                stack[-1].params[key] = (value, start)
                continue
            if not line or line.startswith("#"):
                continue
            if close := _CLOSE.match(line):
                name = close.group(1)
                if len(stack) > 1 and stack[-1].name == name:
                    stack.pop()
                elif any(s.name == name for s in stack[1:]):
                    while stack[-1].name != name:
                        unclosed = stack.pop()
                        self._unclosed(unclosed)
                    stack.pop()
                else:
                    self.add(
                        number,
                        "error",
                        "unbalanced-directive",
                        f"</{name}> closes nothing",
                        f"remove it or add the matching <{name}>",
                    )
            elif opened := _OPEN.match(line):
                section = Section(opened.group(1), number)
                stack[-1].children.append(section)
                stack.append(section)
            elif param := _PARAM.match(line):
                value = (param.group(2) or "").strip()
                stack[-1].params[param.group(1)] = (value, number)
                if _open_brackets(value):
                    pending = (param.group(1), value, number)
            else:
                self.add(number, "error", "syntax-error", f"cannot parse {line!r}", "write `key value` or a <tag>")
        for unclosed in reversed(stack[1:]):
            self._unclosed(unclosed)
        return root

    def _unclosed(self, section: Section) -> None:
        self.add(
            section.line,
            "error",
            "unbalanced-directive",
            f"<{section.name}> is never closed",
            f"add </{section.name}>",
        )

    def check(self, root: Section) -> None:
        for section in root.children:
            if section.name not in TOP_LEVEL:
                self.add(
                    section.line,
                    "error",
                    "unknown-directive",
                    f"<{section.name}> is not a top-level directive",
                    f"use one of: {', '.join(sorted(TOP_LEVEL))}",
                )
            self._directive(section)

    def _directive(self, section: Section) -> None:
        if section.name == "label":
            for child in section.children:
                self._directive(child)
            return
        if section.name not in {"source", "match", "filter"}:
            return
        kind = section.value("@type")
        if not kind:
            self.add(section.line, "error", "missing-type", f"<{section.name}> has no @type", "add @type PLUGIN")
        elif section.name == "source" and kind == "tail":
            self._tail(section)
        elif section.name == "match" and kind == "gcloud_pubsub":
            self._pubsub(section)
        for child in section.children:
            if child.name == "parse":
                self._parse(child)

    def _tail(self, source: Section) -> None:
        for key, why in (
            ("path", "the file(s) to read"),
            ("pos_file", "where the read position survives restarts"),
            ("tag", "the tag that routes its events"),
        ):
            if not source.value(key):
                self.add(
                    source.line,
                    "error",
                    "missing-param",
                    f"tail source has no {key} ({why})",
                    f"add `{key} ...` to the <source>",
                )
        pos_file = source.value("pos_file")
        if pos_file:
            line = source.params["pos_file"][1]
            if pos_file in self.pos_files:
                self.add(
                    line,
                    "error",
                    "duplicate-pos-file",
                    f"pos_file {pos_file} is also used by the source at line {self.pos_files[pos_file]}",
                    "give every tail source its own pos_file",
                )
            else:
                self.pos_files[pos_file] = line
        parsers = [c for c in source.children if c.name == "parse"]
        if not parsers or not parsers[0].value("@type"):
            self.add(
                source.line,
                "error",
                "missing-parse",
                "tail source has no <parse> with @type",
                "add <parse> @type json </parse> (osquery results are JSON lines)",
            )

    def _parse(self, parse: Section) -> None:
        if parse.value("time_key") and parse.value("keep_time_key") != "true":
            self.add(
                parse.params["time_key"][1],
                "warning",
                "time-key-dropped",
                f"the parser removes time_key {parse.value('time_key')} from the record",
                "add `keep_time_key true` (the SIEM needs osquery's unixTime)",
            )

    def _pubsub(self, match: Section) -> None:
        if not match.value("topic"):
            self.add(
                match.line,
                "error",
                "missing-param",
                "gcloud_pubsub output has no topic",
                "add `topic NAME` to the <match>",
            )
        if "key" in match.params:
            self.add(
                match.params["key"][1],
                "warning",
                "credential-key-file",
                "gcloud_pubsub uses a key file: a baked credential",
                "remove `key`; the VM's service account (Pub/Sub Publisher and Viewer on the topic) is used",
            )


def lint_fluentd_main(path: Path) -> list[Finding]:
    """Findings for the main Fluentd config: it loads no directory and no wildcard (see the module doc)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such Fluentd config to lint")
    lint = _Lint(path)
    text = path.read_text(encoding="utf-8")
    root = lint.parse(text)
    lint.check(root)
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split() if not raw.lstrip().startswith("#") else []
        if len(words) == 2 and words[0] in ("@include", "include") and any(c in words[1] for c in "*?["):
            lint.add(
                number,
                "error",
                "wildcard-include",
                f"@include {words[1]} loads whatever lands there, fluent-package's own snippets included",
                "include the project's files by name",
            )
    systems = [s for s in root.children if s.name == "system"]
    if not any(s.value("config_include_dir") in ('""', "''") for s in systems):
        lint.add(
            systems[0].line if systems else 1,
            "error",
            "include-dir-enabled",
            "fluentd also loads every file of FLUENT_CONF_INCLUDE_DIR (/etc/fluent/conf.d with fluent-package), "
            "the vendor's update_notifier.conf and obsolete_plugins.conf included",
            'add config_include_dir "" to <system>',
        )
    return lint.findings


def lint_fluentd(path: Path) -> list[Finding]:
    """Structure findings for the Fluentd config (or conf.d snippet) at ``path``."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such Fluentd config to lint")
    lint = _Lint(path)
    lint.check(lint.parse(path.read_text(encoding="utf-8")))
    return lint.findings
