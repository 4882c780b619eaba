"""Shared pytest options: slow (real VMs, mmdebstrap) and e2e (local bake) tests are opt-in."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator

import pytest

# Never let google-auth probe the GCE metadata server (an off-host address) from a test.
os.environ.setdefault("NO_GCE_CHECK", "True")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests that boot VMs or build root filesystems")
    parser.addoption("--run-e2e", action="store_true", help="run the local end-to-end bake")


def pytest_sessionstart(session: pytest.Session) -> None:
    """With BAKERY_REQUIRE_HOST_TOOLS=1 (scripts/test.sh), stop before any test when a tool that bootstrap
    installs is missing: on a bootstrapped machine no test may skip for one (scripts/host-tools.txt)."""
    if os.environ.get("BAKERY_REQUIRE_HOST_TOOLS") != "1":
        return
    from tests.hosttools import load_table

    tools = [tool for tool in load_table() if tool.kind != "optional" and tool.command != "-"]
    missing = [tool for tool in tools if shutil.which(tool.command) is None]
    if missing:
        commands = ", ".join(tool.command for tool in missing)
        packages = " ".join(sorted({tool.package for tool in missing if tool.kind == "apt"}))
        fix = f"run scripts/bootstrap.sh ({f'apt-get install {packages}' if packages else 'pip install -e .[dev]'})"
        if all(shutil.which(tool.command, path="/usr/sbin:/sbin") for tool in missing):
            fix = "they are installed in /usr/sbin: put /usr/sbin and /sbin on PATH"
        pytest.exit(f"BAKERY_REQUIRE_HOST_TOOLS=1: not on PATH: {commands}: {fix}", 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, option in (("slow", "--run-slow"), ("e2e", "--run-e2e")):
            if marker in item.keywords and not config.getoption(option):
                item.add_marker(pytest.mark.skip(reason=f"{marker} test: pass {option} to run it"))


@pytest.fixture(autouse=True, scope="session")
def sigint_as_at_a_terminal() -> Iterator[None]:
    """Tests that send SIGINT expect what a terminal gives: Python's KeyboardInterrupt here, SIG_DFL in the
    children. A run started in the background by a non-interactive shell (``cmd &``, nohup, several CI
    executors) inherits SIGINT *ignored*, and an ignored disposition is inherited across exec; so set it
    here (a handler is reset to SIG_DFL in every child this process starts). A test that signals a child
    also sets the child's disposition itself (``preexec_fn=`` from ``tests/childsignals.py``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
