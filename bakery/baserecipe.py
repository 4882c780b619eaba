"""The local target's base image recipes (Debian 12, mmdebstrap) and their content keys.

``LOCAL`` is the local target's base; ``GCE_REHEARSAL`` is LOCAL plus the guest side of Google's debian-12
image (issue 15), so a local VM can boot like a Compute Engine instance. Kept apart from
``bakery/local/baseimage.py``, which builds and caches the images: a recipe's key is an input of every local
image's fingerprint (``render.default_source_image``), so render reads it here without depending on the
local target.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

SUITE = "bookworm"
BUILD_USER = "packer"
ROOT_LABEL = "bakery-root"
DISK_MIB = 4096
# The disk stays zlib-compressed (qemu-img's default): the same base compressed with zstd booted 6 s slower
# to SSH under TCG here (44.5/46.7 s against 38.1/40.6 s, interleaved), though zstd compresses ~4x faster.
RECIPE_VERSION = 1

# Boot, network and SSH, then what image provisioning needs anyway (so bakes need no apt in the slow VM).
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-resolved",
    "iproute2",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "grub-pc",
    "openssh-server",
    "sudo",
    "procps",
    "ca-certificates",
    "gnupg",
    "rsyslog",
    "logrotate",
    "acl",
)

# Runs on the host as an mmdebstrap customize hook: $1 = chroot, $2 = public key file, $3 = build user.
CUSTOMIZE_SCRIPT = r"""set -o errexit -o nounset
root=$1 pubkey=$2 user=$3
printf 'bakery\n' >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tbakery\n::1\tlocalhost ip6-localhost\n' >"$root/etc/hosts"
printf 'LABEL=bakery-root\t/\text4\terrors=remount-ro\t0\t1\n' >"$root/etc/fstab"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/80-bakery-dhcp.network"
# The build VM needs one host key: ed25519 takes seconds under TCG, RSA 3072 took 6-48 s (measured).
# A baked image brings its own generator (bakery-ssh-host-keys.service, `ssh-keygen -A`): this one runs
# after it and then finds keys, so a test VM generates exactly what a VM of the shipped image does.
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Create an SSH host key if there is none (local build VM; images ship none)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
After=bakery-ssh-host-keys.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'

[Install]
WantedBy=ssh.service
UNIT
chroot "$root" systemctl enable ssh-host-keys.service systemd-networkd.service systemd-resolved.service
# No LVM here: e2scrub_reap only burns CPU at every boot of these short-lived VMs (measured 2-14 s).
chroot "$root" systemctl mask e2scrub_reap.service
chroot "$root" useradd --create-home --shell /bin/bash --user-group --comment "bakery build user" "$user"
install -d -m 0700 "$root/home/$user/.ssh"
install -m 0600 "$pubkey" "$root/home/$user/.ssh/authorized_keys"
chroot "$root" chown -R "$user:$user" "/home/$user/.ssh"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" >"$root/etc/sudoers.d/90-bakery-build-user"
chmod 0440 "$root/etc/sudoers.d/90-bakery-build-user"
cat >"$root/etc/default/grub.d/50-bakery.cfg" <<'GRUB'
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUB
cat >"$root/usr/local/sbin/bakery-install-grub" <<'INIT'
#!/bin/sh
# PID 1 of the one boot that makes the disk boot by itself; deletes itself, then powers off.
set -o errexit -o nounset
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw /
grub-install --target=i386-pc /dev/vda
update-grub
echo 'grub-pc grub-pc/install_devices multiselect /dev/vda' | debconf-set-selections
rm -f /usr/local/sbin/bakery-install-grub
sync
echo u >/proc/sysrq-trigger
sleep 1
echo BAKERY-GRUB-INSTALLED
echo o >/proc/sysrq-trigger
sleep 60
INIT
chmod 0755 "$root/usr/local/sbin/bakery-install-grub"
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
"""
GRUB_MARKER = "BAKERY-GRUB-INSTALLED"


def content_key(*, suite: str = SUITE, packages: tuple[str, ...] = PACKAGES, customize: str = CUSTOMIZE_SCRIPT) -> str:
    """sha256 over everything that shapes the image (the SSH key is generated with, and kept by, it).

    The defaults are the LOCAL recipe; its key must not change for the same recipe (cached bases)."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": suite,
        "packages": sorted(packages),
        "customize": customize,
        "user": BUILD_USER,
        "disk_mib": DISK_MIB,
        "label": ROOT_LABEL,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Recipe:
    """One base image recipe: its ``name`` names its cache directory, ``packages`` and ``customize`` (the
    whole customize hook script, arguments as for ``CUSTOMIZE_SCRIPT``) shape the image."""

    name: str
    packages: tuple[str, ...]
    customize: str

    @property
    def key(self) -> str:
        """The recipe's content key (LOCAL's is ``content_key()``, unchanged)."""
        return content_key(packages=self.packages, customize=self.customize)


LOCAL = Recipe("local", PACKAGES, CUSTOMIZE_SCRIPT)

# What Google's debian-12 image carries for the guest side and Debian's archive has. Google's build
# (GoogleCloudPlatform/compute-image-tools @ 433e600ca8f2, daisy_workflows/image_build/debian/fai_config/
# package_config/GCE_SPECIFIC, layered on Debian's debian-cloud-images classes, which are not mirrored here
# and were not read) installs from packages.cloud.google.com: google-compute-engine, gce-disk-expand,
# google-osconfig-agent, google-cloud-cli. Those are not in Debian and are left out; google-compute-engine's
# own Depends (GoogleCloudPlatform/guest-configs @ 0a05da0bbcd4, packaging/debian/control) name the agent and
# OS Login, which Debian packages (older versions than Google's repository's).
GCE_GUEST_PACKAGES = (
    # Depends of google-compute-engine (guest-configs packaging/debian/control); Debian bookworm 20211116.00-6+b7
    "google-guest-agent",
    # Depends of google-compute-engine (ibid.); Debian bookworm 20210907.00-1+b3
    "google-compute-engine-oslogin",
    # Depends of google-compute-engine (ibid.)
    "nvme-cli",
    # GCE_SPECIFIC: "To avoid entropy issues when instances boot."
    "haveged",
    # GCE_SPECIFIC: "Useful tools not already in the EXTRAS package config"
    "net-tools",
    # GCE_SPECIFIC: "ISC DHCP client until the agent can create systemd-networkd configs"
    "isc-dhcp-client",
    # GCE_SPECIFIC, under "gcloud cli" (google-cloud-cli itself is Google's repository only)
    "python3",
    # GCE_SPECIFIC "install-norec BOOKWORM" (with systemd-resolved, already in PACKAGES; libnss-resolve is
    # removed there and is not installed here)
    "libpam-systemd",
    "libnss-myhostname",
)
# Not taken from GCE_SPECIFIC: shim-signed and grub-efi-amd64-signed (UEFI Secure Boot; these bases boot
# BIOS with grub-pc, as QEMU's default SeaBIOS does).

# Appended to CUSTOMIZE_SCRIPT (same arguments). Upstream facts, read at the pinned versions:
# - Debian's google-guest-agent 20211116.00-6+b7 ships google-guest-agent.service (Type=notify,
#   Before=ssh.service, After=network-online.target, Restart=always), google-startup-scripts.service and
#   google-shutdown-scripts.service in /lib/systemd/system, a preset enabling all three, and a postinst
#   (dh_installsystemd) that enables them with deb-systemd-helper; google-compute-engine-oslogin
#   20210907.00-1+b3 enables google-oslogin-cache.timer the same way (`dpkg-deb -c`/`-e` of both .debs).
#   The hook checks that this happened in the chroot rather than enabling anything itself.
# - The agent (GoogleCloudPlatform/guest-agent @ 20211116.00, google_guest_agent/instance_setup.go:107-150)
#   sends READY=1 only after its first metadata answer ("In instances without network access, this will become
#   an indefinite wait"), so without a metadata server ssh.service waits for the agent's start timeout (90 s,
#   DefaultTimeoutStartSec in Debian's systemd 252 system.conf) at every boot; google_metadata_script_runner
#   retries the metadata server forever (google_metadata_script_runner/main.go:219-231), which holds the
#   startup unit (Type=oneshot, no start timeout) and up to 90 s of shutdown (TimeoutStopSec=90s). The Packer
#   build VM has no metadata server, so the guest units run only on a machine whose SMBIOS product name is
#   "Google Compute Engine" (what Compute Engine presents, and what the rehearsal's test VM presents):
#   ConditionFirmware=smbios-field(), systemd 252's systemd.unit(5). On such a machine nothing changes.
# - The agent itself creates the users from metadata, the google-sudoers group and
#   /etc/sudoers.d/google_sudoers (non_windows_accounts.go:101-115, 363-422), and new SSH host keys when the
#   instance ID changes (instance_setup.go:160-196): the hook prepares none of that.
# - Google's image refuses root logins over SSH (compute-image-tools, fai_config/scripts/GCE_SPECIFIC/12-sshd,
#   the same sed).
GCE_REHEARSAL_CUSTOMIZE = r"""# --- GCE rehearsal base: the guest side of Google's debian-12 image ---
for unit in google-guest-agent.service google-startup-scripts.service google-shutdown-scripts.service \
    google-oslogin-cache.timer; do
    if ! chroot "$root" systemctl is-enabled --quiet "$unit"; then
        echo "bakery: $unit is not enabled in the rehearsal base (Debian's postinst should have enabled it)" >&2
        exit 1
    fi
    install -d "$root/etc/systemd/system/$unit.d"
    cat >"$root/etc/systemd/system/$unit.d/50-bakery-gce-only.conf" <<'UNIT'
# bakery rehearsal base: these units need the metadata server, which only a Compute Engine machine has.
[Unit]
ConditionFirmware=smbios-field(product_name = "Google Compute Engine")
UNIT
done
sed -i -e 's/^.*PermitRootLogin .*/PermitRootLogin no/' "$root/etc/ssh/sshd_config"
grep -qx 'PermitRootLogin no' "$root/etc/ssh/sshd_config"
"""

GCE_REHEARSAL = Recipe("gce-rehearsal", PACKAGES + GCE_GUEST_PACKAGES, CUSTOMIZE_SCRIPT + GCE_REHEARSAL_CUSTOMIZE)
