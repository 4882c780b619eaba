"""Run external commands with a timeout, and stop them (with their process group) on every exit path.

Every child runs in its own session, so a terminal Ctrl-C reaches only us; we then stop the child
ourselves (SIGTERM to its group, a grace period, SIGKILL). ``sigterm_raises`` turns SIGTERM into
``Interrupted`` so ``finally`` blocks run; ``signals_deferred`` keeps a second signal from cutting a
cleanup short.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bakery.errors import CommandError, Interrupted, ToolMissingError

TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Completed:
    """A finished command: its argv, exit code and combined stdout+stderr."""

    argv: list[str]
    returncode: int
    output: str

    @property
    def tail(self) -> str:
        return tail(self.output)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def file_tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a (possibly large or missing) log file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return tail(data.decode("utf-8", "replace"), lines)


def require_tools(tools: Mapping[str, str]) -> None:
    """Raise ToolMissingError for the first program not on PATH; ``tools`` maps program -> apt package."""
    for program, package in tools.items():
        if shutil.which(program) is None:
            raise ToolMissingError(f"{program} not found on PATH: install it with `apt-get install {package}`")


class Deadline:
    """An overall time budget shared by several steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds remaining (at least 0.1, so a step that starts late times out promptly)."""
        return max(0.1, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to SIGKILL this child if the thread that spawned it dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    *,
    output: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output appended to ``output`` or dropped."""
    full_env = {**os.environ, **env} if env else None
    with output.open("ab") if output else open(os.devnull, "wb") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
        )


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, grace: float = 10.0) -> None:
    """SIGTERM the process group ``proc`` leads, wait up to ``grace`` s, then SIGKILL it; reap ``proc``."""
    with signals_deferred():
        _signal_group(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        _signal_group(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):  # a process in D state can outlive SIGKILL for a while
            proc.wait(timeout=grace)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    what: str = "",
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output_file: Path | None = None,
) -> Completed:
    """Run ``argv`` to completion within ``timeout`` seconds.

    Output (stdout+stderr) is captured, or written to ``output_file`` if given. A timeout raises
    CommandError (returncode None); with ``check`` a non-zero exit raises CommandError with the output
    tail. On timeout or any exception (KeyboardInterrupt, Interrupted) the child's process group is
    stopped before the exception propagates.
    """
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    out_fh = output_file.open("w") if output_file else None
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=out_fh if out_fh else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            captured, _ = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=5.0)
            raise CommandError(args, None, _output_tail(proc, output_file), what=what) from None
        except BaseException:
            stop_process(proc, grace=5.0)
            raise
    finally:
        if out_fh:
            out_fh.close()
    output = captured if captured is not None else (output_file.read_text(errors="replace") if output_file else "")
    result = Completed(args, proc.returncode, output)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, result.tail, what=what)
    return result


def _output_tail(proc: subprocess.Popen[str], output_file: Path | None) -> str:
    if output_file:
        return file_tail(output_file)
    try:
        captured, _ = proc.communicate(timeout=1)
    except (subprocess.TimeoutExpired, ValueError):
        return ""
    return tail(captured or "")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, the first SIGTERM raises ``Interrupted(SIGTERM)`` (exit 143) so cleanup runs.

    Later SIGTERMs are ignored while that exception unwinds. SIGINT stays Python's KeyboardInterrupt.
    A no-op outside the main thread (signal handlers can only be set there).
    """
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during a cleanup block, then re-deliver the first one that arrived.

    A signal that is ignored stays ignored (a run started in the background by a non-interactive shell
    has SIGINT ignored): recording it would re-deliver only that one, to be ignored, and lose a SIGTERM
    that came after it. Nests; a no-op outside the main thread.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {
        signum: signal.signal(signum, record)
        for signum in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if pending:
        # Deliver it again now that the previous handlers are back: KeyboardInterrupt, Interrupted,
        # ignored, or (SIG_DFL) terminate, just as if it had arrived after the block.
        signal.raise_signal(pending[0])
