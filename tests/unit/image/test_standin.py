"""Stand-in packages: byte-identical builds, real names and paths, visibly stand-ins; osqueryd's plumbing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bakery import standin


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def _contents(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, timeout=30, check=True
    ).stdout


@pytest.mark.parametrize("package", sorted(standin.PACKAGES))
def test_build_is_byte_identical(package: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = standin.build(package, tmp_path / "a")
    os.umask(0o077)  # a different umask must not change the result
    try:
        second = standin.build(package, tmp_path / "b")
    finally:
        os.umask(0o022)
    assert first.name == second.name == f"{package}_0.0.0~standin_amd64.deb"
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("package", sorted(standin.PACKAGES))
def test_package_is_labelled_stand_in(package: str, tmp_path: Path) -> None:
    deb = standin.build(package, tmp_path)
    assert _field(deb, "Package") == package
    assert _field(deb, "Version") == "0.0.0~standin"
    assert _field(deb, "Description").startswith("STAND-IN: not ")
    assert "root/root" in _contents(deb) and "1000/1000" not in _contents(deb)


def test_osquery_has_the_real_paths(tmp_path: Path) -> None:
    contents = _contents(standin.build("osquery", tmp_path))
    for path in ("./opt/osquery/bin/osqueryd", "./usr/lib/systemd/system/osqueryd.service", "./etc/default/osqueryd"):
        assert f" {path}\n" in contents
    for link in ("osqueryd", "osqueryi"):
        assert f"./usr/bin/{link} -> /opt/osquery/bin/osqueryd" in contents
    assert "./usr/bin/osqueryctl -> /opt/osquery/bin/osqueryctl" in contents
    assert "EnvironmentFile=/etc/default/osqueryd" in standin.OSQUERYD_UNIT
    assert "[Install]" in standin.OSQUERYD_UNIT  # enable-able, but the package enables nothing
    assert "postinst" not in subprocess.run(
        ["dpkg-deb", "--info", str(tmp_path / standin.deb_name("osquery"))],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip


def test_fluent_package_has_the_real_paths(tmp_path: Path) -> None:
    contents = _contents(standin.build("fluent-package", tmp_path))
    for path in ("./opt/fluent/bin/fluentd", "./usr/sbin/fluent-gem", "./usr/lib/systemd/system/fluentd.service"):
        assert f" {path}\n" in contents
    assert "User=_fluentd" in standin.FLUENTD_UNIT
    assert "useradd --system" in standin.FLUENT_POSTINST


def test_osqueryi_says_stand_in(tmp_path: Path) -> None:
    script = tmp_path / "osqueryi"
    script.write_text(standin.OSQUERYD)
    out = subprocess.run(["sh", str(script), "--version"], capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.strip() == "osqueryi version 0.0.0~standin (STAND-IN)"


def test_osqueryd_creates_pipe_pidfile_database_and_drains_pipe(tmp_path: Path) -> None:
    script = tmp_path / "osqueryd"
    script.write_text(standin.OSQUERYD)
    pipe, pidfile, db = tmp_path / "syslog_pipe", tmp_path / "osqueryd.pidfile", tmp_path / "osquery.db"
    flags = tmp_path / "osquery.flags"
    flags.write_text(f"--enable_syslog=true\n--syslog_pipe_path={pipe}\n--pidfile={pidfile}\n--database_path={db}\n")
    proc = subprocess.Popen(["sh", str(script), "--flagfile", str(flags), "--config_path", "/dev/null"])
    try:
        deadline = time.monotonic() + 10
        while not (pipe.is_fifo() and pidfile.exists()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert pipe.stat().st_mode & 0o777 == 0o460
        assert pidfile.read_text().strip() == str(proc.pid)
        assert len((db / "IDENTITY").read_text().strip()) == 36
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"2024-01-01T00:00:00Z,host,6,user,bakery-probe:,token-1\nnoise\n")
        os.close(fd)
        probe = tmp_path / standin.PROBE_LOG
        while not (probe.exists() and "token-1" in probe.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "noise" not in probe.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not pidfile.exists()


def test_osqueryd_config_check_next_to_the_daemon_needs_disable_database(tmp_path: Path) -> None:
    """Like osquery 5.23.1, the stand-in holds its database while it runs, and ``--config_check`` opens the
    database first: next to a running daemon the old check fails (exit 1, RocksDB's lock message after 25
    tries); the image suite's check (``--disable_database``) passes, and so does the old one when alone."""
    script = tmp_path / "osqueryd"
    script.write_text(standin.OSQUERYD)
    db, conf, flags = tmp_path / "osquery.db", tmp_path / "osquery.conf", tmp_path / "osquery.flags"
    conf.write_text("{}\n")
    flags.write_text(f"--pidfile={tmp_path / 'osqueryd.pidfile'}\n--database_path={db}\n--enable_syslog=false\n")
    check = ["sh", str(script), f"--flagfile={flags}", f"--config_path={conf}", "--config_check"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*check, *extra], capture_output=True, text=True, timeout=30)

    assert run().returncode == 0  # no daemon: the database is free
    daemon = subprocess.Popen(["sh", str(script), "--flagfile", str(flags), "--config_path", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "osqueryd.pidfile").exists():
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.1)
        locked = run()
        assert locked.returncode == 1
        assert f"IO error: While lock file: {db}/LOCK: Resource temporarily unavailable" in locked.stderr
        assert run("--disable_database", "--disable_extensions").returncode == 0
        missing = subprocess.run(
            [*check[:3], f"--config_path={tmp_path / 'nope.conf'}", "--config_check", "--disable_database"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert missing.returncode == 1 and "config file does not exist" in missing.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
