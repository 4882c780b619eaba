"""Provenance of a baked image: its manifest (inputs with hashes, versions, the package list read from the
VM, the test summary) and ``diff`` between two images' manifests.

A manifest is written once per bake, after the test stage and before anything is published. The local
registry stores a copy with the image; on GCE it is a pipeline artifact and the image carries its hash
(label ``manifest-sha256``), which is how ``invoke diff`` tells the right file from a stale one.

The same package list is also written as a CycloneDX SBOM beside the manifest (bakery/sbom.py); the
manifest records the SBOM's file name, path and sha256 (and the image carries it as ``sbom-sha256``).
:func:`load` reads the package list from that SBOM when it is at hand (beside the manifest, or where the
bake wrote it) and says where the list came from; ``invoke diff`` prints that source.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bakery.errors import ImageNotFoundError, ProvenanceError
from bakery.images import ImageStore
from bakery.imagetest import TestOutcome

MANIFEST_FILE = "bakery-manifest.json"
MANIFEST_VERSION = 1
MAX_CONFIG_BYTES = 64 * 1024  # config files larger than this are hashed, not copied
PACKS_PREFIX = "files/etc/osquery/packs/"


def build(
    *,
    identity: Mapping[str, Any],
    rendered_dir: Path,
    fingerprint: str,
    source_image: str,
    outcome: TestOutcome | None,
    sbom_file: Path | None = None,
) -> dict[str, Any]:
    """The manifest: ``identity`` (image, family, versions, …) plus what the rendered tree and the test
    stage tell (inputs with hashes, config file texts, the package list, the test summary) and, when
    given, the SBOM written beside it (file name, path, sha256)."""
    inputs: dict[str, str] = json.loads((rendered_dir / "fingerprint.json").read_text())["files"]
    config = {}
    for rel in sorted(inputs):
        path = rendered_dir / rel
        if rel.startswith("files/") and path.stat().st_size <= MAX_CONFIG_BYTES:
            try:
                config[rel] = path.read_text()
            except UnicodeDecodeError:
                continue
    return {
        "manifest_version": MANIFEST_VERSION,
        **identity,
        "source_image": source_image,
        "input_fingerprint": fingerprint,
        "inputs": inputs,
        "config": config,
        "packages": sorted([p.name, p.version, p.architecture] for p in outcome.packages) if outcome else [],
        "tests": outcome.summary() if outcome else None,
        **({"sbom": sbom_record(sbom_file)} if sbom_file is not None else {}),
    }


def sbom_record(path: Path) -> dict[str, str]:
    """What a manifest says of its SBOM: enough to find it again and to tell it from a stale one."""
    from bakery import sbom  # cyclonedx takes seconds to import: only when an SBOM is read

    return {"file": path.name, "path": str(path), "sha256": digest(path), "format": sbom.FORMAT}


def write(manifest: Mapping[str, Any], path: Path) -> Path:
    """Write ``manifest`` as stable JSON (sorted keys) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def digest(path: Path) -> str:
    """sha256 of a manifest file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest_label(path: Path) -> str:
    """The ``manifest-sha256`` label: the digest cut to a label value's 63 characters."""
    return digest(path)[:63]


def load(path: Path) -> dict[str, Any]:
    """Read a manifest with its package list, as ``invoke diff`` shows it (or raise one line). The result
    also says where the package list comes from (key :data:`PACKAGES_SOURCE`, not in the file): the
    manifest's SBOM when it is at hand (its ``packages`` are then the SBOM's), else the manifest itself."""
    data = read(path)
    data[PACKAGES_SOURCE] = _packages_from_sbom(path, data)
    return data


def read(path: Path) -> dict[str, Any]:
    """Read a manifest as written, or raise one line saying what is wrong with the file (no SBOM is read)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvenanceError(f"manifest {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
        raise ProvenanceError(
            f"{path} is not an osquery-bakery manifest (manifest_version {MANIFEST_VERSION} expected)"
        )
    return data


PACKAGES_SOURCE = "packages_source"


def _packages_from_sbom(manifest: Path, data: dict[str, Any]) -> str:
    """Replace ``data["packages"]`` by those of the manifest's SBOM when a file with the recorded sha256 is
    beside the manifest (under its own name, or as ``<manifest stem>.cdx.json`` for copies kept per image)
    or where the bake wrote it; return where the package list comes from. An SBOM whose package list
    differs from the manifest's, or that fails the CycloneDX schema, is an error."""
    from bakery import sbom  # cyclonedx takes seconds to import: only when an SBOM is read

    record = data.get("sbom")
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return f"manifest {manifest} (it records no SBOM)"
    want, name = record["sha256"], str(record.get("file") or sbom.SBOM_FILE)
    beside = [manifest.parent / name, manifest.with_name(manifest.stem + ".cdx.json")]  # IMAGE.json, IMAGE.cdx.json
    candidates = dict.fromkeys([*beside, *([Path(record["path"])] if record.get("path") else [])])
    stale = [c for c in candidates if c.is_file() and digest(c) != want]
    found = next((c for c in candidates if c.is_file() and c not in stale), None)
    if found is None:
        if stale:
            raise ProvenanceError(
                f"SBOM {stale[0]} is not the one manifest {manifest} records (sha256 {want[:16]}…): it belongs "
                "to another bake; put the bake's own SBOM beside the manifest"
            )
        where = ", ".join(str(c) for c in candidates)
        return f"manifest {manifest} (its SBOM, sha256 {want[:16]}…, is not at hand: looked at {where})"
    text = found.read_text()
    error = sbom.validation_error(text)
    if error is not None:
        raise ProvenanceError(f"SBOM {found} fails the CycloneDX 1.6 schema: {error}")
    try:
        listed = [[p.name, p.version, p.architecture] for p in sbom.packages(text)]
    except ValueError as exc:
        raise ProvenanceError(f"SBOM {found}: {exc}") from None
    if sorted(listed) != sorted(data.get("packages", [])):
        raise ProvenanceError(
            f"SBOM {found} and manifest {manifest} list different packages: the files are not from one bake"
        )
    data["packages"] = listed
    return f"SBOM {found} (sha256 {want[:16]}…)"


def find(name: str, directories: list[Path], label: str | None) -> Path:
    """The manifest of image ``name`` under ``directories``: the one whose hash is the image's
    ``manifest-sha256`` ``label`` when given (this also finds a promoted copy's), else the one naming it."""
    for directory in directories:
        for path in sorted(directory.rglob("*.json")) if directory.is_dir() else []:
            if label is not None and digest_label(path) == label:
                return path
            if label is None and _image_of(path) == name:
                return path
    where = ", ".join(str(d) for d in directories) or "nowhere"
    how = f"with sha256 {label}… (the image's manifest-sha256 label)" if label else f"for image {name}"
    raise ProvenanceError(
        f"no manifest {how} under {where}: download the bake job's reports/ artifact and pass "
        "--manifest-dir DIR, or give the manifest file's path instead of the image name"
    )


def _image_of(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data.get("image") if isinstance(data, dict) and "manifest_version" in data else None


def resolve(ref: str, store: ImageStore | Callable[[], ImageStore], directories: list[Path]) -> Path:
    """The manifest file for ``ref``: a manifest's path, or an image name looked up in ``store`` (or the
    store a callable makes, only when needed: a manifest path needs no credentials): its
    stored manifest (local registry), else the file under ``directories`` whose hash the image's
    ``manifest-sha256`` label names (GCE). A stored manifest must match that label too."""
    path = Path(ref)
    if path.suffix == ".json":
        if not path.is_file():
            raise ProvenanceError(f"manifest file {ref} does not exist: give an image name or a manifest's path")
        return path
    try:
        record = (store() if callable(store) else store).get(ref)
    except ImageNotFoundError as exc:  # the user named the image: bad input
        raise ProvenanceError(f"{exc}: give a name that `invoke images` lists, or a manifest .json file") from None
    label = record.labels.get("manifest-sha256")
    stored = Path(record.manifest) if record.manifest else None
    if stored is not None and stored.is_file():
        if label is not None and digest_label(stored) != label:
            raise ProvenanceError(
                f"manifest {stored} of image {ref} does not match the image's manifest-sha256 label {label[:16]}…"
            )
        return stored
    if label is None:
        raise ProvenanceError(f"image {ref} has no manifest-sha256 label: it was not baked by this version")
    return find(ref, directories, label)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed from image ``old`` to image ``new``: versions, packages, packs, config files, inputs."""
    lines = [f"diff {old.get('image')} -> {new.get('image')}"]
    for key in ("source_image", "bakery_version", "git_sha", "packer_version", "artifact_source"):
        if old.get(key) != new.get(key):
            lines.append(f"  {key}: {old.get(key)} -> {new.get(key)}")
    header, *package_changes = _package_diff(old.get("packages", []), new.get("packages", []))
    sources = [
        f"  list of {side}: {m[PACKAGES_SOURCE]}" for side, m in (("old", old), ("new", new)) if PACKAGES_SOURCE in m
    ]
    lines += [header, *sources, *package_changes]
    old_inputs, new_inputs = old.get("inputs", {}), new.get("inputs", {})
    packs = _changes(
        {k: v for k, v in old_inputs.items() if k.startswith(PACKS_PREFIX)},
        {k: v for k, v in new_inputs.items() if k.startswith(PACKS_PREFIX)},
    )
    if packs:
        lines.append("packs:")
        lines += [f"  {mark} {path.removeprefix(PACKS_PREFIX)}" for mark, path in packs]
    config_changes = [(m, p) for m, p in _changes(old_inputs, new_inputs) if p.startswith("files/")]
    if config_changes:
        lines.append("config files:")
        for mark, path in config_changes:
            lines.append(f"  {mark} {path.removeprefix('files')}")
            before, after = old.get("config", {}).get(path), new.get("config", {}).get(path)
            if mark == "~" and before is not None and after is not None:
                lines += [
                    "      " + line.rstrip("\n")
                    for line in difflib.unified_diff(
                        before.splitlines(keepends=True), after.splitlines(keepends=True), "old", "new", n=1
                    )
                ]
    other = [(m, p) for m, p in _changes(old_inputs, new_inputs) if not p.startswith("files/")]
    if other:
        lines.append("other inputs:")
        lines += [f"  {mark} {path}" for mark, path in other]
    if len(lines) == 1:
        lines.append("  no differences in packages, packs, config files or inputs")
    return lines


def _changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(mark, key)`` for keys added (+), removed (-) or changed (~), sorted by key."""
    marks = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            marks.append(("+", key))
        elif key not in new:
            marks.append(("-", key))
        elif old[key] != new[key]:
            marks.append(("~", key))
    return marks


def _package_diff(old: list[list[str]], new: list[list[str]]) -> list[str]:
    before = {(name, arch): version for name, version, arch in old}
    after = {(name, arch): version for name, version, arch in new}
    changes = _changes({f"{n}:{a}": v for (n, a), v in before.items()}, {f"{n}:{a}": v for (n, a), v in after.items()})
    if not changes:
        return [f"packages: unchanged ({len(after)})"]
    lines = [f"packages: {len(before)} -> {len(after)}"]
    for mark, key in changes:
        name, arch = key.rsplit(":", 1)
        if mark == "~":
            lines.append(f"  ~ {key} {before[name, arch]} -> {after[name, arch]}")
        else:
            lines.append(f"  {mark} {key} {(after if mark == '+' else before)[name, arch]}")
    return lines
