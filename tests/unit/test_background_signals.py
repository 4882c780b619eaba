"""The product's signal handling when it starts with SIGINT ignored (a background job of a non-interactive
shell: ``cmd &``, nohup, several CI executors) and, for contrast, at its default (a terminal).

Each test starts a child Python that runs bakery's own path, ``cli.errors_to_exit()`` (which every task
uses: ``sigterm_raises`` inside) around ``proc.run`` of a shell that starts a grandchild ``sleep``; the
child's SIGINT disposition is set explicitly (``tests/childsignals.py``), whatever this test run inherited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.proc import pid_alive
from tests.childsignals import sigint_default, sigint_ignored

PROJECT = Path(__file__).resolve().parents[2]

CHILD = """
import signal, sys, time
from pathlib import Path
from invoke.exceptions import Exit
from bakery import cli, proc

print("SIGINT", "ignored" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "handled", flush=True)
try:
    with cli.errors_to_exit():
        if sys.argv[1] == "run":
            proc.run(["sh", "-c", "sleep 300 & echo $! > " + sys.argv[2] + "; wait"], timeout=120)
        else:  # a cleanup block: signals arriving during it are held, then the first that counts is delivered
            with proc.signals_deferred():
                print("CLEANUP", flush=True)
                time.sleep(3)
            print("AFTER CLEANUP", flush=True)
except Exit as exc:
    print("EXIT", exc.message, flush=True)
    sys.exit(exc.code)
"""


def start(tmp_path: Path, preexec: Callable[[], None], *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=PROJECT,
        preexec_fn=preexec,  # noqa: PLW1509 - the child's SIGINT disposition, set before exec
    )


def wait_for_file(path: Path, child: subprocess.Popen[str], timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()):
        assert child.poll() is None, "the child exited early"
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return int(path.read_text())


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def test_sigint_ignored_sigterm_still_stops_the_child_and_exits_143(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleep.pid"
    child = start(tmp_path, sigint_ignored, "run", str(pidfile))
    try:
        sleeper = wait_for_file(pidfile, child)
        child.send_signal(signal.SIGINT)  # ignored, as in a background job: the run goes on
        time.sleep(1)
        assert child.poll() is None
        assert pid_alive(sleeper)
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == 143, output
    assert output.splitlines() == ["SIGINT ignored", "EXIT error: interrupted by SIGTERM; cleaned up"]
    assert wait_dead(sleeper), "the grandchild outlived the SIGTERM"


def test_sigint_at_default_stops_the_child_and_exits_130(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleep.pid"
    child = start(tmp_path, sigint_default, "run", str(pidfile))
    try:
        sleeper = wait_for_file(pidfile, child)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == 130, output
    assert output.splitlines() == ["SIGINT handled", "EXIT interrupted"]
    assert wait_dead(sleeper), "the grandchild outlived the SIGINT"


@pytest.mark.parametrize(
    ("preexec", "code", "last"),
    [
        (sigint_ignored, 143, "EXIT error: interrupted by SIGTERM; cleaned up"),
        (sigint_default, 130, "EXIT interrupted"),
    ],
)
def test_sigint_then_sigterm_during_cleanup(tmp_path: Path, preexec: Callable[[], None], code: int, last: str) -> None:
    """SIGINT, then SIGTERM, while a cleanup runs: the cleanup finishes, then the first signal that is not
    ignored ends the run (with SIGINT ignored that is SIGTERM: it must not be lost behind the ignored SIGINT)."""
    child = start(tmp_path, preexec, "cleanup")
    assert child.stdout is not None
    lines = [child.stdout.readline().strip(), child.stdout.readline().strip()]
    assert lines[1] == "CLEANUP", lines
    child.send_signal(signal.SIGINT)
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGTERM)
    try:
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == code, rest
    assert rest.splitlines() == [last]
