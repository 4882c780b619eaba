"""Decisions of bakery.imagefiles: flag merging and every rejected value (one ConfigError line each)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bakery import cli, imagefiles, render
from bakery.config import BuildSpec
from bakery.errors import ConfigError


@pytest.fixture(scope="module")
def spec() -> BuildSpec:
    return cli.project_settings().specs("local")[0]


def _with(spec: BuildSpec, osquery: dict[str, Any] | None = None, pubsub: dict[str, Any] | None = None) -> BuildSpec:
    config = spec.config
    if osquery:
        config = config.model_copy(update={"osquery": config.osquery.model_copy(update=osquery)})
    if pubsub:
        env = config.environments[spec.env_name]
        env = env.model_copy(update={"pubsub": env.pubsub.model_copy(update=pubsub)})  # type: ignore[union-attr]
        config = config.model_copy(update={"environments": {**config.environments, spec.env_name: env}})
    return replace(spec, config=config)


def test_config_flags_override_base_flags(spec: BuildSpec) -> None:
    lines = imagefiles.flagfile_lines(_with(spec, {"flags": {"host_identifier": "hostname", "verbose": True}}))
    assert "--host_identifier=hostname" in lines and "--verbose=true" in lines
    assert "--enable_syslog=true" in lines and "--config_plugin=filesystem" in lines


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"disable_watchdog": True}, "bakery.osquery.flags.disable_watchdog: must not be set"),
        ({"utc": True}, "bakery.osquery.flags.utc: must not be set: deprecated"),
        ({"worker_threads": 4}, "bakery.osquery.flags.worker_threads: must not be set"),
        ({"config_path": "/x"}, "bakery.osquery.flags.config_path: must not be set"),
        ({"enable_syslog": False}, "bakery.osquery.flags.enable_syslog: the image needs 'true'"),
        ({"Bad-Name": 1}, "not an osquery flag name"),
        ({"host_identifier": "a b"}, "no spaces or quotes"),
        ({"logger_path": "/var/log/../x"}, "bakery.osquery.flags.logger_path: '/var/log/../x' is not a plain"),
        ({"syslog_pipe_path": "relative/pipe"}, "bakery.osquery.flags.syslog_pipe_path"),
        ({"logger_plugin": "tls"}, "must include 'filesystem'"),
        ({"logger_mode": "0600"}, "bakery.osquery.flags.logger_mode: '0600'"),
        ({"logger_mode": "0644"}, "bakery.osquery.flags.logger_mode: '0644'"),
    ],
)
def test_bad_flags_are_one_config_error(spec: BuildSpec, flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        imagefiles.context(_with(spec, {"flags": flags}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_decorator_interval(spec: BuildSpec) -> None:
    decorators = spec.config.osquery.decorators.model_copy(update={"interval": {"90": ("SELECT 1;",)}})
    with pytest.raises(ConfigError, match=r"decorators\.interval\.90: use a number of seconds divisible by 60"):
        imagefiles.osquery_conf(_with(spec, {"decorators": decorators}))


def test_forbidden_option_in_conf(spec: BuildSpec) -> None:
    with pytest.raises(ConfigError, match=r"bakery\.osquery\.options\.disable_watchdog: must not be set"):
        imagefiles.osquery_conf(_with(spec, {"options": {"disable_watchdog": True}}))


def test_pubsub_project_must_not_need_quoting(spec: BuildSpec) -> None:
    with pytest.raises(ConfigError, match=r"pubsub.project: 'my project #\{x\}' contains characters"):
        imagefiles.context(_with(spec, pubsub={"project": "my project #{x}"}))


def test_seal_items_follow_flags_and_build_user(spec: BuildSpec) -> None:
    custom = _with(spec, {"flags": {"database_path": "/srv/osquery/db"}})
    items = imagefiles.seal_items(custom)
    assert ("remove", "/srv/osquery/db") in items
    assert ("remove", "/home/packer/.ssh/authorized_keys") in items
    assert items[0] == ("stop", "osqueryd.service") and ("empty", "/etc/machine-id") in items


def test_mirror_bake_needs_no_curl_but_upstream_does(spec: BuildSpec) -> None:
    assert "curl" not in imagefiles.context(spec)["prereq_packages"]
    gstg = cli.project_settings().specs("gstg", "debian-12")[0]
    assert "curl" in imagefiles.context(gstg)["prereq_packages"]


def _pipe_ready_script(tmp_path: Path, pipe: Path, wait: int) -> Path:
    template = render.jinja_env().get_template("image/usr/local/lib/bakery/osquery-syslog-pipe-ready.j2")
    script = tmp_path / "pipe-ready"
    script.write_text(template.render(osquery_flag={"syslog_pipe_path": str(pipe)}, pipe_wait_seconds=wait))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/systemctl.args\n')
    (bindir / "systemctl").chmod(0o755)
    return script


def test_pipe_ready_waits_for_a_reader_then_restarts_rsyslog(tmp_path: Path) -> None:
    pipe = tmp_path / "syslog_pipe"
    script = _pipe_ready_script(tmp_path, pipe, 20)
    env = {"PATH": f"{tmp_path}/bin:/usr/bin:/bin"}
    proc = subprocess.Popen(["sh", str(script)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, "returned before the pipe existed"
        os.mkfifo(pipe, 0o460)
        time.sleep(1.5)
        assert proc.poll() is None, "returned before anything read the pipe"
        reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            os.close(reader)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert (tmp_path / "systemctl.args").read_text().split() == ["--no-block", "try-restart", "rsyslog.service"]


def test_pipe_ready_gives_up_after_its_timeout(tmp_path: Path) -> None:
    script = _pipe_ready_script(tmp_path, tmp_path / "never", 2)
    proc = subprocess.run(
        ["sh", str(script)], env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1 and "has no reader after 2s" in proc.stderr
    assert not (tmp_path / "systemctl.args").exists()
