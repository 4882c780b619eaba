"""The image was sealed, and nothing per-host or secret was baked: what exists was created after the seal.

On a booted VM, sshd's host keys, machine-id, osquery's database etc. exist again; the seal record
(/etc/bakery/seal.json, written by provision/90-seal.sh after proving every item gone) lets these
checks tell a fresh, per-VM item (created after ``sealed_at``, or different from the builder's) from a
baked one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from probe import authorized_keys, created_times, existing

# Items with their own, stricter check below.
_OWN_CHECK = ("/.ssh/authorized_keys", "/etc/ssh/ssh_host_", "/tmp/bakery")


def test_seal_record_covers_every_item(seal: dict[str, Any], expect: dict[str, Any]) -> None:
    assert seal["items"] == expect["seal"]["items"]
    assert isinstance(seal["sealed_at"], int)


def test_seal_list_is_the_sealed_one(host: Any, seal: dict[str, Any], expect: dict[str, Any]) -> None:
    assert host.file(expect["seal"]["list"]).sha256sum == seal["list_sha256"]


def test_seal_item_not_baked(host: Any, seal: dict[str, Any], seal_item: str) -> None:
    glob = seal_item.split(" ", 1)[1]
    if any(part in glob for part in _OWN_CHECK):
        return
    baked = {}
    for path in existing(host, glob):
        baked.update({p: t for p, t in created_times(host, path).items() if t <= seal["sealed_at"]})
    assert not baked, f"present since before the seal ({seal['sealed_at']}): {sorted(baked)}"


def test_ssh_host_keys_are_this_vms(host: Any, seal: dict[str, Any]) -> None:
    keys = existing(host, "/etc/ssh/ssh_host_*")
    for path in keys:
        assert created_times(host, path)[path] > seal["sealed_at"], f"{path} predates the seal"
    for pub in (k for k in keys if k.endswith(".pub")):
        fingerprint = host.check_output("ssh-keygen -l -E sha256 -f %s", pub).split()[1]
        assert fingerprint not in seal["removed_host_keys"], f"{pub} is the builder's key"


def test_machine_id_is_this_vms(host: Any, seal: dict[str, Any]) -> None:
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), "machine-id was not generated at boot"
    builder = seal["emptied_sha256"].get("/etc/machine-id")
    assert hashlib.sha256(f"{machine_id}\n".encode()).hexdigest() != builder, "machine-id is the builder's"
    dbus = host.file("/var/lib/dbus/machine-id")
    if dbus.exists and not dbus.is_symlink:
        assert dbus.content_string.strip() == machine_id, "/var/lib/dbus/machine-id differs from /etc/machine-id"


def test_authorized_keys_only_injected(
    host: Any, expect: dict[str, Any], injected_keys: set[str], seal: dict[str, Any]
) -> None:
    user = expect["build_user"]
    homes = {"/root", host.user(user).home if host.user(user).exists else f"/home/{user}"}
    for home in sorted(homes):
        keys = host.file(f"{home}/.ssh/authorized_keys")
        if not keys.exists:
            continue
        for key in authorized_keys(keys.content_string):
            assert key in injected_keys, f"{home}/.ssh/authorized_keys has a key the harness did not inject"


def test_no_provisioning_uploads(host: Any) -> None:
    assert not host.file("/tmp/bakery").exists
