"""The rehearsal's own checks (tests/rehearsal.py) fail on what they check: each broken fact gives its line.

The facts they judge come from the real guest in the slow e2e rehearsal (tests/e2e/test_rehearsal.py); here
each check is fed the good facts (no problem) and one broken fact at a time (its problem), so none of them
can pass whatever the guest did.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bakery import cli, config
from bakery.errors import ConfigError
from tests import rehearsal
from tests.fakes.compute import FakeCompute
from tests.fakes.vmbackend import VmBackend

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGood bakery-test@run"
HOST_KEYS = {
    "hostkeys/ssh-ed25519": "AAAAC3NzaC1lZDI1NTE5AAAAIHost",
    "hostkeys/ssh-rsa": "AAAAB3NzaC1yc2EAAAADAQABHost",
}
GOOD = {
    "user": ("bakery-test", 0),
    "groups": ("bakery-test adm dip video plugdev google-sudoers", 0),
    "sudo_uid": ("0", 0),
    "sudoers": ("%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL", 0),
    "project_user": ("", 2),
    "authorized_keys": (f"# Added by Google\n{KEY}", 0),
    "sshd_config": ("Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no", 0),
    "nsswitch": ("passwd:         files systemd\ngroup:          files systemd", 0),
    "host_keys": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost root@vm\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABHost root@vm", 0),
    "agent": ("active", 0),
    "product": ("Google Compute Engine", 0),
}


def facts(**broken: tuple[str, int]) -> rehearsal.GuestFacts:
    merged = {**GOOD, **broken}
    return rehearsal.GuestFacts({k: v[0] for k, v in merged.items()}, {k: v[1] for k, v in merged.items()})


def test_the_probes_are_the_facts_judged() -> None:
    assert set(rehearsal.PROBES) == set(GOOD)


def test_a_guest_as_gce_makes_it_has_no_problem() -> None:
    assert rehearsal.guest_problems(facts(), instance_key=KEY, oslogin_calls=0, published_host_keys=HOST_KEYS) == []


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ({"user": ("root", 0)}, "not the metadata user"),
        ({"groups": ("bakery-test adm", 0)}, "not in google-sudoers"),
        ({"sudo_uid": ("sudo: a password is required", 1)}, "no passwordless sudo"),
        ({"sudoers": ("", 1)}, "does not give google-sudoers sudo"),
        (
            {"project_user": ("rehearsal-project-user:x:1002:1003::/home/rehearsal-project-user:/bin/bash", 0)},
            "ignored",
        ),
        ({"authorized_keys": (f"{KEY}\nssh-ed25519 AAAAother project", 0)}, "not exactly the instance's key"),
        ({"authorized_keys": ("", 1)}, "not exactly the instance's key"),
        ({"sshd_config": ("AuthorizedKeysCommand /usr/bin/google_authorized_keys", 0)}, "OS Login was turned on"),
        ({"nsswitch": ("passwd:         files cache_oslogin oslogin systemd", 0)}, "nsswitch passwd has oslogin: True"),
        ({"project_user": ("ssh: connect to host 127.0.0.2 port 22: Connection refused", 255)}, "cannot tell"),
        ({"sshd_config": ("cat: /etc/ssh/sshd_config: No such file or directory", 1)}, "probe sshd_config failed"),
        ({"nsswitch": ("", 1)}, "probe nsswitch failed"),
        (
            {"host_keys": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuilder root@packer", 0)},
            "not the ones the guest agent",
        ),
        ({"agent": ("failed", 3)}, "google-guest-agent.service is 'failed'"),
        ({"product": ("Standard PC (i440FX + PIIX, 1996)", 0)}, "does not say it is"),
    ],
)
def test_each_broken_fact_is_reported(broken: dict[str, tuple[str, int]], expected: str) -> None:
    problems = rehearsal.guest_problems(
        facts(**broken), instance_key=KEY, oslogin_calls=0, published_host_keys=HOST_KEYS
    )
    assert len(problems) == 1 and expected in problems[0], problems


def test_host_keys_the_agent_did_not_publish_are_reported() -> None:
    (problem,) = rehearsal.guest_problems(
        facts(),
        instance_key=KEY,
        oslogin_calls=0,
        published_host_keys={"hostkeys/ssh-ed25519": HOST_KEYS["hostkeys/ssh-ed25519"]},
    )
    assert "not the ones the guest agent made" in problem
    none = rehearsal.guest_problems(facts(host_keys=("", 0)), instance_key=KEY, oslogin_calls=0, published_host_keys={})
    assert len(none) == 1 and "on disk: []" in none[0]


def test_an_os_login_call_to_the_metadata_server_is_reported() -> None:
    (problem,) = rehearsal.guest_problems(facts(), instance_key=KEY, oslogin_calls=2, published_host_keys=HOST_KEYS)
    assert "OS Login user lookups: 2" in problem


def test_only_login_lookups_count_as_os_login_calls() -> None:
    class Server:
        oslogin_calls = [
            "/computeMetadata/v1/oslogin/users?pagesize=1000",  # the cache timer, OS Login on or off
            "/computeMetadata/v1/oslogin/groups?pagesize=1000",
            "/computeMetadata/v1/oslogin/users?username=rehearsal-project-user",  # the NSS module: on
            "/computeMetadata/v1/oslogin/authorize?email=1&policy=login",
        ]

    assert rehearsal.login_lookups([Server()]) == Server.oslogin_calls[2:]  # type: ignore[list-item]


def junit(tmp_path: Path, cases: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


def test_per_vm_tests_must_have_run_and_passed(tmp_path: Path) -> None:
    passed = '<testcase classname="test_seal" name="{}[ssh://bakery-gce-test]" />'
    good = junit(tmp_path, "".join(passed.format(t) for t in rehearsal.PER_VM_TESTS))
    assert rehearsal.per_vm_problems(good) == []
    failed = junit(
        tmp_path,
        passed.format("test_machine_id_is_this_vms")
        + '<testcase classname="test_seal" name="test_ssh_host_keys_are_this_vms[ssh://bakery-gce-test]">'
        + '<failure message="builder" />'
        "</testcase>",
    )
    assert rehearsal.per_vm_problems(failed) == ["test_ssh_host_keys_are_this_vms did not pass"]
    missing = junit(tmp_path, passed.format("test_ssh_host_keys_are_this_vms"))
    assert rehearsal.per_vm_problems(missing) == ["test_machine_id_is_this_vms did not run"]
    assert rehearsal.per_vm_problems(tmp_path / "none.xml") == [f"no JUnit report at {tmp_path / 'none.xml'}"]


def test_leftovers_names_instances_and_live_vms(tmp_path: Path) -> None:
    fake = FakeCompute()
    backend = VmBackend(tmp_path)
    assert rehearsal.leftovers(fake, backend) == []
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        backend.pids.append(sleeper.pid)
        fake.instances["europe-west1-b", "bakery-test-x"] = {"name": "bakery-test-x"}
        assert rehearsal.leftovers(fake, backend) == [
            "instance europe-west1-b/bakery-test-x",
            f"QEMU pid {sleeper.pid}",
        ]
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    del fake.instances["europe-west1-b", "bakery-test-x"]
    assert rehearsal.leftovers(fake, backend) == []


def project_settings() -> config.Settings:
    return cli.project_settings()


def test_the_rehearsal_environment_is_gstg_with_the_local_build() -> None:
    settings = project_settings()
    spec = rehearsal.rehearsal_spec(settings, None, "debian-12")
    gstg = settings.config.environments["gstg"]
    assert spec.env_name == "rehearsal-gstg"
    assert spec.env.target == "local" and spec.env.local == settings.config.environments["local"].local
    assert spec.artifact_source == "stand-in"
    assert spec.family == "gl-osquery-debian-12" and spec.candidate_family == "gl-osquery-debian-12-candidate"
    assert spec.env.gce is not None and gstg.gce is not None
    assert spec.env.gce.project == gstg.gce.project and spec.env.gce.zone_order == gstg.gce.zone_order
    assert (spec.env.gce.use_iap, spec.env.gce.omit_external_ip) == (False, True)
    assert spec.env.labels == gstg.labels


@pytest.mark.parametrize(
    ("env", "variant", "expected"),
    [
        ("local", "debian-12", "rehearse needs a 'target: gce' environment: use --env with one of gstg, gprd"),
        ("nope", "debian-12", "rehearse needs a 'target: gce' environment"),
        ("gstg", "ubuntu-2204", "variant 'ubuntu-2204' cannot be baked locally: use --variant with one of debian-12"),
        ("gstg", "nope", "variant 'nope' cannot be baked locally"),
    ],
)
def test_bad_rehearsal_input_is_one_line(env: str, variant: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rehearsal.rehearsal_spec(project_settings(), env, variant)
    assert expected in str(caught.value)


def test_invoke_rehearse_bad_variant_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "rehearse", "--variant", "ubuntu-2404"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: variant 'ubuntu-2404' cannot be baked locally: use --variant with one of debian-12"
    ]
    assert "Traceback" not in result.stdout + result.stderr
