"""The one adapter over python-packer (2016): version, validate, fmt and build of an HCL2 template.

python-packer drives the ``packer`` binary through ``sh``; this module hides its quirks: ``build()`` must
get ``parallel=False`` (Packer >= 1.5 rejects ``-parallel=true``), every call gets ``CHECKPOINT_DISABLE=1``
and a timeout, and failures become :class:`PackerError` carrying the argv, exit code and output tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import packer as python_packer
import sh

from bakery import gcloud
from bakery.errors import Interrupted, PackerError, ToolMissingError

TAIL_LINES = 25
INTERRUPT_GRACE = 120.0  # seconds Packer gets to tear down its VM after SIGINT


@dataclass(frozen=True)
class PackerEvent:
    """One ``-machine-readable`` line: ``timestamp,target,type,data…`` with commas unescaped."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]

    @property
    def message(self) -> str:
        """Human text of a ``ui`` event (``say``/``message``/``error``), else the joined data."""
        if self.type == "ui" and len(self.data) >= 2:
            return self.data[1].replace("\\n", "\n")
        return ",".join(self.data)


def parse_line(line: str) -> PackerEvent | None:
    """Parse one machine-readable line, or ``None`` when it is not one."""
    parts = line.rstrip("\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    data = tuple(p.replace("%!(PACKER_COMMA)", ",") for p in parts[3:])
    return PackerEvent(int(parts[0]), parts[1], parts[2], data)


def artifact_ids(events: list[PackerEvent]) -> list[str]:
    """Artifact ids from ``…,artifact,N,id,<id>`` events."""
    return [e.data[2] for e in events if e.type == "artifact" and len(e.data) >= 3 and e.data[1] == "id"]


@dataclass
class BuildResult:
    """What a finished build left: the artifact ids and every event seen."""

    artifact_ids: list[str]
    events: list[PackerEvent] = field(default_factory=list)


def packer_path() -> str:
    """Path of the ``packer`` binary or a one-line ToolMissingError."""
    path = shutil.which("packer")
    if path is None:
        raise ToolMissingError("packer is not installed: run `apt-get install packer` (Debian 12 ships 1.6.6)")
    return path


def _env() -> dict[str, str]:
    return {**gcloud.credentials_env(os.environ), "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}


class Packer:
    """Runs ``packer`` on one rendered template from inside its build directory."""

    def __init__(self, template: Path, var_file: Path | None = None, variables: Mapping[str, str] | None = None):
        self.template = template
        self.var_file = var_file
        self.variables = dict(variables or {})
        self.exec_path = packer_path()

    def _client(self, **sh_kwargs: Any) -> Any:
        # python-packer resolves the template against our cwd before Packer runs in the build dir.
        client = python_packer.Packer(
            str(self.template),
            vars=self.variables,
            var_file=self.var_file.name if self.var_file else None,
            exec_path=self.exec_path,
            out_iter=sh_kwargs.pop("out_iter", None),
            err_iter=sh_kwargs.pop("err_iter", None),
        )
        client.packerfile = self.template.name
        client.packer = client.packer.bake(_env=_env(), _cwd=str(self.template.parent), **sh_kwargs)
        return client

    def _argv(self, *args: str) -> list[str]:
        argv = [self.exec_path, *args]
        for key, value in self.variables.items():
            argv += ["-var", f"{key}={value}"]
        if self.var_file:
            argv.append(f"-var-file={self.var_file.name}")
        return [*argv, self.template.name]

    def validate(self, timeout: float) -> None:
        """``packer validate``; raise PackerError with Packer's own message on failure."""
        argv = self._argv("validate")
        client = self._client(_timeout=timeout)
        # python-packer's validate() swallows the error text; run its baked command so sh raises instead.
        client.packer_cmd = client.packer.validate
        client._append_base_arguments()
        client._add_opt(client.packerfile)
        try:
            client.packer_cmd()
        except sh.ErrorReturnCode as exc:
            raise PackerError(argv, exc.exit_code, _tail(exc.stdout + exc.stderr), "packer validate") from None
        except sh.TimeoutException:
            raise PackerError(argv, None, "", f"packer validate (after {timeout:.0f}s)") from None

    def init(self, timeout: float) -> None:
        """``packer init`` (Packer >= 1.7): install the plugins the template pins into Packer's plugin
        directory (``PACKER_PLUGIN_PATH``, else Packer's default). Plugins already there are kept, so a
        second run changes nothing and needs no network."""
        self._run(
            "init (installs the template's pinned plugins: it needs HashiCorp's release site, which Packer "
            "fetches from since 1.14, or the plugins already in PACKER_PLUGIN_PATH)",
            ("init", self.template.name),
            timeout,
        )

    def fmt_check(self, timeout: float) -> None:
        """``packer fmt -check`` on the template: fails when the rendered HCL is not canonically formatted."""
        self._run("fmt -check", ("fmt", "-check", "-diff", self.template.name), timeout)

    def _run(self, what: str, args: tuple[str, ...], timeout: float) -> None:
        """One plain ``packer`` subcommand in the template's directory; PackerError with its output tail."""
        argv = [self.exec_path, *args]
        try:
            sh.Command(self.exec_path)(*args, _env=_env(), _cwd=str(self.template.parent), _timeout=timeout)
        except sh.ErrorReturnCode as exc:
            raise PackerError(argv, exc.exit_code, _tail(exc.stdout + exc.stderr), f"packer {what}") from None
        except sh.TimeoutException:
            raise PackerError(argv, None, "", f"packer {what} (after {timeout:.0f}s)") from None

    def build(
        self,
        timeout: float,
        on_event: Callable[[PackerEvent], None] | None = None,
        force: bool = True,
    ) -> BuildResult:
        """``packer build -machine-readable`` with streamed events; SIGINT/SIGTERM stop Packer cleanly."""
        events: list[PackerEvent] = []
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def out(line: str) -> None:
            event = parse_line(line)
            if event is None:
                tail.append(line.rstrip("\n"))
                return
            events.append(event)
            if event.type == "ui":
                tail.append(event.message.rstrip("\n"))
            if on_event is not None:
                on_event(event)

        sink = _LineSink(out)
        client = self._client(out_iter=sink, err_iter=sink, _bg=True, _tty_out=False)
        argv = self._argv("build", "-machine-readable", *(["-force"] if force else []))
        running = client.build(parallel=False, machine_readable=True, force=force)
        with _stop_on_signal_or_timeout(running.process.pid, timeout) as stop:
            try:
                running.wait()
            except sh.ErrorReturnCode as exc:
                if stop.signals:
                    raise Interrupted(stop.signals[0]) from None
                if stop.timed_out:
                    raise PackerError(argv, None, "\n".join(tail), f"packer build (after {timeout:.0f}s)") from None
                raise PackerError(argv, exc.exit_code, "\n".join(tail), "packer build") from None
            if stop.signals:
                raise Interrupted(stop.signals[0])
        return BuildResult(artifact_ids(events), events)


class _LineSink:
    """File-like sink for sh: sh 1.11 inspects callable handlers with ``inspect.getargspec``, which
    Python 3.11 removed, so output is fed through ``write`` and split into lines here."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, chunk: bytes | str) -> None:
        text = chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._on_line(line)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                line, self._partial = self._partial, ""
                self._on_line(line)


def _tail(output: bytes) -> str:
    return "\n".join(output.decode(errors="replace").splitlines()[-TAIL_LINES:])


def detect_version(exec_path: str | None = None) -> tuple[int, int, int]:
    """Parse ``packer version`` (``Packer v1.6.6``) into a tuple."""
    path = exec_path or packer_path()
    client = python_packer.Packer.__new__(python_packer.Packer)
    client.packer = sh.Command(path).bake(_env=_env(), _timeout=30)
    text = str(client.version())
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise PackerError([path, "version"], 0, text, "packer version gave no version")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


@dataclass
class _Stop:
    signals: list[int] = field(default_factory=list)
    timed_out: bool = False
    halting: bool = False


@contextlib.contextmanager
def _stop_on_signal_or_timeout(pid: int, timeout: float) -> Iterator[_Stop]:
    """While active, SIGINT/SIGTERM and the timeout stop Packer's whole process group.

    Packer runs in its own session (sh starts every command with setsid), so a terminal Ctrl-C reaches us
    first; we forward SIGINT, on which Packer tears its VM down. If the group is still there
    ``INTERRUPT_GRACE`` seconds later it is killed (QEMU included: it is in Packer's group).
    """
    stop = _Stop()
    killer = threading.Timer(INTERRUPT_GRACE, _killpg, args=(pid, signal.SIGKILL))
    killer.daemon = True

    def halt() -> None:
        if not stop.halting:
            stop.halting = True
            killer.start()
        _killpg(pid, signal.SIGINT)

    def on_timeout() -> None:
        stop.timed_out = True
        halt()

    def handler(signum: int, _frame: Any) -> None:
        stop.signals.append(signum)
        halt()

    deadline = threading.Timer(timeout, on_timeout)
    deadline.daemon = True
    deadline.start()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        deadline.cancel()
        killer.cancel()
        for signum, old in previous.items():
            signal.signal(signum, old)


def _killpg(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
