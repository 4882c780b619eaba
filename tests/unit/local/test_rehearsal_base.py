"""The GCE rehearsal base recipe's customize fragment, run for real on a directory tree, and the recipe's way
through the base image cache and the local target. (That the built image boots, with the guest agent's units
enabled, is proven by the base build itself: its hook and its verification boot.)

The fragment runs ``chroot ROOT systemctl ...``; here a ``chroot`` on PATH runs the host's own systemctl
(systemd 252, as in bookworm) with ``--root=ROOT`` instead, so no root and no Debian tree are needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bakery import baserecipe, cli, render
from bakery.local import baseimage
from bakery.local.target import LocalTarget

# What Debian's google-guest-agent 20211116.00-6+b7 and google-compute-engine-oslogin 20210907.00-1+b3 ship
# and enable (their .debs: lib/systemd/system/*, postinst); trimmed to what `systemctl enable` reads.
GUEST_UNITS = {
    "google-guest-agent.service": "[Service]\nType=notify\nExecStart=/usr/bin/google_guest_agent\n",
    "google-startup-scripts.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    "google-shutdown-scripts.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    "google-oslogin-cache.timer": "[Timer]\nOnBootSec=5\n",
}
INSTALL = {".service": "multi-user.target", ".timer": "timers.target"}
SSHD_CONFIG = "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\n#StrictModes yes\n"
CONDITION = 'ConditionFirmware=smbios-field(product_name = "Google Compute Engine")'


@pytest.fixture
def guest_root(tmp_path: Path) -> Path:
    """A directory tree with the guest units installed (not yet enabled) and Debian's sshd_config line."""
    root = tmp_path / "root"
    units = root / "lib/systemd/system"
    units.mkdir(parents=True)
    for name, body in GUEST_UNITS.items():
        (units / name).write_text(f"{body}\n[Install]\nWantedBy={INSTALL[Path(name).suffix]}\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text(SSHD_CONFIG)
    return root


def systemctl_root(root: Path, *args: str) -> None:
    subprocess.run(["systemctl", f"--root={root}", *args], check=True, timeout=60, capture_output=True)


def run_fragment(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    chroot = shim / "chroot"
    chroot.write_text('#!/bin/sh\nroot=$1\nshift\n[ "$1" = systemctl ] && shift\nexec systemctl --root="$root" "$@"\n')
    chroot.chmod(0o755)
    script = tmp_path / "fragment.sh"
    script.write_text("set -o errexit -o nounset\nroot=$1\n" + baserecipe.GCE_REHEARSAL_CUSTOMIZE)
    env = {"PATH": f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C"}
    return subprocess.run(
        ["sh", str(script), str(root)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_fragment_conditions_the_guest_units_on_compute_engine_firmware(guest_root: Path, tmp_path: Path) -> None:
    systemctl_root(guest_root, "enable", *GUEST_UNITS)  # what Debian's postinsts do under mmdebstrap
    done = run_fragment(guest_root, tmp_path)
    assert done.returncode == 0, done.stderr
    for name in GUEST_UNITS:
        dropin = guest_root / f"etc/systemd/system/{name}.d/50-bakery-gce-only.conf"
        assert CONDITION in dropin.read_text().splitlines()
    # Google's image: no root logins over SSH (compute-image-tools GCE_SPECIFIC/12-sshd).
    assert (guest_root / "etc/ssh/sshd_config").read_text().splitlines()[1] == "PermitRootLogin no"
    # Nothing else is prepared for the agent: it creates users, google-sudoers and host keys itself.
    assert not (guest_root / "etc/sudoers.d").exists()


def test_fragment_fails_the_build_when_a_guest_unit_is_not_enabled(guest_root: Path, tmp_path: Path) -> None:
    systemctl_root(guest_root, "enable", *[n for n in GUEST_UNITS if n != "google-startup-scripts.service"])
    done = run_fragment(guest_root, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "bakery: google-startup-scripts.service is not enabled in the rehearsal base "
        "(Debian's postinst should have enabled it)"
    )


def test_fragment_fails_when_sshd_config_has_no_permitrootlogin_line(guest_root: Path, tmp_path: Path) -> None:
    systemctl_root(guest_root, "enable", *GUEST_UNITS)
    (guest_root / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    assert run_fragment(guest_root, tmp_path).returncode != 0


def test_the_condition_parses_in_systemd_252_and_a_broken_one_does_not() -> None:
    def check(condition: str) -> str:
        done = subprocess.run(
            ["systemd-analyze", "condition", condition], capture_output=True, text=True, timeout=60, check=False
        )
        return done.stdout + done.stderr

    # Evaluated ("failed" on a machine without Compute Engine firmware, "succeeded" on one), not rejected as
    # unparsable ("Couldn't determine result ... Invalid argument", as for the same condition without its
    # operator).
    good = check(CONDITION)
    assert (
        f"{CONDITION} failed" in good or f"{CONDITION} succeeded" in good
    ) and "Couldn't determine result" not in good
    broken = check('ConditionFirmware=smbios-field(product_name "Google Compute Engine")')
    assert "Couldn't determine result" in broken and "Invalid argument" in broken


def test_rehearsal_customize_script_passes_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / "customize.sh"
    script.write_text(baserecipe.GCE_REHEARSAL.customize)
    done = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
    # The check can fail: the same fragment with one variable left unquoted does.
    good_line = """grep -qx 'PermitRootLogin no' "$root/etc/ssh/sshd_config"\n"""
    broken_text = baserecipe.GCE_REHEARSAL.customize.replace(good_line, good_line.replace('"', ""))
    assert broken_text != baserecipe.GCE_REHEARSAL.customize
    script.write_text(broken_text)
    broken = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "SC2086" in broken.stdout


def fake_cached_base(cache: Path, recipe: baserecipe.Recipe) -> Path:
    """A complete cache entry as ensure_base_image leaves it (without the multi-minute build)."""
    directory = baseimage.base_dir(cache, recipe)
    directory.mkdir(parents=True)
    meta = {"key": recipe.key, "recipe_name": recipe.name, "user": "packer", "suite": "bookworm", "kernel": "k"}
    (directory / "meta.json").write_text(json.dumps(meta))
    (directory / "disk.qcow2").write_bytes(recipe.name.encode())
    (directory / "id_ed25519").write_text("")
    return directory


def test_base_dir_names(tmp_path: Path) -> None:
    assert baseimage.base_dir(tmp_path) == tmp_path / "base-72ecf0bcbeca"
    assert baseimage.base_dir(tmp_path, baserecipe.LOCAL) == tmp_path / "base-72ecf0bcbeca"
    rehearsal = baserecipe.GCE_REHEARSAL
    assert baseimage.base_dir(tmp_path, rehearsal) == tmp_path / f"base-gce-rehearsal-{rehearsal.key[:12]}"


def test_ensure_base_image_takes_each_recipes_own_cache_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rehearsal_dir = fake_cached_base(cache, baserecipe.GCE_REHEARSAL)
    lines: list[str] = []
    image = baseimage.ensure_base_image(cache, timeout=5, log=lines.append, recipe=baserecipe.GCE_REHEARSAL)
    assert (image.directory, image.key) == (rehearsal_dir, baserecipe.GCE_REHEARSAL.key)
    assert lines == [f"base image: cached {rehearsal_dir / 'disk.qcow2'}"]
    local_dir = fake_cached_base(cache, baserecipe.LOCAL)
    assert baseimage.ensure_base_image(cache, timeout=5, log=lines.append).directory == local_dir
    # A LOCAL entry is not taken for the rehearsal recipe, nor the other way round.
    assert baseimage.load_base_image(local_dir, baserecipe.GCE_REHEARSAL.key) is None
    assert baseimage.load_base_image(rehearsal_dir, baserecipe.LOCAL.key) is None


def test_local_target_uses_its_recipe(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(
        f"bakery:\n  build_dir: {tmp_path / 'build'}\n  environments:\n    local:\n      local:\n"
        f"        cache_dir: {tmp_path / 'cache'}\n        registry_dir: {tmp_path / 'registry'}\n"
    )
    spec = cli.project_settings(runtime).specs("local")[0]
    say: list[str] = []
    local = LocalTarget(spec)
    rehearsal = LocalTarget(spec, recipe=baserecipe.GCE_REHEARSAL)
    # Its recipe's key is the source image: a rehearsal bake's fingerprint differs from a local bake's.
    assert local.source_image(say.append) == render.default_source_image(spec)
    assert local.source_image(say.append) == f"local-base/{baserecipe.LOCAL.key}"
    assert rehearsal.source_image(say.append) == f"local-base/{baserecipe.GCE_REHEARSAL.key}"
    assert local.plan(tmp_path)[0].endswith("(recipe local)")
    fake_cached_base(local.cache_dir, baserecipe.GCE_REHEARSAL)
    assert rehearsal.plan(tmp_path)[0] == (
        f"base image: cached {baseimage.base_dir(local.cache_dir, baserecipe.GCE_REHEARSAL) / 'disk.qcow2'}"
        " (recipe gce-rehearsal)"
    )
    assert local.plan(tmp_path)[0].startswith("base image: build it with mmdebstrap")
