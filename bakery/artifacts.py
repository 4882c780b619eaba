"""Stage the packages a bake installs into ``build/<env>/<variant>/artifacts/`` (uploaded to the builder).

- ``upstream``: nothing (the builder installs from the vendors' apt repositories).
- ``stand-in``: the stand-in .debs, built deterministically (:mod:`bakery.standin`).
- ``mirror``: copied from ``mirror_dir`` after checking them against the mirror's ``SHA256SUMS``.
  Layout of a mirror (paths as listed in its SHA256SUMS, relative to the mirror directory)::

      osquery_<package_version>_amd64.deb
      <codename>/<fluent package>_<version>_amd64.deb     (fluent-package is built per distribution)
      gems/<plugin>-<plugin_version>.gem                  (plus every dependency gem, also under gems/)

Staged files get a ``SHA256SUMS`` that 20-repos.sh checks again inside the builder.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from bakery import standin
from bakery.config import BuildSpec
from bakery.errors import ConfigError

SUMS = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_sums(dest: Path, sums: dict[str, str]) -> None:
    (dest / SUMS).write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))


def read_sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum`` listing (``HEX  NAME`` or ``HEX *NAME``) into {name: hex}."""
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        sha, _, name = line.partition(" ")
        name = name.lstrip(" *")
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha.lower()) or not name:
            raise ConfigError(f"{path}:{number}: not a sha256sum line: regenerate it with sha256sum")
        sums[name] = sha.lower()
    return sums


def mirror_files(spec: BuildSpec) -> dict[str, str]:
    """{path in the mirror: staged name} of the files a mirror bake needs (dependency gems come extra)."""
    osq, fluent, variant = spec.config.osquery, spec.config.fluentd, spec.variant
    osquery_deb = f"osquery_{osq.package_version}_amd64.deb"
    fluent_deb = f"{fluent.package}_{fluent.version}_amd64.deb"
    plugin_gem = f"gems/{fluent.plugin}-{fluent.plugin_version}.gem"
    return {osquery_deb: osquery_deb, f"{variant.codename}/{fluent_deb}": fluent_deb, plugin_gem: plugin_gem}


def _stage_mirror(spec: BuildSpec, dest: Path) -> dict[str, str]:
    mirror = spec.mirror_dir()
    key = f"bakery.environments.{spec.env_name}.artifacts.mirror_dir"
    if mirror is None or not mirror.is_dir():
        raise ConfigError(f"{key}: mirror directory {mirror} does not exist: create it or fix mirror_dir")
    sums_path = mirror / SUMS
    if not sums_path.is_file():
        raise ConfigError(f"{sums_path}: missing: list the mirror's files with 'sha256sum FILE... > {SUMS}'")
    listed = read_sums(sums_path)
    wanted = mirror_files(spec)
    for name in sorted(listed):
        if name.startswith("gems/") and name.endswith(".gem") and "/" not in name[5:]:
            wanted.setdefault(name, name)
    staged: dict[str, str] = {}
    for source_name, staged_name in sorted(wanted.items()):
        source = mirror / source_name
        if not source.is_file():
            raise ConfigError(f"{source}: missing from the mirror: download it there and add it to {sums_path}")
        if source_name not in listed:
            raise ConfigError(f"{source}: not listed in {sums_path}: add its sha256 (sha256sum {source_name})")
        actual = sha256_file(source)
        if actual != listed[source_name]:
            raise ConfigError(
                f"{source}: sha256 {actual} does not match {sums_path} ({listed[source_name]}): "
                "re-download the file or fix the listing"
            )
        target = dest / staged_name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        staged[staged_name] = actual
    return staged


def _stage_standin(dest: Path) -> dict[str, str]:
    staged = {}
    for package in sorted(standin.PACKAGES):
        path = standin.build(package, dest)
        staged[path.name] = sha256_file(path)
    return staged


def stage_artifacts(spec: BuildSpec, dest: Path) -> dict[str, str]:
    """Fill ``dest`` for ``spec``'s artifact source; return {staged file name: sha256} (empty for upstream)."""
    dest.mkdir(parents=True, exist_ok=True)
    if spec.artifact_source == "upstream":
        return {}
    staged = _stage_standin(dest) if spec.artifact_source == "stand-in" else _stage_mirror(spec, dest)
    _write_sums(dest, staged)
    return staged
