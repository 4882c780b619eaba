"""The upstream path offline: 20-repos.sh trusts a vendor key only with the expected fingerprint, then
30-packages.sh installs the pinned versions from the (signed) repositories and holds them.

The "vendor repositories" are local, signed flat repositories inside the root (file: URIs) holding
stand-in packages rebuilt under the upstream version numbers; the keys are fetched from file: URLs.
No network is used (the root's Debian sources are removed first). Not marked slow: ~3 s with the root cached.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import harness
import pytest
from harness import Root

from bakery import cli, render, standin
from bakery.config import BuildSpec
from tests.support import build_in


def _gpg(home: Path, *args: str) -> str:
    return harness.run(["gpg", "--homedir", str(home), "--batch", *args], timeout=120).stdout


def _new_key(home: Path, name: str) -> str:
    home.mkdir(mode=0o700)
    _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@localhost>", "ed25519", "sign", "never")
    fprs = [
        line.split(":")[9] for line in _gpg(home, "--with-colons", "--list-keys").splitlines() if line.startswith("fpr")
    ]
    return fprs[0]


def _repo(root: Root, home: Path, base: str, *, suite: str, component: str, debs: list[Path]) -> None:
    """A signed repository at ``base`` in the root: dists/SUITE/{InRelease,COMPONENT/binary-amd64/Packages}."""
    top = root.file(base)
    pool = top / "pool"
    pool.mkdir(parents=True)
    for deb in debs:
        (pool / deb.name).write_bytes(deb.read_bytes())
    packages = harness.run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], cwd=top).stdout
    rel = f"{component}/binary-amd64/Packages"
    dist = top / "dists" / suite
    (dist / rel).parent.mkdir(parents=True)
    (dist / rel).write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    (dist / "Release").write_text(
        f"Suite: {suite}\nCodename: {suite}\nArchitectures: amd64\nComponents: {component}\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 UTC\nSHA256:\n {digest} {len(packages.encode())} {rel}\n"
    )
    _gpg(home, "--yes", "--clearsign", "--output", str(dist / "InRelease"), str(dist / "Release"))


def _upstream_spec(tmp: Path) -> BuildSpec:
    spec = cli.project_settings().specs("gstg", "debian-12")[0]
    config = spec.config
    osquery = config.osquery.model_copy(
        update={"repo": config.osquery.repo.model_copy(update={"url": "file:/srv/vendor/osquery"})}
    )
    fluentd = config.fluentd.model_copy(update={"repo_url": "file:/srv/vendor/fluent"})
    config = config.model_copy(update={"osquery": osquery, "fluentd": fluentd})
    return build_in(replace(spec, config=config), tmp)


def _debs(tmp: Path, spec: BuildSpec, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    out = {}
    for package, version in (
        ("osquery", spec.config.osquery.package_version),
        ("fluent-package", spec.config.fluentd.version),
    ):
        monkeypatch.setattr(standin, "STANDIN_VERSION", version)
        (tmp / package).mkdir()
        out[package] = standin.build(package, tmp / package)
    return out


def test_upstream_keys_checked_then_pinned_packages_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _upstream_spec(tmp_path / "project")
    build = harness.rendered(spec)
    root = harness.fresh_root(tmp_path / "root")
    for sources in (root.file("/etc/apt/sources.list"), root.file("/etc/apt/sources.list.d/debian.sources")):
        sources.unlink(missing_ok=True)  # an offline builder: nothing but the vendor repositories

    vendor, impostor = tmp_path / "vendor-gnupg", tmp_path / "impostor-gnupg"
    fingerprint, wrong = _new_key(vendor, "vendor"), _new_key(impostor, "impostor")
    keys = root.file("/srv/keys")
    keys.mkdir(parents=True)
    (keys / "vendor.asc").write_text(_gpg(vendor, "--armor", "--export", fingerprint))
    (keys / "impostor.asc").write_text(_gpg(impostor, "--armor", "--export", wrong))
    debs = _debs(tmp_path, spec, monkeypatch)
    _repo(root, vendor, "/srv/vendor/osquery", suite="deb", component="main", debs=[debs["osquery"]])
    _repo(
        root,
        vendor,
        "/srv/vendor/fluent/debian/bookworm",
        suite="bookworm",
        component="contrib",
        debs=[debs["fluent-package"]],
    )

    env = {
        **render.provision_env(spec),
        "OSQUERY_KEY_FINGERPRINT": fingerprint,
        "FLUENT_KEY_FINGERPRINT": fingerprint,
        "FLUENT_KEY_URL": "file:///srv/keys/vendor.asc",
    }
    harness.upload(root, build)
    prereqs = root.chroot(["bash", "/tmp/bakery-provision/10-prereqs.sh"], env=env)
    assert "apt" not in prereqs.stdout + prereqs.stderr  # everything present: no apt work

    refused = root.chroot(
        ["bash", "/tmp/bakery-provision/20-repos.sh"],
        env={**env, "OSQUERY_KEY_URL": "file:///srv/keys/impostor.asc"},
        check=False,
    )
    assert refused.returncode != 0
    assert f"is not the expected {fingerprint}: refusing it" in refused.stderr and wrong in refused.stderr
    assert not root.file("/etc/apt/keyrings/osquery.asc").exists()
    assert not root.file("/etc/apt/sources.list.d/osquery.sources").exists()

    env["OSQUERY_KEY_URL"] = "file:///srv/keys/vendor.asc"
    for script in ("20-repos.sh", "30-packages.sh"):
        root.chroot(["bash", f"/tmp/bakery-provision/{script}"], env=env)
    status = root.chroot(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "osquery", "fluent-package"]).stdout
    assert sorted(status.splitlines()) == ["fluent-package 6.0.0-1", "osquery 5.23.1-1.linux"]
    assert root.chroot(["apt-mark", "showhold"]).stdout.split() == ["fluent-package", "osquery"]
    sources = root.file("/etc/apt/sources.list.d/osquery.sources").read_text()
    assert "Signed-By: /etc/apt/keyrings/osquery.asc" in sources
    shown = _gpg(vendor, "--show-keys", "--with-colons", str(root.file("/etc/apt/keyrings/osquery.asc")))
    assert f"fpr:::::::::{fingerprint}:" in shown
    assert os.stat(root.file("/etc/apt/keyrings/fluent.asc")).st_mode & 0o777 == 0o644


def test_fluent_package_key_passes_the_provisioning_fingerprint_check(tmp_path: Path) -> None:
    """20-repos.sh's own install_key, run verbatim on the vendor's key file (bakery/data/keys, from
    fluent/fluent-package-builder) with the configured fingerprint: accepted; on another vendor's key
    (the test's own) and with the old td-agent fingerprint: refused, and nothing is written."""
    spec = _upstream_spec(tmp_path / "project")
    root = harness.fresh_root(tmp_path / "root")
    keys = root.file("/srv/keys")
    keys.mkdir(parents=True)
    (keys / "fluent-package.pub").write_bytes(
        (render.PROJECT_ROOT / "bakery/data/keys/fluent-package.pub").read_bytes()
    )
    other = tmp_path / "other-gnupg"
    (keys / "other.asc").write_text(_gpg(other, "--armor", "--export", _new_key(other, "other")))
    script = (render.PROJECT_ROOT / "provision/20-repos.sh").read_text()
    function = script[script.index("install_key() {") : script.index("\n}\n", script.index("install_key() {")) + 3]
    driver = f'set -o errexit -o nounset -o pipefail\nwork=$(mktemp -d)\n{function}install_key fluent "$1" "$2"\n'

    def install(url: str, fingerprint: str) -> subprocess.CompletedProcess[str]:
        return root.chroot(["bash", "-c", driver, "install_key", url, fingerprint], check=False)

    configured = spec.config.fluentd.fingerprint
    assert configured == "B40948B6A3B80E90F40E841F977D7A0943FA320E"
    refused = install("file:///srv/keys/other.asc", configured)
    assert refused.returncode != 0 and f"is not the expected {configured}: refusing it" in refused.stderr
    old = install("file:///srv/keys/fluent-package.pub", "BEE682289B2217F45AF4CC3F901F9177AB97ACBE")
    assert old.returncode != 0 and f"key fingerprint '{configured}' is not the expected" in old.stderr
    assert not root.file("/etc/apt/keyrings/fluent.asc").exists()
    accepted = install("file:///srv/keys/fluent-package.pub", configured)
    assert accepted.returncode == 0, accepted.stderr
    shown = _gpg(other, "--show-keys", "--with-colons", str(root.file("/etc/apt/keyrings/fluent.asc")))
    assert f"fpr:::::::::{configured}:" in shown
