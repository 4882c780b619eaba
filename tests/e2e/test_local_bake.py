"""The main job end to end: `invoke bake` on the local target with real Packer, QEMU and testinfra.

One VM at a time. The base image is cached in $BAKERY_CACHE_DIR (default /var/tmp/bakery-test-cache)
and shared with the local-target integration tests; everything else lives under the test's tmp dir.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.childsignals import sigint_default
from tests.support import runtime_config

ROOT = Path(__file__).resolve().parents[2]
FAMILY = "osquery-debian-12"

pytestmark = pytest.mark.e2e


def invoke(cfg: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(cfg), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def head(registry: Path) -> str | None:
    records = [json.loads(p.read_text()) for p in (registry / "images").glob("*/image.json")]
    active = [r for r in records if r["family"] == FAMILY and r["state"] == "ACTIVE"]
    return max(active, key=lambda r: r["creation_timestamp"])["name"] if active else None


def qemu_pids() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = runtime_config(tmp)
    return tmp, invoke(cfg, "bake")


def test_bake_publishes_a_tested_image(baked) -> None:
    tmp, proc = baked
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    assert "artifact source is 'stand-in'" in out
    for name in ("render", "validate", "prepare", "bake", "test", "publish", "retention"):
        assert f"<== {name} (" in out
    assert "packer: ==> qemu.osquery: Provisioning with shell script: provision/90-seal.sh" in out
    registry = tmp / "registry"
    name = head(registry)
    assert name is not None and name.startswith(FAMILY + "-")
    record = json.loads((registry / "images" / name / "image.json").read_text())
    assert record["labels"]["artifact-source"] == "stand-in"
    manifest = json.loads(Path(record["manifest"]).read_text())
    assert manifest["stand_in"] is True
    assert manifest["tests"]["failed"] == 0 and manifest["tests"]["passed"] > 50
    assert Path(manifest["tests"]["junit"]).is_file()
    # the image identity was checked in the booted image, and the SBOM is the image's, beside the run's manifest
    cases = ElementTree.parse(manifest["tests"]["junit"]).getroot().iter("testcase")
    passed = {c.get("name", "").split("[")[0] for c in cases if c.get("classname") == "test_identity" and not len(c)}
    assert passed == {"test_identity_file", "test_osquery_decorates_with_identity", "test_decorators_not_disabled"}
    sbom_path = Path(manifest["sbom"]["path"])
    assert sbom_path == Path(manifest["tests"]["junit"]).parent / "bakery-sbom.cdx.json"
    assert record["labels"]["sbom-sha256"] == hashlib.sha256(sbom_path.read_bytes()).hexdigest()[:63]
    bom = json.loads(sbom_path.read_text())
    assert bom["metadata"]["component"]["name"] == name
    purls = {c["purl"].split("@")[0] for c in bom["components"]}
    assert {"pkg:deb/debian/osquery", "pkg:deb/debian/fluent-package", "pkg:deb/debian/rsyslog"} <= purls
    assert (registry / "images" / name / "disk.qcow2").stat().st_size < 600 * 1024 * 1024
    assert not (tmp / "build" / "output" / "local" / "debian-12").exists()


def test_images_lists_the_head_and_rollback_refuses_to_empty_the_family(baked) -> None:
    tmp, _ = baked
    cfg = runtime_config(tmp)
    listing = invoke(cfg, "images", timeout=60)
    assert listing.returncode == 0
    name = head(tmp / "registry")
    assert f"* {name}" in listing.stdout
    refused = invoke(cfg, "rollback", timeout=60)
    assert refused.returncode != 0
    assert "only ACTIVE image" in refused.stderr
    assert head(tmp / "registry") == name


def test_dry_run_prints_the_plan_and_changes_nothing(baked) -> None:
    tmp, _ = baked
    cfg = runtime_config(tmp)
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    proc = invoke(cfg, "bake", "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "plan (dry run, nothing changes)" in proc.stdout
    assert f"publish into family {FAMILY} (current head: {head(tmp / 'registry')})" in proc.stdout
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*")) == before


def test_failing_image_test_publishes_nothing(baked, tmp_path: Path) -> None:
    tmp, _ = baked
    suite = tmp_path / "suite"
    shutil.copytree(ROOT / "tests" / "image", suite)
    (suite / "test_deliberately_broken.py").write_text(
        "def test_site_policy_file(host):\n    assert host.file('/etc/site-policy.conf').exists\n"
    )
    before = head(tmp / "registry")
    proc = invoke(runtime_config(tmp, suite), "bake")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "image tests failed, nothing published (family head unchanged)" in proc.stderr
    assert "test_deliberately_broken" in proc.stderr
    assert head(tmp / "registry") == before
    junit = Path(re.search(r"JUnit: (\S+\.xml)", proc.stderr).group(1))
    assert junit.parent.parent == tmp / "build" / "runs" / "local" / "debian-12"
    assert '<testcase classname="test_deliberately_broken" name="test_site_policy_file' in junit.read_text()
    kept = re.search(r"kept for inspection at (\S+\.qcow2)", proc.stderr)
    assert kept is not None and Path(kept.group(1)).is_file()


@pytest.mark.parametrize(
    ("signum", "code", "when"),
    [(signal.SIGINT, 130, "Provisioning with shell script"), (signal.SIGTERM, 143, "VM answered SSH")],
)
def test_interrupt_leaves_nothing_behind(baked, signum: int, code: int, when: str) -> None:
    tmp, _ = baked
    before_qemu = qemu_pids()
    before = head(tmp / "registry")
    before_tmp = set(Path("/tmp").glob("bakery-*"))  # other runs' leftovers are not this bake's
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-f", str(runtime_config(tmp)), "bake"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=sigint_default,  # noqa: PLW1509 - SIGINT as at a terminal, even in a background test run
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 600
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if when in line or not line:
            break
    assert when in seen, seen[-2000:]
    start = time.monotonic()
    proc.send_signal(signum)
    proc.stdout.read()
    assert proc.wait(timeout=180) == code
    assert time.monotonic() - start < 60
    assert qemu_pids() <= before_qemu
    assert head(tmp / "registry") == before
    assert not (tmp / "build" / "output" / "local" / "debian-12").exists()
    assert not list((tmp / "registry" / ".tmp").glob("*"))
    assert set(Path("/tmp").glob("bakery-*")) <= before_tmp


# --- the nightly on the local target (after the tests above: the family holds the one baked image) ---


def test_nightly_after_the_bake_starts_no_vm_and_bakes_nothing(baked) -> None:
    tmp, _ = baked
    before = head(tmp / "registry")
    reports = tmp / "reports" / "noop"
    proc = invoke(runtime_config(tmp), "nightly", "--report-dir", str(reports), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert f"unchanged: head {before} carries input fingerprint" in proc.stdout
    assert "==> prepare" not in proc.stdout and "packer:" not in proc.stdout, "no base image, builder or VM"
    assert "nightly local: debian-12 skipped" in proc.stdout
    assert head(tmp / "registry") == before
    report = json.loads((reports / "nightly.json").read_text())
    assert report["counts"] == {"baked": 0, "skipped": 1, "would bake": 0, "failed": 0, "not run": 0}
    assert list(report["variants"][0]["phases_s"]) == ["check"]


def test_nightly_rebakes_a_changed_pack_and_diff_shows_the_change(baked, tmp_path: Path) -> None:
    from bakery import cli, nightly
    from bakery.config import Settings

    tmp, _ = baked
    root = tmp_path / "project"  # a copy of the inputs, so the test can change a pack
    for part in ("templates", "provision", "packs"):
        shutil.copytree(ROOT / part, root / part)
    loaded = cli.project_settings(runtime_config(tmp))
    settings = Settings(loaded.config.model_copy(update={"image_suite": str(ROOT / "tests" / "image")}), root)
    old = head(tmp / "registry")
    lines: list[str] = []
    same = nightly.run(settings, "local", None, lines.append, report_dir=tmp_path / "r1")
    assert [r.action for r in same.results] == ["skipped"], "a byte-identical copy of the inputs is unchanged"

    pack = root / "packs" / "compliance.conf"
    pack.write_text(pack.read_text().replace('"interval": 3600', '"interval": 7200', 1))
    changed = nightly.run(settings, "local", None, lines.append, report_dir=tmp_path / "r2")
    [result] = changed.results
    assert result.action == "baked", "\n".join(lines[-40:])
    assert f"inputs differ from head {old}: changed files/etc/osquery/packs/compliance.conf" in result.reason
    new = head(tmp / "registry")
    assert new != old and new == result.head_after

    manifest = json.loads((tmp / "registry" / "images" / new / "manifest.json").read_text())
    packages = {name: version for name, version, _arch in manifest["packages"]}
    assert packages["osquery"] == "0.0.0~standin" and len(packages) > 100, "read from the VM with dpkg-query"
    assert (tmp_path / "r2" / "manifests" / f"{new}.json").is_file()

    proc = invoke(runtime_config(tmp), "diff", old, new, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "  ~ compliance.conf" in proc.stdout
    assert '      -      "interval": 3600,' in proc.stdout and '      +      "interval": 7200,' in proc.stdout
    assert f"packages: unchanged ({len(packages)})" in proc.stdout
