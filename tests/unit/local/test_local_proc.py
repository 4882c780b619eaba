"""bakery.proc: timeouts, output tails, process-group cleanup and signal conversion (real processes)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bakery import proc
from bakery.errors import CommandError, Interrupted, ToolMissingError


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_run_captures_output() -> None:
    result = proc.run(["sh", "-c", "echo out; echo err >&2"], timeout=10)
    assert result.returncode == 0
    assert result.output.splitlines() == ["out", "err"]


def test_run_failure_carries_argv_code_and_tail() -> None:
    with pytest.raises(CommandError) as info:
        proc.run(["sh", "-c", "seq 1 100; exit 3"], timeout=10, what="counting")
    err = info.value
    assert err.returncode == 3
    assert err.argv == ["sh", "-c", "seq 1 100; exit 3"]
    assert err.output_tail.splitlines() == [str(i) for i in range(71, 101)]
    assert str(err).startswith("counting exited 3\n71\n")


def test_run_unchecked_returns_the_code() -> None:
    assert proc.run(["sh", "-c", "exit 4"], timeout=10, check=False).returncode == 4


def test_run_feeds_input() -> None:
    assert proc.run(["cat"], timeout=10, input_text="hello\n").output == "hello\n"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out") as info:
        proc.run(["sh", "-c", "sleep 60 & echo $!; wait"], timeout=1, output_file=out)
    assert time.monotonic() - started < 10
    assert info.value.returncode is None
    grandchild = int(out.read_text().split()[0])
    assert wait_dead(grandchild)


def test_stop_process_escalates_to_sigkill() -> None:
    child = proc.spawn(["sh", "-c", "trap '' TERM; sleep 60"])
    time.sleep(0.3)
    started = time.monotonic()
    proc.stop_process(child, grace=0.5)
    assert child.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_spawned_child_has_its_own_process_group() -> None:
    child = proc.spawn(["sleep", "60"])
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    finally:
        proc.stop_process(child, grace=1)
    assert not proc.pid_alive(child.pid)


def test_sigterm_raises_interrupted() -> None:
    with pytest.raises(Interrupted) as info, proc.sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_during_run_stops_the_child(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(Interrupted), proc.sigterm_raises():
        proc.run(["sh", "-c", "sleep 60 & echo $!; wait"], timeout=30, output_file=out)
    timer.join()
    assert wait_dead(int(out.read_text().split()[0]))


def test_signals_deferred_delivers_after_the_block() -> None:
    steps: list[str] = []
    with pytest.raises(Interrupted), proc.sigterm_raises():
        with proc.signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            steps.append("cleanup finished")
        steps.append("not reached")
    assert steps == ["cleanup finished"]


def test_signals_deferred_redelivers_sigint_as_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), proc.signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)


def test_require_tools_names_the_package() -> None:
    proc.require_tools({"sh": "dash"})
    with pytest.raises(ToolMissingError, match=r"no-such-tool-xyz not found on PATH: .*apt-get install pkg-xyz"):
        proc.require_tools({"no-such-tool-xyz": "pkg-xyz"})


def test_file_tail(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert proc.file_tail(log, 2) == "line 98\nline 99"
    assert proc.file_tail(tmp_path / "missing.log") == ""
