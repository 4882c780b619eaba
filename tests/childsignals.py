"""Explicit SIGINT dispositions for the child processes tests signal (``preexec_fn=`` of ``subprocess.Popen``).

A test run started in the background by a non-interactive shell (``cmd &``, nohup, several CI executors)
inherits SIGINT *ignored*, and an ignored disposition survives ``exec``. ``restore_signals=True`` does not
reset it: it restores only SIGPIPE, SIGXFZ and SIGXFSZ (CPython 3.11 ``Lib/subprocess.py``, ``_posix_spawn``:
"See _Py_RestoreSignals() in Python/pylifecycle.c"; seen here as ``SigIgn: 0000000000000002`` in such a
child's ``/proc/self/status``). So a test that sends SIGINT to a child sets the child's disposition itself,
in the child before ``exec``; Python installs its KeyboardInterrupt handler at start-up only for SIG_DFL.
"""

from __future__ import annotations

import signal


def sigint_default() -> None:  # pragma: no cover - runs in the forked child
    """What a terminal gives: SIGINT at its default, so a Python child raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigint_ignored() -> None:  # pragma: no cover - runs in the forked child
    """What a background job of a non-interactive shell gets: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
