"""Fixtures for the local target's real-VM tests: the cached base image and a tiny testinfra suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.local.baseimage import BaseImage
from tests.support import cached_base_image

SMOKE_SUITE = """
import os


def test_sshd_runs(host):
    assert host.service("ssh").is_running


def test_build_user_has_passwordless_sudo(host):
    with host.sudo():
        assert host.check_output("id -u") == "0"


def test_host_keys_were_made_at_first_boot(host):
    with host.sudo():
        log = host.check_output("journalctl -b -u ssh-host-keys.service --no-pager")
    # The base's unit runs `ssh-keygen -q -t ed25519` (quiet): it ran, rather than being skipped for keys
    # already present on the disk, and left its key.
    assert "Finished ssh-host-keys.service" in log and "unmet condition" not in log, log
    assert host.file("/etc/ssh/ssh_host_ed25519_key").exists


def test_deliberately_failing(host):
    assert host.file("/etc/no-such-file").exists


def test_slow_only_when_asked(host):
    if os.environ.get("SMOKE_SLOW"):
        host.run("sleep 120")
"""


@pytest.fixture(scope="session")
def base_image() -> BaseImage:
    return cached_base_image()


@pytest.fixture
def smoke_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_smoke.py").write_text(SMOKE_SUITE)
    return suite
