"""The GCE dress rehearsal end to end: `invoke rehearse` with real Packer (qemu builder), a real QEMU VM running
Debian's real google-guest-agent against the metadata server fake, and the GCE target's own test stage,
publish and retention against the Compute API fake (tests/rehearsal.py).

One run (a module fixture; SIGINT at its default in the child, as at a terminal); the assertions read its output and the
``rehearsal.json`` it writes. Each of the rehearsal's checks is shown to fail on a broken fact in
tests/unit/test_rehearsal_checks.py; the image suite's per-VM host key and machine-id checks in
tests/integration/provision/test_provision.py (BREAKS: leftover-host-key, builder-machine-id).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery import proc
from tests.childsignals import sigint_default
from tests.support import runtime_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("rehearsal")
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-f", str(runtime_config(tmp)), "rehearse", "--variant", "debian-12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        preexec_fn=sigint_default,  # SIGINT as at a terminal, even in a background test run
    )
    reports = sorted((tmp / "build" / "runs" / "rehearsal-gstg" / "debian-12").glob("*/rehearsal.json"))
    assert len(reports) == 1, result.stdout[-4000:] + result.stderr
    return result, json.loads(reports[0].read_text())


def test_rehearse_bakes_tests_and_publishes(rehearsed: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    result, report = rehearsed
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    for phase in ("render", "validate", "prepare", "bake", "test", "publish", "retention"):
        assert f"<== {phase} (" in result.stdout
    assert report["outcome"]["failed"] == 0 and report["outcome"]["errors"] == 0
    assert report["outcome"]["passed"] > 50
    calls = report["compute_calls"]
    for method in ("compute.instances.insert", "compute.instances.delete", "compute.images.insert"):
        assert method in calls
    assert "<== publish (" in result.stdout and "gl-osquery-debian-12-" in result.stdout.splitlines()[-1]


def test_the_guest_agent_made_the_metadata_user_with_sudo(rehearsed) -> None:
    _, report = rehearsed
    facts = report["guest_facts"]
    assert facts["output"]["user"] == "bakery-test"
    assert "google-sudoers" in facts["output"]["groups"].split()
    assert (facts["output"]["sudo_uid"], facts["status"]["sudo_uid"]) == ("0", 0)
    assert report["guest_problems"] == []


def test_project_keys_are_ignored_when_blocked(rehearsed) -> None:
    _, report = rehearsed
    assert report["project_metadata"]["ssh-keys"].startswith("rehearsal-project-user:")
    facts = report["guest_facts"]
    assert facts["status"]["project_user"] == 2  # getent: not found
    keys = [line.split()[:2] for line in facts["output"]["authorized_keys"].splitlines() if line[:1] not in "#"]
    assert keys == [report["instance_key"].split()[:2]]  # the instance's key only, no project key


def test_host_keys_and_machine_id_are_the_test_vms(rehearsed) -> None:
    _, report = rehearsed
    assert report["per_vm_problems"] == []  # the image suite's test_seal checks passed on this VM
    (server,) = report["metadata_servers"]
    published = {k for k in server["guest_attributes"] if k.startswith("hostkeys/")}
    on_disk = {f"hostkeys/{line.split()[0]}" for line in report["guest_facts"]["output"]["host_keys"].splitlines()}
    assert published and published == on_disk  # the agent made them at this instance's first boot


def test_os_login_project_is_handled_by_the_instance_metadata(rehearsed) -> None:
    _, report = rehearsed
    assert report["project_metadata"]["enable-oslogin"] == "TRUE"
    assert report["oslogin_login_lookups"] == []  # no user looked up or authorized through OS Login
    assert "AuthorizedKeysCommand /usr/bin/google_authorized_keys" not in report["guest_facts"]["output"]["sshd_config"]


def test_the_guest_used_the_metadata_server_by_its_rules(rehearsed) -> None:
    _, report = rehearsed
    (server,) = report["metadata_servers"]
    assert server["violations"] == []
    assert server["requests"], "the guest agent never reached the metadata server"


def test_the_instance_was_deleted_and_its_vm_is_gone(rehearsed) -> None:
    result, report = rehearsed
    assert report["leftovers"] == []
    assert report["qemu_pids"], "no VM was booted"
    assert not [pid for pid in report["qemu_pids"] if proc.pid_alive(pid)]
    assert "rehearsal: test instance deleted, its VM stopped" in result.stdout
