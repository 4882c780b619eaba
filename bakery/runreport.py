"""The nightly run's report: ``nightly.json`` (for machines), ``nightly.md`` (for people, e.g. a CI job's
summary) and ``junit.xml`` (every variant's image tests merged, plus one ``bake`` case per variant that is
skipped when the variant was unchanged and failed when the variant failed)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

from bakery.config import BuildSpec
from bakery.pipeline import BakeReport, zones_summary
from bakery.target import ZoneAttempt

Action = Literal["skipped", "baked", "would bake", "failed", "not run"]


@dataclass
class VariantResult:
    """What the nightly did with one variant, and why."""

    spec: BuildSpec
    action: Action = "not run"
    reason: str = ""
    bake: BakeReport | None = None
    head_before: str = ""
    head_after: str = ""
    seconds: float = 0.0


@dataclass
class NightlyRun:
    """One nightly run of an environment."""

    env_name: str
    started: datetime.datetime
    results: list[VariantResult] = field(default_factory=list)
    finished: datetime.datetime | None = None
    git_sha: str = "nogit"
    coverage: dict[str, Any] | None = None  # the fleet's coverage (bakery.gce.coverage.nightly_section)

    @property
    def failed(self) -> list[VariantResult]:
        return [r for r in self.results if r.action in ("failed", "not run")]


JSON_FILE = "nightly.json"
MARKDOWN_FILE = "nightly.md"
JUNIT_FILE = "junit.xml"


@dataclass(frozen=True)
class Written:
    """Where the report went."""

    json: Path
    markdown: Path
    junit: Path


def to_dict(nightly: NightlyRun, *, bakery_version: str) -> dict[str, Any]:
    """The JSON report."""
    finished = nightly.finished or nightly.started
    return {
        "environment": nightly.env_name,
        "started": nightly.started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - nightly.started).total_seconds(), 1),
        "bakery_version": bakery_version,
        "git_sha": nightly.git_sha,
        "ok": not nightly.failed,
        "counts": {
            a: sum(r.action == a for r in nightly.results)
            for a in ("baked", "skipped", "would bake", "failed", "not run")
        },
        "variants": [_variant(r) for r in nightly.results],
        **({"coverage": nightly.coverage} if nightly.coverage is not None else {}),
    }


def _variant(result: VariantResult) -> dict[str, Any]:
    bake = result.bake
    outcome = bake.outcome if bake else None
    return {
        "variant": result.spec.variant_name,
        "family": result.spec.family,
        "action": result.action,
        "reason": result.reason,
        "image": bake.published.name
        if bake and bake.published
        else result.head_before
        if result.action == "skipped"
        else "",
        "fingerprint": bake.fingerprint if bake else "",
        "source_image": bake.source_image if bake else "",
        "head_before": result.head_before,
        "head_after": result.head_after,
        "duration_s": round(result.seconds, 1),
        "phases_s": {k: round(v, 1) for k, v in bake.phases.items()} if bake else {},
        "tests": outcome.summary() if outcome else None,
        "packages": len(outcome.packages) if outcome else 0,
        "consumers": bake.consumers if bake else [],
        "retention_deleted": bake.deleted if bake else [],
        "manifest": f"manifests/{bake.image_name}.json" if bake and bake.manifest else "",
        # every zone the builder and test VMs were tried in, and why each was left ('' = not for capacity)
        "zones": [a._asdict() for a in bake.zones] if bake else [],
    }


def to_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: a summary table, then the details of every variant that did not skip."""
    counts = report["counts"]
    status = "OK" if report["ok"] else "FAILED"
    lines = [
        f"# Nightly {report['environment']}: {status}",
        "",
        f"{report['started']} → {report['finished']} ({report['duration_s']} s), osquery-bakery "
        f"{report['bakery_version']} at {report['git_sha']}: {counts['baked']} baked, {counts['skipped']} skipped, "
        f"{counts['failed'] + counts['not run']} failed"
        + (f", {counts['would bake']} would be baked (dry run)" if counts["would bake"] else ""),
        "",
        "| variant | action | image | fingerprint | tests (pass/fail/skip) | time | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in report["variants"]:
        tests = v["tests"]
        counts_cell = f"{tests['passed']}/{tests['failed'] + tests['errors']}/{tests['skipped']}" if tests else "–"
        lines.append(
            f"| {v['variant']} | {v['action']} | {v['image'] or '–'} | {v['fingerprint'][:16] or '–'} | "
            f"{counts_cell} | {v['duration_s']} s | {_cell(v['reason'])} |"
        )
    for v in report["variants"]:
        if v["action"] in ("skipped", "would bake"):
            continue
        first, *rest = v["reason"].splitlines() or [""]
        lines += ["", f"## {v['variant']}: {v['action']}", "", f"- reason: {first}"]
        if rest:  # e.g. Packer's or the linter's output
            lines += ["", "  ```", *(f"  {line}" for line in rest), "  ```", ""]
        lines.append(
            f"- source image: {v['source_image'] or '–'}; head before: {v['head_before'] or 'none'}, after: "
            f"{v['head_after'] or 'none'}"
        )
        if v["phases_s"]:
            lines.append("- phases: " + ", ".join(f"{k} {s} s" for k, s in v["phases_s"].items()))
        if v["tests"] and v["tests"]["failures"]:
            lines.append("- failed tests: " + ", ".join(v["tests"]["failures"]))
        if v["consumers"]:
            lines.append("- consumers of the family (blast radius):")
            lines += [f"  - {c}" for c in v["consumers"]]
        if v["manifest"]:
            lines.append(f"- manifest: {v['manifest']} ({v['packages']} packages)")
        if v["retention_deleted"]:
            lines.append("- retention deleted: " + ", ".join(v["retention_deleted"]))
        zones = zones_summary([ZoneAttempt(**a) for a in v.get("zones", [])])
        if zones:
            lines.append(f"- {zones}")
    if "coverage" in report:
        lines += _coverage_markdown(report["coverage"])
    return "\n".join(lines) + "\n"


def _coverage_markdown(section: dict[str, Any]) -> list[str]:
    """The coverage section: counts, projects not counted, then every uncovered VM."""
    if "error" in section:
        return ["", "## Fleet coverage: not measured", "", f"- {section['error']}"]
    lines = [
        "",
        f"## Fleet coverage: {section['coverage_pct']}%",
        "",
        f"{section['total']} VMs in {', '.join(section['projects'])}: {section['current']} current, "
        f"{section['stale']} stale, {section['uncovered']} uncovered, {section['unknown']} unknown, "
        f"{section['exempt']} exempt",
    ]
    lines += [f"- not counted: {error}" for error in section["errors"]]
    if section["uncovered_vms"]:
        lines += ["", "| uncovered VM | image | template | MIG | reason |", "|---|---|---|---|---|"]
        for vm in section["uncovered_vms"]:
            cells = (f"{vm['project']}/{vm['zone']}/{vm['name']}", vm["image"], vm["template"], vm["mig"], vm["reason"])
            lines.append("| " + " | ".join(_cell(c) or "–" for c in cells) + " |")
    return lines


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def merged_junit(nightly: NightlyRun) -> ElementTree.Element:
    """Every variant's image-test suites (names and classnames prefixed with the variant) plus a ``bake``
    suite with one case per variant; totals recomputed."""
    root = ElementTree.Element("testsuites", name=f"osquery-bakery nightly {nightly.env_name}")
    bake_suite = ElementTree.SubElement(root, "testsuite", name="bake")
    for result in nightly.results:
        variant = result.spec.variant_name
        case = ElementTree.SubElement(
            bake_suite, "testcase", classname="bake", name=variant, time=f"{result.seconds:.3f}"
        )
        if result.action == "skipped":
            ElementTree.SubElement(case, "skipped", message=result.reason)
        elif result.action in ("failed", "not run"):
            failure = ElementTree.SubElement(case, "failure", message=(result.reason.splitlines() or [""])[0][:500])
            failure.text = result.reason
        outcome = result.bake.outcome if result.bake else None
        if outcome is None or not outcome.junit.is_file():
            continue
        source = ElementTree.parse(outcome.junit).getroot()  # noqa: S314 - our own pytest's report
        for suite in [source] if source.tag == "testsuite" else source.iter("testsuite"):
            copy = ElementTree.SubElement(root, "testsuite", name=f"{variant}: {suite.get('name', 'pytest')}")
            for testcase in suite.iter("testcase"):
                testcase.set("classname", f"{variant}.{testcase.get('classname', '')}")
                copy.append(testcase)
    for suite in root.iter("testsuite"):
        _count(suite, suite.findall("testcase"))
    _count(root, list(root.iter("testcase")))
    return root


def _count(element: ElementTree.Element, cases: list[ElementTree.Element]) -> None:
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    element.set("errors", str(sum(c.find("error") is not None for c in cases)))
    element.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    element.set("time", f"{sum(float(c.get('time') or 0) for c in cases):.3f}")


def write(nightly: NightlyRun, directory: Path, *, bakery_version: str) -> Written:
    """Write the three report files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    report = to_dict(nightly, bakery_version=bakery_version)
    written = Written(directory / JSON_FILE, directory / MARKDOWN_FILE, directory / JUNIT_FILE)
    written.json.write_text(json.dumps(report, indent=2) + "\n")
    written.markdown.write_text(to_markdown(report))
    tree = ElementTree.ElementTree(merged_junit(nightly))
    ElementTree.indent(tree)
    tree.write(written.junit, encoding="utf-8", xml_declaration=True)
    return written


def summary_line(nightly: NightlyRun) -> str:
    """One line for the end of the run."""
    parts = [f"{r.spec.variant_name} {r.action}" for r in nightly.results]
    return f"nightly {nightly.env_name}: " + ", ".join(parts)


def webhook_payload(nightly: NightlyRun, written: Written) -> dict[str, Any]:
    """What the failure webhook receives: a ``text`` line (Slack/Mattermost/Teams-compatible) and the
    JSON report."""
    failed = ", ".join(f"{r.spec.variant_name}: {r.reason}" for r in nightly.failed)
    text = f"osquery-bakery nightly {nightly.env_name} FAILED ({len(nightly.failed)}/{len(nightly.results)}): {failed}"
    return {"text": text[:3000], "report": json.loads(written.json.read_text())}
