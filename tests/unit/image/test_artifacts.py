"""Artifact staging: stand-in builds, mirror verification (each failure one line), upstream nothing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from bakery import artifacts, cli
from bakery.config import BuildSpec
from bakery.errors import ConfigError


def _spec(source: str, tmp: Path, mirror: str | None = None) -> BuildSpec:
    spec = cli.project_settings().specs("gstg", "ubuntu-2204")[0]
    config = spec.config
    env = config.environments["gstg"]
    env = env.model_copy(
        update={"artifacts": env.artifacts.model_copy(update={"source": source, "mirror_dir": mirror})}
    )
    config = config.model_copy(update={"environments": {**config.environments, "gstg": env}})
    return replace(spec, config=config, project_root=tmp)


def test_upstream_stages_nothing(tmp_path: Path) -> None:
    assert artifacts.stage_artifacts(_spec("upstream", tmp_path), tmp_path / "out") == {}
    assert list((tmp_path / "out").iterdir()) == []


def test_stand_in_stages_both_packages_with_sums(tmp_path: Path) -> None:
    staged = artifacts.stage_artifacts(_spec("stand-in", tmp_path), tmp_path / "out")
    assert sorted(staged) == ["fluent-package_0.0.0~standin_amd64.deb", "osquery_0.0.0~standin_amd64.deb"]
    sums = (tmp_path / "out/SHA256SUMS").read_text()
    for name, sha in staged.items():
        assert f"{sha}  {name}\n" in sums
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == sha


def _mirror(root: Path) -> Path:
    mirror = root / "mirror"
    files = {
        "osquery_5.23.1-1.linux_amd64.deb": b"osquery",
        "jammy/fluent-package_6.0.0-1_amd64.deb": b"fluent jammy",
        "noble/fluent-package_6.0.0-1_amd64.deb": b"fluent noble",
        "gems/fluent-plugin-gcloud-pubsub-custom-1.6.0.gem": b"plugin",
        "gems/google-cloud-pubsub-2.19.0.gem": b"dependency",
    }
    for rel, data in files.items():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(data)
    (mirror / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {r}\n" for r, d in files.items()))
    return mirror


def test_mirror_stages_verified_files_for_the_variant(tmp_path: Path) -> None:
    _mirror(tmp_path)
    staged = artifacts.stage_artifacts(_spec("mirror", tmp_path, "mirror"), tmp_path / "out")
    assert sorted(staged) == [
        "fluent-package_6.0.0-1_amd64.deb",
        "gems/fluent-plugin-gcloud-pubsub-custom-1.6.0.gem",
        "gems/google-cloud-pubsub-2.19.0.gem",
        "osquery_5.23.1-1.linux_amd64.deb",
    ]
    assert (tmp_path / "out/fluent-package_6.0.0-1_amd64.deb").read_bytes() == b"fluent jammy"
    assert "gems/google-cloud-pubsub-2.19.0.gem" in (tmp_path / "out/SHA256SUMS").read_text()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda m: (m / "osquery_5.23.1-1.linux_amd64.deb").write_bytes(b"tampered"),
            r"osquery_5.23.1-1.linux_amd64.deb: sha256 \w+ does not match .*SHA256SUMS",
        ),
        (
            lambda m: (m / "jammy/fluent-package_6.0.0-1_amd64.deb").unlink(),
            r"jammy/fluent-package_6.0.0-1_amd64.deb: missing from the mirror: download it",
        ),
        (
            lambda m: (m / "SHA256SUMS").write_text(
                "\n".join(line for line in (m / "SHA256SUMS").read_text().splitlines() if "plugin" not in line)
            ),
            r"fluent-plugin-gcloud-pubsub-custom-1.6.0.gem: not listed in .*SHA256SUMS",
        ),
        (lambda m: (m / "SHA256SUMS").unlink(), r"SHA256SUMS: missing: list the mirror's files"),
        (lambda m: (m / "SHA256SUMS").write_text("nonsense\n"), r"SHA256SUMS:1: not a sha256sum line"),
    ],
    ids=["checksum-mismatch", "missing-file", "not-listed", "no-sums", "bad-sums"],
)
def test_mirror_problems_are_one_line(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    damage(_mirror(tmp_path))
    with pytest.raises(ConfigError, match=message) as err:
        artifacts.stage_artifacts(_spec("mirror", tmp_path, "mirror"), tmp_path / "out")
    assert "\n" not in str(err.value)
