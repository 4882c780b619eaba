"""Pure builders of the local VM machinery: QEMU and mmdebstrap argv, ssh_config, JUnit counting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bakery import baserecipe, ssh
from bakery.errors import ConfigError
from bakery.imagetest import RunningVM, parse_junit, pytest_argv
from bakery.local import baseimage
from bakery.local.vm import qemu_accel_args, qemu_argv


def test_qemu_argv_snapshot_serial_and_loopback_forward() -> None:
    argv = qemu_argv(
        Path("/c/disk.qcow2"),
        accelerator="tcg",
        memory_mb=2048,
        cpus=2,
        serial_log=Path("/w/serial.log"),
        pidfile=Path("/w/qemu.pid"),
        ssh_port=40022,
    )
    assert argv == [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "file:/w/serial.log",
        "-snapshot",
        "-drive",
        "file=/c/disk.qcow2,format=qcow2,if=virtio",
        "-netdev",
        "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-pidfile",
        "/w/qemu.pid",
    ]


def test_qemu_argv_without_network() -> None:
    argv = qemu_argv(
        Path("d"), accelerator="kvm", memory_mb=1, cpus=1, serial_log=Path("s"), pidfile=Path("p"), ssh_port=None
    )
    assert argv[1:5] == ["-accel", "kvm", "-cpu", "host"]
    assert argv[-4:] == ["-nic", "none", "-pidfile", "p"]


def test_unknown_accelerator() -> None:
    with pytest.raises(ConfigError, match="unknown accelerator 'hvf': use one of kvm, tcg"):
        qemu_accel_args("hvf")


def test_ssh_config_multiplexes_and_trusts_no_host_key() -> None:
    text = ssh.render_config(
        alias="bakery-vm", port=40022, user="packer", identity=Path("/c/id"), control_path=Path("/w/ssh.sock")
    )
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "Host bakery-vm"
    for expected in (
        "HostName 127.0.0.1",
        "Port 40022",
        "User packer",
        "IdentityFile /c/id",
        "IdentitiesOnly yes",
        "StrictHostKeyChecking no",
        "UserKnownHostsFile /dev/null",
        "LogLevel ERROR",
        "ControlMaster auto",
        "ControlPath /w/ssh.sock",
        "ControlPersist 60s",
        "ConnectTimeout 10",
    ):
        assert expected in lines


def test_control_path_stays_short(tmp_path: Path) -> None:
    short, extra = ssh.control_path_for(Path("/w"))
    assert (short, extra) == (Path("/w/ssh.sock"), None)
    deep = tmp_path / ("d" * 90)
    path, made = ssh.control_path_for(deep)
    assert made is not None
    try:
        assert len(str(path)) <= ssh.MAX_CONTROL_PATH
        assert path.parent == made
    finally:
        made.rmdir()


def test_ssh_argv_quotes_the_remote_command() -> None:
    assert ssh.ssh_argv(Path("/w/cfg"), "vm", ["echo", "a b", "$HOME"]) == [
        "ssh",
        "-F",
        "/w/cfg",
        "vm",
        "--",
        "echo 'a b' '$HOME'",
    ]


def test_pytest_argv_uses_the_vm_ssh_config() -> None:
    vm = RunningVM("bakery-vm", Path("/w/ssh_config"), 1, 2, Path("/w/serial.log"), Path("/w"))
    assert pytest_argv(vm, Path("/s"), Path("/w/junit.xml"), ["-x"]) == [
        sys.executable,
        "-m",
        "pytest",
        "/s",
        "--hosts=ssh://bakery-vm",
        "--ssh-config=/w/ssh_config",
        "--junitxml=/w/junit.xml",
        "--rootdir=/s",
        "-p",
        "no:cacheprovider",
        "-x",
    ]


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="test_smoke" name="test_a[ssh://vm]" time="0.1"/>
<testcase classname="test_smoke" name="test_b[ssh://vm]" time="0.1"/>
<testcase classname="test_smoke" name="test_c[ssh://vm]" time="0.1"><failure message="x">boom</failure></testcase>
<testcase classname="test_smoke" name="test_d[ssh://vm]" time="0.1"><skipped message="s"/></testcase>
<testcase classname="test_other" name="test_e[ssh://vm]" time="0.1"><error message="e">fixture</error></testcase>
</testsuite></testsuites>
"""


def test_parse_junit_counts_and_names_failures(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    outcome = parse_junit(junit, tmp_path / "junit.log")
    assert (outcome.passed, outcome.failed, outcome.skipped, outcome.errors) == (2, 1, 1, 1)
    assert outcome.failures == ["test_smoke::test_c[ssh://vm]", "test_other::test_e[ssh://vm]"]
    assert not outcome.ok


def test_outcome_ok_needs_a_pass(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="t" name="s"><skipped/></testcase></testsuite></testsuites>'
    )
    assert not parse_junit(junit, tmp_path / "log").ok
    junit.write_text('<testsuites><testsuite><testcase classname="t" name="p"/></testsuite></testsuites>')
    assert parse_junit(junit, tmp_path / "log").ok


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    argv = baseimage.mmdebstrap_argv(
        Path("/b/rootfs"), Path("/b/customize.sh"), Path("/b/id_ed25519.pub"), mirror="http://m/debian"
    )
    assert argv == [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(baserecipe.PACKAGES),
        '--customize-hook=sh /b/customize.sh "$1" /b/id_ed25519.pub packer',
        "bookworm",
        "/b/rootfs",
        "http://m/debian",
    ]
    rehearsal = baseimage.mmdebstrap_argv(
        Path("/b/rootfs"),
        Path("/b/customize.sh"),
        Path("/b/id_ed25519.pub"),
        mirror="http://m/debian",
        packages=baserecipe.GCE_REHEARSAL.packages,
    )
    assert rehearsal[2] == "--include=" + ",".join(baserecipe.GCE_REHEARSAL.packages)
    assert "google-guest-agent" in rehearsal[2].split(",")
    assert rehearsal[:2] + rehearsal[3:] == argv[:2] + argv[3:]


def test_base_packages_cover_boot_ssh_and_provisioning_prereqs() -> None:
    for name in ("linux-image-cloud-amd64", "grub-pc", "openssh-server", "sudo", "systemd-resolved"):
        assert name in baserecipe.PACKAGES
    for name in ("rsyslog", "logrotate", "acl", "ca-certificates", "gnupg"):
        assert name in baserecipe.PACKAGES


def test_content_key_is_stable_and_tracks_the_recipe() -> None:
    key = baserecipe.content_key()
    assert key == baserecipe.content_key()
    assert len(key) == 64
    assert baserecipe.content_key(packages=(*baserecipe.PACKAGES, "curl")) != key
    assert baserecipe.content_key(suite="trixie") != key
    assert baserecipe.content_key(packages=tuple(reversed(baserecipe.PACKAGES))) == key


def test_base_recipe_ships_no_host_keys_or_machine_id() -> None:
    script = baserecipe.CUSTOMIZE_SCRIPT
    assert 'rm -f "$root"/etc/ssh/ssh_host_*' in script
    assert ': >"$root/etc/machine-id"' in script
    assert "ExecStart=/bin/sh -c 'ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'" in script
    assert "id_ed25519\n" not in script  # only the public key goes in


def test_load_base_image_checks_key_and_files(tmp_path: Path) -> None:
    directory = tmp_path / "base-x"
    directory.mkdir()
    assert baseimage.load_base_image(directory, "k") is None
    (directory / "meta.json").write_text(
        '{"key": "k", "user": "packer", "suite": "bookworm", "kernel": "6.1.0-50-cloud-amd64"}'
    )
    assert baseimage.load_base_image(directory, "k") is None  # no disk yet
    (directory / "disk.qcow2").write_bytes(b"")
    (directory / "id_ed25519").write_text("")
    image = baseimage.load_base_image(directory, "k")
    assert image is not None
    assert (image.disk, image.ssh_key, image.user) == (directory / "disk.qcow2", directory / "id_ed25519", "packer")
    assert baseimage.load_base_image(directory, "other") is None
