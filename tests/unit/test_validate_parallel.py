"""``validate_all`` checks templates in parallel: order, errors, timeouts and Ctrl-C.

Scheduling is what is tested here, so Packer is a TEST DOUBLE: a shell script named ``packer`` (not
HashiCorp's Packer) that answers ``version`` like Debian's 1.6.6 and, for ``validate``/``fmt``, sleeps
and fails as the test says for the template's directory, logging start and end times. The real Packer
runs the same code path in tests/integration/test_validate_all.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bakery import cli, validate
from bakery.config import BuildSpec, Settings, Timeouts
from bakery.errors import PackerError
from bakery.proc import pid_alive
from tests.support import build_in

ROOT = Path(__file__).resolve().parents[2]

DOUBLE = r"""#!/bin/sh
# TEST DOUBLE of packer (tests/unit/test_validate_parallel.py); not HashiCorp's Packer.
[ "$1" = version ] && { echo "Packer v1.6.6"; exit 0; }
name=$(basename "$(dirname "$PWD")")-$(basename "$PWD")
echo "$$" >> "$PACKER_DOUBLE_DIR/pids"
echo "start $1 $name $(date +%s.%N)" >> "$PACKER_DOUBLE_DIR/log"
delay=$(cat "$PACKER_DOUBLE_DIR/delay-$1-$name" 2>/dev/null || echo 0)
# A hung Packer: this very process sleeps (whoever stops it stops the sleep).
[ "$delay" -ge 10 ] 2>/dev/null && exec sleep "$delay"
sleep "$delay"
echo "end $1 $name $(date +%s.%N)" >> "$PACKER_DOUBLE_DIR/log"
if [ -e "$PACKER_DOUBLE_DIR/fail-$1-$name" ]; then
  echo "Error: double says $name is broken" >&2
  exit 1
fi
"""


@pytest.fixture
def double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "double"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "packer").write_text(DOUBLE)
    (bin_dir / "packer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PACKER_DOUBLE_DIR", str(state))
    return state


@pytest.fixture(scope="module")
def project() -> Settings:
    return cli.project_settings()


def specs_in(settings: Settings, tmp_path: Path) -> list[BuildSpec]:
    return [build_in(spec, tmp_path / "build") for spec in settings.all_specs()]


def name(spec: BuildSpec) -> str:
    return f"{spec.env_name}-{spec.variant_name}"


def with_timeouts(settings: Settings, timeouts: Timeouts) -> Settings:
    return replace(settings, config=settings.config.model_copy(update={"timeouts": timeouts}))


def intervals(log: Path) -> dict[str, tuple[float, float]]:
    """``validate`` start/end time per template from the double's log."""
    times: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        event, command, template, stamp = line.split()
        if command == "validate":
            times.setdefault(template, {})[event] = float(stamp)
    return {t: (v["start"], v["end"]) for t, v in times.items()}


def test_results_follow_spec_order_while_checks_overlap(double: Path, project: Settings, tmp_path: Path) -> None:
    specs = specs_in(project, tmp_path)
    assert len(specs) >= 3
    # The first template is the slowest: it finishes last, yet is reported first.
    (double / f"delay-validate-{name(specs[0])}").write_text("1.5\n")
    seen: list[str] = []
    results = validate.validate_all(project, specs, on_done=lambda c: seen.append(name(c.rendered.spec)), jobs=3)
    assert seen == [name(s) for s in specs]
    assert [name(c.rendered.spec) for c in results] == seen
    spans = intervals(double / "log")
    first_end = spans[name(specs[0])][1]
    assert spans[name(specs[1])][1] < first_end, "the second template waited for the first: not parallel"
    assert spans[name(specs[1])][0] < first_end and spans[name(specs[2])][0] < first_end
    assert results[0].seconds >= 1.5


def test_one_job_is_sequential(double: Path, project: Settings, tmp_path: Path) -> None:
    specs = specs_in(project, tmp_path)[:3]
    validate.validate_all(project, specs, jobs=1)
    spans = sorted(intervals(double / "log").values())
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


def test_the_first_failing_spec_in_order_is_raised_naming_its_template(
    double: Path, project: Settings, tmp_path: Path
) -> None:
    specs = specs_in(project, tmp_path)
    # specs[3] fails at once, specs[1] fails late: the error is specs[1]'s whatever finishes first.
    (double / f"delay-validate-{name(specs[1])}").write_text("1\n")
    (double / f"fail-validate-{name(specs[1])}").touch()
    (double / f"fail-validate-{name(specs[3])}").touch()
    seen: list[str] = []
    with pytest.raises(PackerError) as raised:
        validate.validate_all(project, specs, on_done=lambda c: seen.append(name(c.rendered.spec)), jobs=3)
    message = str(raised.value)
    assert message.splitlines()[0] == f"{specs[1].build_dir / 'image.pkr.hcl'}: packer validate exited 1"
    assert f"double says {name(specs[1])} is broken" in message
    assert seen == [name(specs[0])]


def test_a_hung_packer_is_stopped_by_its_timeout(double: Path, project: Settings, tmp_path: Path) -> None:
    specs = specs_in(project, tmp_path)[:2]
    (double / f"delay-validate-{name(specs[0])}").write_text("60\n")
    settings = with_timeouts(project, Timeouts(packer_validate=1))
    started = time.monotonic()
    with pytest.raises(PackerError, match=r"packer validate \(after 1s\)"):
        validate.validate_all(settings, specs, jobs=2)
    assert time.monotonic() - started < 20
    assert not [pid for pid in _pids(double) if _group_alive(pid)]


def _pids(double: Path) -> list[int]:
    path = double / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _group_alive(pgid: int) -> bool:
    """Any process left in the process group (each Packer call runs in its own session)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(pid_alive(int(stat.parent.name)) for stat in Path("/proc").glob("[0-9]*/stat") if _pgid(stat) == pgid)


def _pgid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


SCRIPT = """
import signal, sys
from pathlib import Path
# Whatever this process inherited (a background job starts with SIGINT ignored), Ctrl-C must raise here.
signal.signal(signal.SIGINT, signal.default_int_handler)
from bakery import cli, validate
from tests.support import build_in
settings = cli.project_settings()
specs = [build_in(s, Path(sys.argv[1])) for s in settings.all_specs()]
try:
    validate.validate_all(settings, specs, jobs=2)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_running_packer_checks_and_leaves_no_child(
    double: Path, project: Settings, tmp_path: Path
) -> None:
    for spec in specs_in(project, tmp_path):
        (double / f"delay-validate-{name(spec)}").write_text("60\n")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "build")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,  # SIGINT's disposition is set by the script itself (see SCRIPT)
    )
    try:
        deadline = time.monotonic() + 30
        while len(_pids(double)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        running = _pids(double)
        assert len(running) == 2, "two checks should be running at once"
        assert all(pid_alive(pid) for pid in running)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == 130, output
    assert "KeyboardInterrupt" in output
    assert took < 10, f"Ctrl-C took {took:.1f} s: the running checks were waited for, not stopped"
    assert len(_pids(double)) == 2, "a queued check started after Ctrl-C"
    left = [pid for pid in _pids(double) if _group_alive(pid)]
    assert not left, f"packer processes left behind: {left}"
