"""The local base image's recipe: what it does at boot to stay fast without changing what a baked image does.

(That the recipe boots is proven by the base build's own verification boot, and the baked image's checks
by tests/e2e; these pin the parts a rename elsewhere could silently undo.)
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from bakery import baserecipe, imagefiles


def unit(name: str) -> dict[str, list[str]]:
    """``key: [values]`` of a unit file written by the customize script's ``cat >… <<'UNIT'``."""
    match = re.search(
        rf'/etc/systemd/system/{re.escape(name)}" <<\'UNIT\'\n(.*?)\nUNIT\n', baserecipe.CUSTOMIZE_SCRIPT, re.S
    )
    assert match, f"the customize script writes no {name}"
    settings: dict[str, list[str]] = {}
    for line in match.group(1).splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_base_host_key_unit_yields_to_the_images_own_generator() -> None:
    keys = unit("ssh-host-keys.service")
    image_unit = PurePosixPath(imagefiles.HOSTKEYS_UNIT).name
    # Ordered after the baked image's generator and skipped once keys exist: a test VM generates exactly
    # the keys a VM of the shipped image does, and never a second set in parallel.
    assert keys["After"] == [image_unit]
    assert keys["ConditionPathExistsGlob"] == ["!/etc/ssh/ssh_host_*_key"]
    assert keys["Before"] == ["ssh.service"]
    # The build VM itself needs one key: ed25519 only (RSA 3072 took 6-48 s under TCG here).
    (command,) = keys["ExecStart"]
    assert "-t ed25519" in command and "-A" not in command.split()


def test_no_boot_menu_delay_and_no_e2scrub_at_boot() -> None:
    script = baserecipe.CUSTOMIZE_SCRIPT
    assert "GRUB_TIMEOUT=0\n" in script and "GRUB_TIMEOUT_STYLE=hidden\n" in script
    assert 'chroot "$root" systemctl mask e2scrub_reap.service' in script


def test_recipe_changes_change_the_cache_key() -> None:
    before = baserecipe.content_key()
    assert baserecipe.content_key(packages=(*baserecipe.PACKAGES, "less")) != before


# LOCAL's key before the Recipe type existed (the cache /var/tmp/bakery-test-cache/base-72ecf0bcbeca).
LOCAL_KEY_BEFORE_RECIPES = "72ecf0bcbecabf68446e33d2bc0c1fc32d338c443c8621d14c3b1df2eed27b2e"


def test_local_recipe_key_is_unchanged() -> None:
    assert baserecipe.LOCAL.key == baserecipe.content_key() == LOCAL_KEY_BEFORE_RECIPES
    assert (baserecipe.LOCAL.packages, baserecipe.LOCAL.customize) == (
        baserecipe.PACKAGES,
        baserecipe.CUSTOMIZE_SCRIPT,
    )


def test_rehearsal_recipe_is_local_plus_the_guest_side() -> None:
    rehearsal = baserecipe.GCE_REHEARSAL
    assert rehearsal.key != baserecipe.LOCAL.key
    assert rehearsal.name != baserecipe.LOCAL.name
    assert rehearsal.packages[: len(baserecipe.PACKAGES)] == baserecipe.PACKAGES
    for name in ("google-guest-agent", "google-compute-engine-oslogin"):
        assert name in rehearsal.packages and name not in baserecipe.PACKAGES
    assert len(set(rehearsal.packages)) == len(rehearsal.packages)
    # LOCAL's hook runs whole (build user, host key unit, GRUB, empty machine-id), then the fragment.
    assert rehearsal.customize == baserecipe.CUSTOMIZE_SCRIPT + baserecipe.GCE_REHEARSAL_CUSTOMIZE
    # Either part changing changes the key.
    assert baserecipe.Recipe("r", rehearsal.packages, rehearsal.customize + "true\n").key != rehearsal.key
    assert baserecipe.Recipe("r", (*rehearsal.packages, "less"), rehearsal.customize).key != rehearsal.key
