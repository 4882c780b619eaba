"""The image test suite: testinfra checks of a booted image (local QEMU or GCE) over SSH.

    python -m pytest tests/image --hosts=ssh://NAME --ssh-config=FILE \
        --expectations=build/<env>/<variant>/expectations.json [--injected-pubkey=KEY.pub ...] [--sudo] \
        [--identity=build/runs/<image>/image-identity.json]

``expectations.json`` (rendered by ``bakery.imagefiles.expectations``) says what this image must carry.
``--injected-pubkey`` names public keys the test harness itself put on the VM to log in (the only keys
allowed in the build user's or root's authorized_keys). ``--identity`` names the bake's
image-identity.json (bakery/identity.py): the name, variant and input fingerprint the image must carry.
Checks that need the real osquery or Fluentd binaries are skipped on stand-in images; checks that need a
running systemd are skipped when /run/systemd/system is absent (an image root reached without booting
it, as in the suite's own tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bakery image suite")
    group.addoption("--expectations", help="build/<env>/<variant>/expectations.json of the image under test")
    group.addoption(
        "--injected-pubkey",
        action="append",
        default=[],
        help="public key file the harness injected to log in (repeatable)",
    )
    group.addoption(
        "--identity",
        help="image-identity.json of the bake (bakery/identity.py): the identity the image must carry",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --expectations (e.g. a plain ``pytest tests``) the suite has no target: skip it."""
    if config.getoption("--expectations"):
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="image suite: needs --hosts and --expectations (runs against a booted image)")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def _load(config: pytest.Config) -> dict[str, Any]:
    path = config.getoption("--expectations")
    if not path:
        raise pytest.UsageError("tests/image needs --expectations=build/<env>/<variant>/expectations.json")
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--expectations={path}: cannot read it: {exc}") from None
    return data


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize over what the expectations list (files, units, packages, seal items)."""
    if not metafunc.config.getoption("--expectations"):
        return
    expect = _load(metafunc.config)
    params: dict[str, list[Any]] = {
        "manifest_file": expect["files"],
        "unit": expect["services_enabled"],
        "package": sorted(expect["packages"]),
        "seal_item": [i for i in expect["seal"]["items"] if i.split(" ", 1)[0] in ("remove", "remove-keys")],
    }
    for name, values in params.items():
        if name in metafunc.fixturenames:
            ids = [v["dest"] if isinstance(v, dict) else str(v) for v in values]
            metafunc.parametrize(name, values, ids=ids)


@pytest.fixture(scope="session")
def expect(pytestconfig: pytest.Config) -> dict[str, Any]:
    return _load(pytestconfig)


@pytest.fixture(scope="session")
def real(expect: dict[str, Any]) -> bool:
    """True for images with the vendors' binaries (upstream or mirror), False for stand-in images."""
    return bool(expect["real_binaries"])


@pytest.fixture
def needs_real_osquery(real: bool) -> None:
    if not real:
        pytest.skip("stand-in image: needs the real osquery")


@pytest.fixture
def needs_real_fluentd(real: bool) -> None:
    if not real:
        pytest.skip("stand-in image: needs the real Fluentd")


@pytest.fixture(scope="module")
def booted(host: Any) -> bool:
    return bool(host.file("/run/systemd/system").is_directory)


@pytest.fixture
def needs_booted(booted: bool) -> None:
    if not booted:
        pytest.skip("no running systemd (/run/systemd/system absent): an image root, not a booted VM")


@pytest.fixture(scope="module")
def seal(host: Any, expect: dict[str, Any]) -> dict[str, Any]:
    marker = host.file(expect["seal"]["marker"])
    assert marker.exists, f"{expect['seal']['marker']} is missing: the image was never sealed"
    data: dict[str, Any] = json.loads(marker.content_string)
    return data


@pytest.fixture(scope="session")
def identity(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The bake's image identity (``--identity``, written by the pipeline before the test stage)."""
    path = pytestconfig.getoption("--identity")
    if not path:
        pytest.skip("no --identity: the bake passes the image identity it gave Packer (bakery/identity.py)")
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--identity={path}: cannot read it: {exc}") from None
    return data


@pytest.fixture(scope="session")
def injected_keys(pytestconfig: pytest.Config) -> set[str]:
    """'type base64' of every public key the harness injected."""
    keys = set()
    for path in pytestconfig.getoption("--injected-pubkey"):
        for line in Path(path).read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2:
                keys.add(" ".join(fields[:2]))
    return keys
