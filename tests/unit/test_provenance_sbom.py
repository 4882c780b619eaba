"""``invoke diff`` and the SBOM: the package list comes from the manifest's SBOM when it is at hand (beside
the manifest, or where the bake wrote it), the diff says so, and a stale, broken or disagreeing SBOM is one
line with exit 2. The CLI test runs the real ``invoke``."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery import provenance, sbom
from bakery.errors import ProvenanceError
from bakery.identity import Identity
from bakery.imagetest import Package

ROOT = Path(__file__).resolve().parents[2]
BAKED_AT = datetime.datetime(2026, 11, 27, 15, 4, 5, tzinfo=datetime.UTC)


def bake_files(run_dir: Path, image: str, packages: list[Package]) -> Path:
    """What pipeline.bake leaves in a run directory: the SBOM, then the manifest that records it."""
    ident = Identity(image, "debian-12", "c" * 64)
    facts = sbom.ImageFacts(ident, "osquery-debian-12", "local", "stand-in", "debian", "bookworm", BAKED_AT)
    sbom_path = sbom.write(facts, packages, run_dir / sbom.SBOM_FILE)
    manifest: dict[str, Any] = {
        "manifest_version": 1,
        "image": image,
        "inputs": {},
        "packages": sorted([p.name, p.version, p.architecture] for p in packages),
        "sbom": provenance.sbom_record(sbom_path),
    }
    return provenance.write(manifest, run_dir / provenance.MANIFEST_FILE)


OLD = [Package("libssl3", "3.0.11-1", "amd64"), Package("osquery", "5.22.1-1.linux", "amd64")]
NEW = [Package("osquery", "5.23.1-1.linux", "amd64")]


def test_manifest_records_its_sbom(tmp_path: Path) -> None:
    path = bake_files(tmp_path / "a", "osquery-debian-12-a", OLD)
    record = json.loads(path.read_text())["sbom"]
    sbom_path = tmp_path / "a" / sbom.SBOM_FILE
    assert record == {
        "file": sbom.SBOM_FILE,
        "path": str(sbom_path),
        "sha256": provenance.digest(sbom_path),
        "format": "CycloneDX 1.6 JSON",
    }


def test_diff_reads_the_packages_from_the_sboms(tmp_path: Path) -> None:
    a = bake_files(tmp_path / "a", "osquery-debian-12-a", OLD)
    b = bake_files(tmp_path / "b", "osquery-debian-12-b", NEW)
    old, new = provenance.load(a), provenance.load(b)
    digest_a = provenance.digest(tmp_path / "a" / sbom.SBOM_FILE)[:16]
    digest_b = provenance.digest(tmp_path / "b" / sbom.SBOM_FILE)[:16]
    assert provenance.diff(old, new)[:5] == [
        "diff osquery-debian-12-a -> osquery-debian-12-b",
        "packages: 2 -> 1",
        f"  list of old: SBOM {tmp_path / 'a' / sbom.SBOM_FILE} (sha256 {digest_a}…)",
        f"  list of new: SBOM {tmp_path / 'b' / sbom.SBOM_FILE} (sha256 {digest_b}…)",
        "  - libssl3:amd64 3.0.11-1",
    ]


def test_a_copied_manifest_finds_the_sbom_where_the_bake_wrote_it(tmp_path: Path) -> None:
    """The local registry and the nightly report keep a copy of the manifest only."""
    a = bake_files(tmp_path / "runs" / "a", "osquery-debian-12-a", OLD)
    copy = tmp_path / "registry" / "images" / "osquery-debian-12-a" / "manifest.json"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(a, copy)
    assert provenance.load(copy)[provenance.PACKAGES_SOURCE].startswith(f"SBOM {a.parent / sbom.SBOM_FILE} ")
    (a.parent / sbom.SBOM_FILE).unlink()
    source = provenance.load(copy)[provenance.PACKAGES_SOURCE]
    assert source.startswith(f"manifest {copy} (its SBOM, sha256 ")
    assert "is not at hand" in source


def test_a_per_image_copy_finds_its_sbom_under_the_image_name(tmp_path: Path) -> None:
    """Copies kept per image (reports/manifests/IMAGE.json) may keep the SBOM as IMAGE.cdx.json."""
    a = bake_files(tmp_path / "runs" / "a", "osquery-debian-12-a", OLD)
    kept = tmp_path / "reports" / "manifests"
    kept.mkdir(parents=True)
    shutil.copyfile(a, kept / "osquery-debian-12-a.json")
    shutil.move(a.parent / sbom.SBOM_FILE, kept / "osquery-debian-12-a.cdx.json")
    source = provenance.load(kept / "osquery-debian-12-a.json")[provenance.PACKAGES_SOURCE]
    assert source.startswith(f"SBOM {kept / 'osquery-debian-12-a.cdx.json'} (sha256 ")


@pytest.mark.parametrize("breakage", ["stale", "schema", "packages"])
def test_a_wrong_sbom_is_one_line(tmp_path: Path, breakage: str) -> None:
    a = bake_files(tmp_path / "a", "osquery-debian-12-a", OLD)
    sbom_path = a.parent / sbom.SBOM_FILE
    manifest = json.loads(a.read_text())
    if breakage == "stale":  # another bake's SBOM in its place
        bake_files(tmp_path / "other", "osquery-debian-12-x", NEW)
        shutil.copyfile(tmp_path / "other" / sbom.SBOM_FILE, sbom_path)
        expected = f"SBOM {sbom_path} is not the one manifest {a} records"
    elif breakage == "schema":  # the recorded digest matches a document that is not CycloneDX
        doc = json.loads(sbom_path.read_text())
        doc["components"][0]["type"] = "deb"
        sbom_path.write_text(json.dumps(doc))
        manifest["sbom"] = provenance.sbom_record(sbom_path)
        expected = f"SBOM {sbom_path} fails the CycloneDX 1.6 schema: $.components[0].type"
    else:  # the manifest's own list disagrees with its SBOM
        manifest["packages"] = [["osquery", "5.22.1-1.linux", "amd64"]]
        expected = f"SBOM {sbom_path} and manifest {a} list different packages"
    a.write_text(json.dumps(manifest))
    with pytest.raises(ProvenanceError) as raised:
        provenance.load(a)
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)


def test_invoke_diff_shows_the_sbom_and_refuses_a_stale_one(tmp_path: Path) -> None:
    a = bake_files(tmp_path / "a", "osquery-debian-12-a", OLD)
    b = bake_files(tmp_path / "b", "osquery-debian-12-b", NEW)
    argv = [sys.executable, "-m", "invoke", "diff", str(a), str(b)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    new_source = f"  list of new: SBOM {b.parent / sbom.SBOM_FILE} (sha256 "
    assert [line for line in proc.stdout.splitlines() if line.startswith(new_source)], proc.stdout
    shutil.copyfile(a.parent / sbom.SBOM_FILE, b.parent / sbom.SBOM_FILE)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: SBOM {b.parent / sbom.SBOM_FILE} is not the one manifest {b} records")
