"""Provisioning for real on a Debian 12 root (stand-in artifacts), and the image suite run against it.

The suite must pass on the provisioned, sealed and "first-booted" root, and must fail, with exactly the
expected tests, when one thing is broken at a time (a missing flag, a wrong mode, a host key or osquery
database that survived the seal, the builder's machine-id, ...).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import harness
import pytest
from harness import Root

from bakery import identity

pytestmark = pytest.mark.slow  # ~1.5 min: provisioning, sshd, 11 runs of the suite

STASH = "/var/tmp/bakery-stash"  # survives the seal: how a "leftover" is put back with its old birth time


@dataclass
class Provisioned:
    root: Root
    build: Path
    ssh_config: Path
    pubkey: Path
    workdir: Path
    seal_output: str
    identity: Path

    def suite(self) -> harness.SuiteResult:
        return harness.run_suite(
            self.ssh_config, self.build / "expectations.json", self.pubkey, self.workdir, self.identity
        )


BUILDER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuilderKeyBuilderKeyBuilderKeyBuilderKey packer"
LEFTOVER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILeftover packer"


def sh(root: Root, script: str) -> None:
    root.chroot(["sh", "-c", script])


def _builder_state(root: Root) -> None:
    """What a builder VM has before the seal: identity, the build user's key, history, cloud-init state."""
    root.chroot(["systemd-machine-id-setup"])
    root.chroot(["useradd", "--create-home", "--shell", "/bin/bash", "packer"])
    for path, text in {
        "/home/packer/.ssh/authorized_keys": f"{BUILDER_KEY}\n",
        "/home/packer/.bash_history": "sudo -E bash /tmp/script_1.sh\n",
        "/root/.bash_history": "ls\n",
        "/var/lib/cloud/instances/i-0123/obj.pkl": "state\n",
        "/var/lib/dhcp/dhclient.eth0.leases": "lease {}\n",
    }.items():
        root.file(path).parent.mkdir(parents=True, exist_ok=True)
        root.file(path).write_text(text)


def _builder_services_ran(root: Root) -> None:
    """osqueryd and fluentd ran on the builder; one host key and the database are set aside (a rename
    keeps their birth time) so that tests can put them back as items that survived the seal."""
    sh(root, "mkdir -p /var/osquery/osquery.db && echo builder-uuid > /var/osquery/osquery.db/IDENTITY")
    pos = "/var/log/osquery/osqueryd.results.log\t0000000000000010\t0000000000abcdef"
    root.file("/var/log/fluent/osquery-results.pos").write_text(f"{pos}\n")
    sh(root, f"mkdir -p {STASH} && cp -a /var/osquery/osquery.db {STASH}/")
    sh(root, f"mv /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ecdsa_key.pub {STASH}/")


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    work = tmp_path_factory.mktemp("provisioned")
    spec = harness.local_spec(work / "project")
    build = harness.rendered(spec)
    root = harness.fresh_root(work / "root")
    _builder_state(root)
    harness.upload(root, build)
    scripts = [p.name for p in sorted((build / "provision").glob("*.sh"))]
    assert scripts[-1] == "90-seal.sh"
    harness.provision(root, spec, only=scripts[:-1])
    _builder_services_ran(root)
    (build / "builder-machine-id").write_text(root.file("/etc/machine-id").read_text())
    seal = harness.provision(root, spec, only=["90-seal.sh"])
    key, pubkey = harness.keypair(work)
    harness.simulate_first_boot(root, pubkey)
    identity_file = identity.write_expectations(harness.image_identity(spec), work)
    with harness.sshd(root, key, work) as ssh_config:
        yield Provisioned(root, build, ssh_config, pubkey, work, seal[0].stdout + seal[0].stderr, identity_file)


def test_seal_removed_builder_state_and_recorded_it(provisioned: Provisioned) -> None:
    root = provisioned.root
    assert "sealed" in provisioned.seal_output
    record = harness.seal_record(root)
    assert len(record["removed_host_keys"]) == 2  # rsa and ed25519 (ecdsa was set aside)
    assert (
        record["emptied_sha256"]["/etc/machine-id"]
        != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for path in ("/var/osquery/osquery.db", "/var/log/fluent/osquery-results.pos", "/home/packer/.bash_history",
                 "/home/packer/.ssh/authorized_keys", "/var/lib/cloud/instances", "/tmp/bakery",
                 "/var/lib/dhcp/dhclient.eth0.leases"):  # fmt: skip
        assert not root.file(path).exists(), f"{path} survived the seal"


def test_image_suite_passes(provisioned: Provisioned) -> None:
    result = provisioned.suite()
    assert not result.failed(), result.output[-4000:]
    skipped = result.skip_reasons
    assert "stand-in image: needs the real osquery" in skipped["test_osqueryi_runs_a_query"]
    assert "stand-in image: needs the real Fluentd" in skipped["test_fluentd_dry_run"]
    assert "/run/systemd/system absent" in skipped["test_service_running[osqueryd.service]"]
    assert result.outcomes["test_service_enabled[fluentd.service]"] == "passed"
    assert result.outcomes["test_ssh_host_keys_are_this_vms"] == "passed"
    for name in ("test_identity_file", "test_osquery_decorates_with_identity", "test_decorators_not_disabled"):
        assert result.outcomes[name] == "passed", name
    # upstream-only: the stand-in osqueryd logs no records
    assert "stand-in image: needs the real osquery" in skipped["test_logged_records_carry_identity"]
    assert sum(o == "passed" for o in result.outcomes.values()) >= 60


APPARMOR_PROFILE = Path(__file__).resolve().parents[2] / "fixtures" / "apparmor" / "usr.sbin.rsyslogd"
BREAKS: dict[str, tuple[str, str, set[str]]] = {
    # name: (break it, restore it, the tests that must fail - and only these)
    "missing-flag": (
        "cp -p /etc/osquery/osquery.flags /root/flags && sed -i '/^--enable_syslog=/d' /etc/osquery/osquery.flags",
        "cp -p /root/flags /etc/osquery/osquery.flags",
        {"test_flagfile_has_required_flags"},
    ),
    "forbidden-flag": (
        "cp -p /etc/osquery/osquery.flags /root/flags && echo --disable_watchdog=true >> /etc/osquery/osquery.flags",
        "cp -p /root/flags /etc/osquery/osquery.flags",
        {"test_flagfile_has_no_forbidden_flags"},
    ),
    "wrong-mode": (
        "chmod 0644 /etc/osquery/osquery.conf",
        "chmod 0640 /etc/osquery/osquery.conf",
        {"test_manifest_file[/etc/osquery/osquery.conf]", "test_osquery_conf_is_root_only"},
    ),
    "leftover-host-key": (
        f"mv {STASH}/ssh_host_ecdsa_key {STASH}/ssh_host_ecdsa_key.pub /etc/ssh/",
        f"mv /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ecdsa_key.pub {STASH}/",
        {"test_ssh_host_keys_are_this_vms"},
    ),
    "builder-machine-id": (
        "cp -p /etc/machine-id /root/machine-id && cat /root/builder-machine-id > /etc/machine-id",
        "cp -p /root/machine-id /etc/machine-id",
        {"test_machine_id_is_this_vms"},
    ),
    "leftover-osquery-db": (
        f"mv {STASH}/osquery.db /var/osquery/",
        f"mv /var/osquery/osquery.db {STASH}/",
        {"test_seal_item_not_baked[remove /var/osquery/osquery.db]"},
    ),
    "build-user-key": (
        f"mkdir -p /home/packer/.ssh && echo '{LEFTOVER_KEY}' > /home/packer/.ssh/authorized_keys",
        "rm -f /home/packer/.ssh/authorized_keys",
        {"test_authorized_keys_only_injected"},
    ),
    "no-log-acl": (
        "setfacl --remove-all /var/log/osquery",
        "systemd-tmpfiles --create /etc/tmpfiles.d/bakery-osquery-logs.conf",
        {"test_log_dir_acl", "test_fluentd_user_reads_new_osquery_log"},
    ),
    "fluentd-disabled": (
        "systemctl disable fluentd.service",
        "systemctl enable fluentd.service",
        {"test_service_enabled[fluentd.service]"},
    ),
    "fluentd-key-file": (
        "cp -p /etc/fluent/conf.d/osquery.conf /root/fluent.conf && "
        "sed -i 's|^  topic .*|&\\n  key /etc/fluent/sa.json|' /etc/fluent/conf.d/osquery.conf",
        "cp -p /root/fluent.conf /etc/fluent/conf.d/osquery.conf",
        {"test_fluentd_snippet_settings"},
    ),
    "fluentd-loads-conf-d": (  # what the image baked before: fluentd would load the vendor's snippets, ours twice
        "cp -p /etc/fluent/fluentd.conf /root/fluentd.conf && printf '%s\\n' '<system>' '  log_level info' "
        "'</system>' '@include conf.d/*.conf' > /etc/fluent/fluentd.conf",
        "cp -p /root/fluentd.conf /etc/fluent/fluentd.conf",
        {"test_fluentd_loads_only_the_bakery_snippet"},
    ),
    "identity-missing": (  # an image baked without provision/80-identity.sh
        "mv /etc/bakery/identity.json /etc/osquery/osquery.conf.d/bakery-identity.conf /root/",
        "mv /root/identity.json /etc/bakery/ && mv /root/bakery-identity.conf /etc/osquery/osquery.conf.d/",
        {"test_identity_file", "test_osquery_decorates_with_identity"},
    ),
    "identity-of-another-image": (  # the decorator names another image (e.g. the GCE candidate's name)
        "cp -p /etc/osquery/osquery.conf.d/bakery-identity.conf /root/identity.conf && "
        "sed -i \"s/'[^']*' AS bakery_image/'gl-osquery-candidate-x' AS bakery_image/\" "
        "/etc/osquery/osquery.conf.d/bakery-identity.conf",
        "cp -p /root/identity.conf /etc/osquery/osquery.conf.d/bakery-identity.conf",
        {"test_osquery_decorates_with_identity"},
    ),
    "identity-wrong-fingerprint": (
        "cp -p /etc/bakery/identity.json /root/identity.json && "
        'sed -i \'s/"input_fingerprint": "[0-9a-f]/&0/\' /etc/bakery/identity.json',
        "cp -p /root/identity.json /etc/bakery/identity.json",
        {"test_identity_file"},
    ),
    "decorators-disabled": (
        "cp -p /etc/osquery/osquery.flags /root/flags && echo --disable_decorators=true >> /etc/osquery/osquery.flags",
        "cp -p /root/flags /etc/osquery/osquery.flags",
        {"test_decorators_not_disabled"},
    ),
    "apparmor-without-pipe-rule": (  # an Ubuntu 24.04-like image whose rsyslogd profile lacks the rule
        "cp /root/usr.sbin.rsyslogd /etc/apparmor.d/usr.sbin.rsyslogd && mkdir -p /etc/apparmor.d/local && "
        ": > /etc/apparmor.d/local/usr.sbin.rsyslogd",
        "rm -f /etc/apparmor.d/usr.sbin.rsyslogd /etc/apparmor.d/local/usr.sbin.rsyslogd",
        {"test_rsyslog_apparmor_allows_the_pipe"},
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_image_suite_catches(provisioned: Provisioned, name: str) -> None:
    broken, restore, expected = BREAKS[name]
    root = provisioned.root
    shutil.copyfile(provisioned.build / "builder-machine-id", root.file("/root/builder-machine-id"))
    shutil.copyfile(APPARMOR_PROFILE, root.file("/root/usr.sbin.rsyslogd"))
    root.chroot(["sh", "-c", broken])
    try:
        result = provisioned.suite()
    finally:
        root.chroot(["sh", "-c", restore])
    assert result.failed() == expected, result.output[-4000:]
