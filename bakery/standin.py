"""Stand-in ``osquery`` and ``fluent-package`` .debs for offline bakes: real names and paths, no real work.

No osquery or Fluentd binary can be installed here, so offline pipeline tests bake these instead. They
are versioned ``0.0.0~standin`` and say "STAND-IN" in their description and output. The osqueryd
stand-in does what the image's plumbing depends on: it creates the syslog FIFO (mode 0460, group syslog
when it exists), a pidfile and a database directory with an IDENTITY file, holds the database's lock as
osqueryd does (so ``--config_check`` next to it fails unless ``--disable_database``), and drains the FIFO, keeping
lines that contain ``bakery-probe`` (in :data:`PROBE_LOG` next to its pidfile) so the image suite can
prove rsyslog reaches the pipe. The
fluent-gem stand-in records ``name version`` of each gem it is asked to install in :data:`GEM_RECORD`.

Builds are byte-identical on every run: fixed mtimes (SOURCE_DATE_EPOCH), modes and owners,
``dpkg-deb --root-owner-group -Zgzip``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bakery.errors import CommandError, ToolMissingError

STANDIN_VERSION = "0.0.0~standin"
ARCH = "amd64"
SOURCE_DATE_EPOCH = 1700000000
GEM_RECORD = "/opt/fluent/lib/standin-gems.txt"
PROBE_LOG = "standin-syslog-probe.log"  # next to the pidfile
PROBE_TAG = "bakery-probe"
TIMEOUT_S = 60
MAINTAINER = "osquery-bakery <osquery-bakery@localhost>"

OSQUERYD = f"""#!/bin/sh
# STAND-IN: not osquery. Built by osquery-bakery for offline pipeline tests; it runs no queries.
# It creates what the image's plumbing relies on: the syslog FIFO, the pidfile and the database.
set -eu
name=$(basename "$0")
case " $* " in
  *" --version "*) echo "$name version {STANDIN_VERSION} (STAND-IN)"; exit 0 ;;
esac
if [ "$name" = osqueryi ]; then
  echo "osqueryi version {STANDIN_VERSION} (STAND-IN): not osquery, no SQL" >&2
  exit 1
fi
flagfile=/etc/osquery/osquery.flags
conf=/etc/osquery/osquery.conf
config_check=false
disable_database=false
while [ $# -gt 0 ]; do
  case "$1" in
    --flagfile) flagfile=$2; shift 2 ;;
    --flagfile=*) flagfile=${{1#--flagfile=}}; shift ;;
    --config_path) conf=$2; shift 2 ;;
    --config_path=*) conf=${{1#--config_path=}}; shift ;;
    --config_check) config_check=true; shift ;;
    --disable_database | --disable_database=true) disable_database=true; shift ;;
    *) shift ;;
  esac
done
flag() {{ sed -n "s/^--$1=//p" "$flagfile" | tail -n 1; }}
pipe=$(flag syslog_pipe_path); pipe=${{pipe:-/var/osquery/syslog_pipe}}
pidfile=$(flag pidfile); pidfile=${{pidfile:-/var/osquery/osqueryd.pidfile}}
db=$(flag database_path); db=${{db:-/var/osquery/osquery.db}}
# Like osquery 5.23.1, one process holds the database (RocksDB's LOCK file), and --config_check opens
# it before reading the config unless --disable_database (osquery/core/init.cpp:685-690, 733-743;
# osquery/database/database.cpp:89-92, 487-500: 25 tries, 200 ms apart, then exit 1).
lock_database() {{
  mkdir -p "$db"
  exec 4>>"$db/LOCK"
  tries=0
  until flock -n 4; do
    tries=$((tries + 1))
    if [ "$tries" -ge 25 ]; then
      echo "IO error: While lock file: $db/LOCK: Resource temporarily unavailable" >&2
      exit 1
    fi
    sleep 0.2
  done
}}
if [ "$config_check" = true ]; then
  [ "$disable_database" = true ] || lock_database
  if [ ! -f "$conf" ]; then
    echo "Error reading config: config file does not exist: $conf" >&2
    exit 1
  fi
  exit 0
fi
lock_database
mkdir -p "$(dirname "$pidfile")"
[ -s "$db/IDENTITY" ] || cat /proc/sys/kernel/random/uuid > "$db/IDENTITY"
echo $$ > "$pidfile"
if [ "$(flag enable_syslog)" = true ]; then
  [ -p "$pipe" ] || {{ rm -f "$pipe"; mkfifo -m 0460 "$pipe"; }}
  if getent group syslog >/dev/null; then chgrp syslog "$pipe"; fi
  exec 3<>"$pipe"
  grep --line-buffered -F {PROBE_TAG} <&3 >> "$(dirname "$pidfile")/{PROBE_LOG}" &
  reader=$!
fi
trap 'rm -f "$pidfile"; kill ${{reader:-}} ${{sleeper:-}} 2>/dev/null; exit 0' TERM INT
while :; do sleep 3600 & sleeper=$!; wait $sleeper; done
"""

OSQUERYCTL = """#!/bin/sh
# STAND-IN: not osquery.
echo "osqueryctl (STAND-IN): not osquery" >&2
exit 1
"""

OSQUERYD_UNIT = """[Unit]
Description=The osquery Daemon (STAND-IN: not osquery)
After=network.target syslog.service

[Service]
TimeoutStartSec=0
EnvironmentFile=/etc/default/osqueryd
ExecStart=/opt/osquery/bin/osqueryd \\
  --flagfile $FLAG_FILE \\
  --config_path $CONFIG_FILE
Restart=on-failure
KillMode=control-group
KillSignal=SIGTERM
CPUQuota=20%

[Install]
WantedBy=multi-user.target
"""

OSQUERYD_DEFAULT = """FLAG_FILE="/etc/osquery/osquery.flags"
CONFIG_FILE="/etc/osquery/osquery.conf"
"""

FLUENTD = f"""#!/bin/sh
# STAND-IN: not Fluentd. Built by osquery-bakery for offline pipeline tests; it ships nothing.
case " $* " in
  *" --version "*) echo "fluent-package {STANDIN_VERSION} (STAND-IN: not Fluentd)"; exit 0 ;;
  *" --dry-run "*) echo "fluentd (STAND-IN): cannot check configuration" >&2; exit 1 ;;
esac
trap 'kill ${{sleeper:-}} 2>/dev/null; exit 0' TERM INT
while :; do sleep 3600 & sleeper=$!; wait $sleeper; done
"""

FLUENT_GEM = f"""#!/bin/sh
# STAND-IN: not RubyGems. Records "name version" of each requested gem in {GEM_RECORD}.
set -eu
record={GEM_RECORD}
usage() {{ echo "fluent-gem (STAND-IN): unsupported: $*" >&2; exit 64; }}
cmd=${{1:-}}; [ $# -gt 0 ] && shift
name=; version=; installed=false
while [ $# -gt 0 ]; do
  case "$1" in
    -v|--version) version=$2; shift 2 ;;
    -i|--installed) installed=true; shift ;;
    --local|--no-document|-e|--exact|--conservative|--minimal-deps) shift ;;
    -*) usage "$1" ;;
    *.gem) base=$(basename "$1" .gem); name=${{base%-*}}; version=${{base##*-}}; shift ;;
    *) name=$1; shift ;;
  esac
done
[ -n "$name" ] && [ -n "$version" ] || usage "$cmd needs a gem name and a version"
touch "$record"
case "$cmd" in
  install)
    grep -qxF "$name $version" "$record" || echo "$name $version" >> "$record"
    echo "Successfully installed $name-$version (STAND-IN)" ;;
  list)
    [ "$installed" = true ] || usage "list without --installed"
    if grep -qxF "$name $version" "$record"; then echo true; else echo false; exit 1; fi ;;
  *) usage "$cmd" ;;
esac
"""

FLUENTD_UNIT = """[Unit]
Description=fluentd: All in one package of Fluentd (STAND-IN: not Fluentd)
After=network-online.target
Wants=network-online.target

[Service]
User=_fluentd
Group=_fluentd
Environment=FLUENT_CONF=/etc/fluent/fluentd.conf
Environment=FLUENT_PACKAGE_LOG_FILE=/var/log/fluent/fluentd.log
EnvironmentFile=-/etc/default/fluentd
ExecStart=/opt/fluent/bin/fluentd --log $FLUENT_PACKAGE_LOG_FILE -c $FLUENT_CONF
Restart=always

[Install]
WantedBy=multi-user.target
"""

FLUENTD_CONF = """# STAND-IN default configuration of fluent-package (replaced by the image's own).
"""

FLUENT_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent group _fluentd >/dev/null || groupadd --system _fluentd
  getent passwd _fluentd >/dev/null || useradd --system --gid _fluentd --home-dir /var/lib/fluent \\
    --no-create-home --shell /usr/sbin/nologin _fluentd
  for dir in /var/log/fluent /var/lib/fluent; do
    mkdir -p "$dir"
    chown _fluentd:_fluentd "$dir"
  done
fi
"""


def _control(package: str, description: str, extra: str = "") -> str:
    return (
        f"Package: {package}\n"
        f"Version: {STANDIN_VERSION}\n"
        f"Architecture: {ARCH}\n"
        f"Maintainer: {MAINTAINER}\n"
        "Section: admin\n"
        "Priority: optional\n"
        f"{extra}"
        f"Description: STAND-IN: not {description}\n"
        " Built by osquery-bakery for offline pipeline tests. It has the real package's name and\n"
        " paths but does none of its work. Never ship an image that carries it.\n"
    )


def _osquery_tree() -> tuple[dict[str, tuple[int, str]], dict[str, str], list[str]]:
    files = {
        "opt/osquery/bin/osqueryd": (0o755, OSQUERYD),
        "opt/osquery/bin/osqueryctl": (0o755, OSQUERYCTL),
        "usr/lib/systemd/system/osqueryd.service": (0o644, OSQUERYD_UNIT),
        "etc/default/osqueryd": (0o644, OSQUERYD_DEFAULT),
        "DEBIAN/control": (0o644, _control("osquery", "osquery", "Homepage: https://osquery.io\n")),
        "DEBIAN/conffiles": (0o644, "/etc/default/osqueryd\n"),
    }
    links = {
        "usr/bin/osqueryd": "/opt/osquery/bin/osqueryd",
        "usr/bin/osqueryi": "/opt/osquery/bin/osqueryd",
        "usr/bin/osqueryctl": "/opt/osquery/bin/osqueryctl",
    }
    return files, links, ["var/osquery", "var/log/osquery", "etc/osquery"]


def _fluent_tree() -> tuple[dict[str, tuple[int, str]], dict[str, str], list[str]]:
    files = {
        "opt/fluent/bin/fluentd": (0o755, FLUENTD),
        "usr/sbin/fluent-gem": (0o755, FLUENT_GEM),
        "usr/lib/systemd/system/fluentd.service": (0o644, FLUENTD_UNIT),
        "etc/fluent/fluentd.conf": (0o644, FLUENTD_CONF),
        "DEBIAN/control": (0o644, _control("fluent-package", "Fluentd (fluent-package)")),
        "DEBIAN/conffiles": (0o644, "/etc/fluent/fluentd.conf\n"),
        "DEBIAN/postinst": (0o755, FLUENT_POSTINST),
    }
    return files, {}, ["etc/fluent/conf.d", "etc/fluent/plugin", "opt/fluent/lib"]


PACKAGES = {"osquery": _osquery_tree, "fluent-package": _fluent_tree}


def deb_name(package: str) -> str:
    """File name of a stand-in package (the vendor's naming: name_version_arch.deb)."""
    return f"{package}_{STANDIN_VERSION}_{ARCH}.deb"


def _write_tree(root: Path, files: dict[str, tuple[int, str]], links: dict[str, str], dirs: list[str]) -> None:
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    md5sums = []
    for rel, (mode, text) in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        if not rel.startswith("DEBIAN/"):
            md5sums.append(f"{hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}  {rel}\n")
    for rel, target in sorted(links.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    (root / "DEBIAN/md5sums").write_text("".join(sorted(md5sums)))
    (root / "DEBIAN/md5sums").chmod(0o644)
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def build(package: str, dest_dir: Path) -> Path:
    """Build the stand-in ``package`` into ``dest_dir`` (byte-identical every time) and return its path."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise ToolMissingError("dpkg-deb not found: install it with apt-get install dpkg-dev")
    files, links, dirs = PACKAGES[package]()
    out = dest_dir / deb_name(package)
    with tempfile.TemporaryDirectory(prefix="bakery-standin-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir(mode=0o755)
        _write_tree(root, files, links, dirs)
        argv = [dpkg_deb, "--root-owner-group", "-Zgzip", "-z9", "--build", str(root), str(out)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, None, str(exc.stderr or "")[-2000:]) from exc
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, (proc.stdout + proc.stderr)[-2000:])
    return out
