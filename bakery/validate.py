"""Render and check every environment × variant: ``packer validate``, ``packer fmt -check`` and the lint.

``validate_all`` runs the Packer checks of several templates at once (one worker per CPU): rendering,
the lint and the results stay in spec order, so output and the error raised (the first failing spec's)
do not depend on which check finishes first. On any exit path (error, Ctrl-C) pending checks are
cancelled and running ``packer`` processes are stopped before ``validate_all`` returns.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bakery import imagefiles, lint, proc, render
from bakery.config import BuildSpec, Settings, Timeouts
from bakery.errors import LintError, PackerError
from bakery.packer import Packer, detect_version, packer_path
from bakery.ssh import generate_key

# `packer init` installs plugins into one shared directory: never two at once.
_INIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Checked:
    """One validated build directory."""

    rendered: render.Rendered
    seconds: float


def _throwaway_key(directory: Path) -> Path:
    """An SSH key that exists only so Packer's qemu Prepare step can parse one (never used to connect)."""
    key = directory / "validate_ed25519"
    if not key.exists():
        generate_key(key, "bakery-validate")
    return key


def lint_rendered(rendered: render.Rendered) -> None:
    """Lint what would be baked (osquery config and packs with the flags actually baked, Fluentd, rsyslog)."""
    spec = rendered.spec
    findings = lint.lint_tree(
        rendered.directory / "files", osquery_version=spec.config.osquery.version, flags=imagefiles.flags(spec)
    )
    if lint.exit_code(findings, strict=False):
        where = f"{spec.env_name}/{spec.variant_name}"
        raise LintError(f"lint found errors in {where}, nothing was baked:\n{lint.format_text(findings)}")


def packer_checks(rendered: render.Rendered, timeouts: Timeouts, key: Path | None) -> None:
    """``packer init`` (Packer >= 1.7: installs the pinned plugins; one at a time), ``packer validate`` with
    placeholder runtime values (``key``: the throwaway SSH key a local template needs), ``packer fmt -check``."""
    variables = render.runtime_vars(rendered.spec)
    if rendered.spec.env.target == "local":
        if key is None:
            raise ValueError("a local template needs the throwaway SSH key")
        variables["ssh_private_key_file"] = str(key)
    client = Packer(rendered.template, rendered.var_file, variables)
    if rendered.needs_init:
        with _INIT_LOCK:
            client.init(timeouts.packer_init)
    client.validate(timeouts.packer_validate)
    client.fmt_check(timeouts.packer_validate)


def validate_rendered(rendered: render.Rendered, timeouts: Timeouts, key_dir: Path) -> None:
    """``packer init`` (Packer >= 1.7: installs the pinned plugins; a bake always validates before it
    builds), ``packer validate`` with placeholder runtime values, ``packer fmt -check``, then the lint."""
    key = _throwaway_key(key_dir) if rendered.spec.env.target == "local" else None
    packer_checks(rendered, timeouts, key)
    lint_rendered(rendered)


def workers(count: int) -> int:
    """Parallel Packer checks: one per CPU this process may run on, at most one per template."""
    return max(1, min(count, len(os.sched_getaffinity(0))))


def _check_budget(rendered: render.Rendered, timeouts: Timeouts) -> float:
    """The longest one template's checks can take (each Packer call has its own timeout) plus slack."""
    return (timeouts.packer_init if rendered.needs_init else 0.0) + 2 * timeouts.packer_validate + 30.0


def _timed(check: Callable[[], None]) -> float:
    started = time.monotonic()
    check()
    return time.monotonic() - started


def validate_all(
    settings: Settings,
    specs: list[BuildSpec] | None = None,
    on_done: Callable[[Checked], None] | None = None,
    jobs: int | None = None,
) -> list[Checked]:
    """Render and validate ``specs`` (default: every environment × variant) with the real Packer.

    Templates are rendered and linted in order in this thread while their Packer checks run in a pool of
    ``jobs`` workers (default: one per CPU); ``on_done`` sees the results in spec order and the first
    failing spec's error (naming its template) is the one raised."""
    version = detect_version()
    exe = packer_path()
    timeouts = settings.config.timeouts
    todo = specs if specs is not None else settings.all_specs()
    results: list[Checked] = []
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        key = _throwaway_key(Path(tmp)) if any(s.env.target == "local" for s in todo) else None
        pool = ThreadPoolExecutor(max_workers=jobs or workers(len(todo)), thread_name_prefix="packer-check")
        before = _session_children()
        try:
            started: list[tuple[render.Rendered, float, Future[float]]] = []
            for spec in todo:
                start = time.monotonic()
                rendered = render.render(spec, version)
                render_seconds = time.monotonic() - start
                started.append(
                    (rendered, render_seconds, pool.submit(_timed, partial(packer_checks, rendered, timeouts, key)))
                )
            for rendered, render_seconds, future in started:
                try:
                    check_seconds = future.result(timeout=_check_budget(rendered, timeouts))
                except PackerError as exc:  # which of the templates checked at once it was
                    exc.message = f"{rendered.template}: {exc.message}"
                    raise
                except FutureTimeout:
                    where = f"{rendered.spec.env_name}/{rendered.spec.variant_name}"
                    raise PackerError(
                        [exe], None, "", f"packer checks of {where} (after {_check_budget(rendered, timeouts):.0f}s)"
                    ) from None
                start = time.monotonic()
                lint_rendered(rendered)
                checked = Checked(rendered, render_seconds + check_seconds + time.monotonic() - start)
                results.append(checked)
                if on_done:
                    on_done(checked)
        except BaseException:
            with proc.signals_deferred():
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_children(before)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _session_children() -> set[int]:
    """PIDs of this process's direct children that lead their own session: how sh starts every Packer
    call (``os.setsid`` in sh 1.11's child), so with the ones present before the pool started taken away,
    exactly the pool's running Packer processes (whatever binary ``packer`` is)."""
    me, pids = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if fields[0] != "Z" and int(fields[1]) == me and int(fields[3]) == pid:  # state, ppid, session
                pids.add(pid)
    return pids


def _stop_children(before: set[int], grace: float = 5.0) -> None:
    """Stop the Packer processes started since ``before`` with their process groups (Packer's plugin
    processes go too): SIGTERM, up to ``grace`` s, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_children() - before:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _session_children() - before:
            time.sleep(0.05)
