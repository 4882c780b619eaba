"""The python-packer adapter against the real ``packer`` binary (Debian's 1.6.6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bakery.errors import PackerError
from bakery.packer import Packer, artifact_ids, detect_version, parse_line
from bakery.proc import pid_alive
from tests.childsignals import sigint_default

FILE_TEMPLATE = """
variable "greeting" {
  type = string
}

source "file" "hello" {
  content = var.greeting
  target  = "hello.txt"
}

build {
  sources = ["source.file.hello"]

  provisioner "shell-local" {
    inline = ["echo provisioned, with a comma"]
  }
}
"""


def write(tmp_path: Path, text: str, name: str = "t.pkr.hcl") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_detects_debian_packer_version() -> None:
    assert detect_version() >= (1, 6, 6)


def test_parse_machine_readable_line() -> None:
    event = parse_line("1700000000,hello,ui,say,a%!(PACKER_COMMA) b\n")
    assert event is not None
    assert (event.timestamp, event.target, event.type) == (1700000000, "hello", "ui")
    assert event.message == "a, b"
    assert parse_line("not machine readable") is None
    artifact = parse_line("1700000001,file.hello,artifact,0,id,hello.txt")
    assert artifact is not None
    assert artifact_ids([artifact]) == ["hello.txt"]


def test_build_streams_events_and_returns_artifact(tmp_path: Path) -> None:
    template = write(tmp_path, FILE_TEMPLATE)
    seen = []
    result = Packer(template, variables={"greeting": "hi"}).build(timeout=120, on_event=seen.append)
    assert result.artifact_ids == ["File"]  # the file builder's artifact id
    assert (tmp_path / "hello.txt").read_text() == "hi"
    assert any("provisioned, with a comma" in e.message for e in seen if e.type == "ui")


def test_validate_reports_packers_error(tmp_path: Path) -> None:
    template = write(tmp_path, FILE_TEMPLATE.replace("content = var.greeting", "contnet = var.greeting"))
    with pytest.raises(PackerError) as info:
        Packer(template, variables={"greeting": "hi"}).validate(timeout=60)
    assert info.value.returncode == 1
    assert "contnet" in info.value.output_tail
    assert "validate" in info.value.argv


def test_validate_missing_variable_fails(tmp_path: Path) -> None:
    template = write(tmp_path, FILE_TEMPLATE)
    with pytest.raises(PackerError, match="greeting"):
        Packer(template).validate(timeout=60)


def test_fmt_check_fails_on_unformatted_hcl(tmp_path: Path) -> None:
    template = write(tmp_path, FILE_TEMPLATE.replace('  target  = "hello.txt"', '  target = "hello.txt"'))
    with pytest.raises(PackerError, match="fmt -check"):
        Packer(template, variables={"greeting": "hi"}).fmt_check(timeout=60)
    Packer(write(tmp_path, FILE_TEMPLATE, "ok.pkr.hcl"), variables={"greeting": "hi"}).fmt_check(timeout=60)


def test_failed_build_carries_exit_code_and_tail(tmp_path: Path) -> None:
    template = write(tmp_path, FILE_TEMPLATE.replace("echo provisioned, with a comma", "echo doomed; exit 7"))
    with pytest.raises(PackerError) as info:
        Packer(template, variables={"greeting": "hi"}).build(timeout=120)
    assert info.value.returncode == 1
    assert "doomed" in info.value.output_tail


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_packer_and_its_children(tmp_path: Path, signum: int, code: int) -> None:
    pidfile = tmp_path / "sleeper.pid"
    template = write(
        tmp_path,
        FILE_TEMPLATE.replace("echo provisioned, with a comma", f"echo $$ > {pidfile}; echo started; exec sleep 300"),
    )
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from bakery.packer import Packer
            from bakery.errors import BakeryError
            def show(e):
                if e.type == "ui" and "started" in e.message:
                    print("STARTED", flush=True)
            try:
                Packer(Path({str(template)!r}), variables={{"greeting": "hi"}}).build(timeout=120, on_event=show)
            except BakeryError as exc:
                print("ERROR", exc.message, flush=True)
                sys.exit(exc.exit_code)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        preexec_fn=sigint_default,  # noqa: PLW1509 - SIGINT as at a terminal, even in a background test run
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = ""
    while "STARTED" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    assert "STARTED" in line
    start = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    assert time.monotonic() - start < 30
    assert not pid_alive(int(pidfile.read_text())), "Packer's provisioner process was left running"
    assert os.path.exists(template)


def test_timeout_stops_packer_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    template = write(
        tmp_path, FILE_TEMPLATE.replace("echo provisioned, with a comma", f"echo $$ > {pidfile}; exec sleep 301")
    )
    start = time.monotonic()
    with pytest.raises(PackerError) as info:
        Packer(template, variables={"greeting": "hi"}).build(timeout=3)
    assert info.value.returncode is None
    assert "packer build (after 3s) timed out" in info.value.message
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert not pid_alive(int(pidfile.read_text())), "Packer's provisioner process was left running"
