"""OpenSSH client configuration for a local VM: one multiplexed connection shared by ssh and testinfra."""

from __future__ import annotations

import contextlib
import shlex
import socket
import tempfile
from pathlib import Path

from bakery import proc
from bakery.errors import CommandError

# A unix socket path must fit in sun_path (108 bytes); ssh appends ".XXXXXXXXXXXXXXXX" while binding it.
MAX_CONTROL_PATH = 80


def generate_key(path: Path, comment: str, *, timeout: float = 30.0) -> Path:
    """A new ed25519 key pair at ``path`` (no passphrase); returns the public key's path."""
    proc.require_tools({"ssh-keygen": "openssh-client"})
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    proc.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        timeout=timeout,
        what="ssh-keygen",
    )
    return path.with_name(path.name + ".pub")


def control_path_for(workdir: Path) -> tuple[Path, Path | None]:
    """A ControlPath in ``workdir`` if short enough, else in a new short dir under /tmp (returned too,
    so the caller can remove it)."""
    path = workdir / "ssh.sock"
    if len(str(path)) <= MAX_CONTROL_PATH:
        return path, None
    short = Path(tempfile.mkdtemp(prefix="bk-", dir="/tmp"))
    return short / "s", short


def render_config(
    *, alias: str, port: int, user: str, identity: Path, control_path: Path, connect_timeout: int = 10
) -> str:
    """ssh_config text for ``alias`` -> 127.0.0.1:port (host keys are per VM: never recorded)."""
    return (
        f"Host {alias}\n"
        f"  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        f"  User {user}\n"
        f"  IdentityFile {identity}\n"
        f"  IdentitiesOnly yes\n"
        f"  IdentityAgent none\n"
        f"  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile /dev/null\n"
        f"  LogLevel ERROR\n"
        f"  ConnectTimeout {connect_timeout}\n"
        f"  ServerAliveInterval 10\n"
        f"  ServerAliveCountMax 3\n"
        f"  ControlMaster auto\n"
        f"  ControlPath {control_path}\n"
        f"  ControlPersist 60s\n"
    )


def ssh_argv(config: Path, alias: str, command: list[str]) -> list[str]:
    """argv running ``command`` (quoted for the remote shell) on ``alias``."""
    return ["ssh", "-F", str(config), alias, "--", shlex.join(command)]


def banner_ready(port: int, timeout: float = 3.0) -> bool:
    """True once the guest's sshd answers with its banner (QEMU's forwarder accepts TCP before that)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def close_master(config: Path, alias: str, timeout: float = 10.0) -> None:
    """Stop the ControlMaster for ``alias`` if one runs (best effort, bounded)."""
    with contextlib.suppress(CommandError):
        proc.run(["ssh", "-F", str(config), "-O", "exit", alias], timeout=timeout, check=False)
