"""Exercise the provisioning scripts for real on a Debian 12 root filesystem, and reach it over SSH.

The root filesystem is built once with mmdebstrap (cached under /var/tmp/bakery-test-rootfs, keyed by the
package list) and copied per test. Scripts run as Packer runs them (``bash SCRIPT`` as root with the
provisioning environment) inside ``unshare --mount --pid --fork chroot``. After the seal, "first boot"
is simulated with the tools a boot uses (``ssh-keygen -A`` as bakery-ssh-host-keys.service runs it,
``systemd-machine-id-setup``, and systemd-tmpfiles' provision.conf fed the ``ssh.authorized_keys.root``
credential), then sshd runs inside the root on 127.0.0.1 so the real image suite can run over SSH.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bakery import cli, identity, render
from bakery.config import BuildSpec
from bakery.target import image_name
from tests.support import build_in

PROJECT = Path(__file__).resolve().parents[3]
CACHE = Path("/var/tmp/bakery-test-rootfs")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Offline-capable: every prerequisite of 10-prereqs.sh is present, so provisioning does no apt work.
PACKAGES = sorted(
    [
        "systemd",
        "systemd-sysv",
        "dbus",
        "openssh-server",
        "procps",
        "rsyslog",
        "logrotate",
        "acl",
        "ca-certificates",
        "gnupg",
        "curl",  # upstream bakes fetch the vendor keys with it (10-prereqs.sh installs it when missing)
        "apparmor",  # not in images: test_apparmor parses Ubuntu's rsyslogd profile with the real apparmor_parser
    ]
)
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(
    argv: list[str], timeout: float = 300, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell) with a timeout; raise with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc  # type: ignore[no-any-return]


def cached_rootfs() -> Path:
    """The cached pristine root filesystem (built on first use, under a lock)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:16]
    final = CACHE / key / "rootfs"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            partial = CACHE / key / "rootfs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            run(
                ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(partial), MIRROR],
                timeout=900,
            )
            partial.rename(final)
    return final


@dataclass
class Root:
    """A disposable copy of the root filesystem."""

    path: Path

    def chroot(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the root as root, with exactly ``env`` (plus PATH)."""
        variables = [f"{k}={v}" for k, v in sorted({"PATH": CHROOT_PATH, **(env or {})}.items())]
        return run(
            [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                f"--mount-proc={self.path}/proc",
                "chroot",
                str(self.path),
                "env",
                "-i",
                *variables,
                *argv,
            ],
            timeout=timeout,
            check=check,
        )

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")


def fresh_root(dest: Path) -> Root:
    """A copy of the cached root filesystem at ``dest``."""
    run(["cp", "-a", str(cached_rootfs()), str(dest)], timeout=300)
    return Root(dest)


def local_spec(tmp: Path) -> BuildSpec:
    """The local (stand-in) build spec of the project's own configuration, building under ``tmp``."""
    spec = cli.project_settings().specs("local")[0]
    return build_in(spec, tmp)


def rendered(spec: BuildSpec) -> Path:
    """Render ``spec`` with the real renderer (files, artifacts, provision scripts, expectations)."""
    return render.render(spec, (1, 6, 6)).directory


def upload(root: Root, build: Path) -> None:
    """What Packer uploads: files/ and artifacts/ to /tmp/bakery, the scripts next to it."""
    target = root.file("/tmp/bakery")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("files", "artifacts"):
        shutil.copytree(build / name, target / name, symlinks=True)
    scripts = root.file("/tmp/bakery-provision")
    shutil.rmtree(scripts, ignore_errors=True)
    shutil.copytree(build / "provision", scripts)


def image_identity(spec: BuildSpec) -> identity.Identity:
    """The identity a bake of the rendered ``spec`` would give Packer (a fixed bake time and git sha)."""
    fingerprint = json.loads((spec.build_dir / render.FINGERPRINT_FILE).read_text())["fingerprint"]
    name = image_name(spec.family, datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), "harness")
    return identity.Identity(name, spec.variant_name, fingerprint)


def provision(
    root: Root, spec: BuildSpec, only: list[str] | None = None, check: bool = True
) -> list[subprocess.CompletedProcess[str]]:
    """Run the uploaded provisioning scripts in lexical order (``only``: just these names), with the
    environment Packer gives them (the provisioning environment and the image identity)."""
    env = {**render.provision_env(spec), **identity.provision_env(image_identity(spec))}
    results = []
    for script in sorted(root.file("/tmp/bakery-provision").glob("*.sh")):
        if only is not None and script.name not in only:
            continue
        proc = root.chroot(["bash", f"/tmp/bakery-provision/{script.name}"], env=env, check=check)
        results.append(proc)
        if proc.returncode != 0:
            break
    return results


def simulate_first_boot(root: Root, pubkey: Path) -> None:
    """What the first boot of a sealed image does, with the same tools (no systemd runs here)."""
    time.sleep(1.1)  # everything the boot creates is strictly newer than sealed_at (whole seconds)
    root.chroot(["ssh-keygen", "-A"])
    root.chroot(["systemd-machine-id-setup"])
    creds = root.file("/run/bakery-credentials")
    creds.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pubkey, creds / "ssh.authorized_keys.root")
    root.chroot(
        ["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/provision.conf"],
        env={"CREDENTIALS_DIRECTORY": "/run/bakery-credentials"},
    )
    shutil.rmtree(creds)


def keypair(directory: Path) -> tuple[Path, Path]:
    key = directory / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery-test", "-f", str(key)], timeout=30)
    return key, key.with_suffix(".pub")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sshd(root: Root, key: Path, workdir: Path) -> Iterator[Path]:
    """Run sshd inside ``root`` on 127.0.0.1; yield an ssh config (host ``image``) that logs in as root."""
    root.file("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    argv = [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={root.path}/proc",
        "chroot", str(root.path), "/usr/sbin/sshd", "-D", "-e", "-p", str(port),
        "-o", "ListenAddress=127.0.0.1", "-o", "UsePAM=no", "-o", "PidFile=none",
    ]  # fmt: skip
    log = (workdir / "sshd.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    config = workdir / "ssh_config"
    config.write_text(
        "Host image\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        "  User root\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        "  ControlMaster auto\n"
        f"  ControlPath {workdir}/cm-%C\n"
        "  ControlPersist 120\n"
    )
    try:
        deadline = time.monotonic() + 30
        while run(["ssh", "-F", str(config), "image", "true"], timeout=30, check=False).returncode != 0:
            assert proc.poll() is None, f"sshd exited: {(workdir / 'sshd.log').read_text()}"
            assert time.monotonic() < deadline, f"sshd not reachable: {(workdir / 'sshd.log').read_text()}"
            time.sleep(0.3)
        yield config
    finally:
        run(["ssh", "-F", str(config), "-O", "exit", "image"], timeout=30, check=False)
        # unshare --fork ignores SIGTERM while it waits; killing it takes sshd down (--kill-child), and
        # sshd is PID 1 of its namespace, so everything in there goes with it.
        proc.kill()
        proc.wait(timeout=30)
        log.close()


@dataclass
class SuiteResult:
    outcomes: dict[str, str]  # test id -> passed | failed | skipped
    skip_reasons: dict[str, str]
    output: str

    def failed(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome == "failed"}


def run_suite(
    ssh_config: Path, expectations: Path, pubkey: Path, workdir: Path, identity_file: Path | None = None
) -> SuiteResult:
    """Run the real image suite (tests/image) over SSH and collect every test's outcome."""
    junit = workdir / "junit.xml"
    proc = run(
        [
            sys.executable, "-m", "pytest", str(PROJECT / "tests/image"), "-p", "no:cacheprovider", "-q",
            "--hosts=ssh://image", f"--ssh-config={ssh_config}", f"--expectations={expectations}",
            f"--injected-pubkey={pubkey}", f"--junitxml={junit}", "-o", "junit_family=xunit1",
            *([f"--identity={identity_file}"] if identity_file else []),
        ],
        timeout=600,
        check=False,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"the suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    outcomes, reasons = {}, {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        # testinfra adds the host to each id: "t[x-ssh://image]" or "t[ssh://image]" -> "t[x]" or "t"
        name = re.sub(r"\[ssh://[^]]*\]$", "", re.sub(r"-ssh://[^]]*\]$", "]", case.get("name", "")))
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[name] = "failed"
        elif (skipped := case.find("skipped")) is not None:
            outcomes[name] = "skipped"
            reasons[name] = skipped.get("message", "")
        else:
            outcomes[name] = "passed"
    return SuiteResult(outcomes, reasons, proc.stdout)


def tree_snapshot(root: Root, exclude: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, content hash or link target, and ACLs of every entry (mtimes ignored)."""
    snapshot: dict[str, tuple[object, ...]] = {}
    skip = {root.file(p) for p in ("/proc", "/sys", "/dev", "/run", *exclude)}
    for dirpath, dirnames, filenames in os.walk(root.path):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            if path in skip:
                continue
            st = path.lstat()
            rel = "/" + str(path.relative_to(root.path))
            if path.is_symlink():
                detail: object = os.readlink(path)
            elif path.is_file():
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = None
            acl = (
                tuple(
                    sorted(
                        (attr, os.getxattr(path, attr, follow_symlinks=False))
                        for attr in os.listxattr(path, follow_symlinks=False)
                    )
                )
                if not path.is_symlink()
                else ()
            )
            snapshot[rel] = (st.st_mode, st.st_uid, st.st_gid, detail, acl)
    return snapshot


def seal_record(root: Root) -> dict[str, object]:
    data: dict[str, object] = json.loads(root.file("/etc/bakery/seal.json").read_text())
    return data
