"""The local target's base image recipe (Debian 12, mmdebstrap) and its content key.

Kept apart from ``bakery/local/baseimage.py``, which builds and caches the image: the key is an input of
every local image's fingerprint (``render.default_source_image``), so render reads it here without
depending on the local target.
"""

from __future__ import annotations

import hashlib
import json

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


def content_key(*, suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    """sha256 over everything that shapes the image (the SSH key is generated with, and kept by, it)."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": suite,
        "packages": sorted(packages),
        "customize": CUSTOMIZE_SCRIPT,
        "user": BUILD_USER,
        "disk_mib": DISK_MIB,
        "label": ROOT_LABEL,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
