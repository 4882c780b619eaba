"""What the image carries, computed from the configuration: the decisions behind ``templates/image/``.

The renderer merges :func:`context` into the template context of every file under ``templates/image/``
and writes :func:`expectations` next to the rendered files for the image test suite. Provisioning
scripts only apply what these functions decide (the MANIFEST, the seal list, the units to enable).
Every value that reaches a rendered file is validated here, so a bad value is one ConfigError line.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass
from typing import Any

from bakery import osqueryflags, standin
from bakery.config import BuildSpec, FlagValue
from bakery.errors import ConfigError

# Paths in the image.
OSQUERY_CONF = "/etc/osquery/osquery.conf"
OSQUERY_FLAGS = "/etc/osquery/osquery.flags"
PACKS_DIR = "/etc/osquery/packs"
OSQUERYD_DROPIN = "/etc/systemd/system/osqueryd.service.d/bakery-syslog-pipe.conf"
PIPE_READY = "/usr/local/lib/bakery/osquery-syslog-pipe-ready"
RSYSLOG_SNIPPET = "/etc/rsyslog.d/60-osquery.conf"
FLUENT_CONF = "/etc/fluent/fluentd.conf"
FLUENT_SNIPPET = "/etc/fluent/conf.d/osquery.conf"
FLUENT_USER = "_fluentd"
FLUENT_LOG_DIR = "/var/log/fluent"
FLUENT_BUFFER = "/var/log/fluent/buffer/osquery-pubsub"
LOG_ACL_TMPFILES = "/etc/tmpfiles.d/bakery-osquery-logs.conf"
LOGROTATE_CONF = "/etc/logrotate.d/osquery"
HOSTKEYS_UNIT = "/etc/systemd/system/bakery-ssh-host-keys.service"
IMAGE_INFO = "/etc/bakery/image.json"
SEAL_LIST = "/etc/bakery/seal.list"
SEAL_MARKER = "/etc/bakery/seal.json"
# rsyslogd's AppArmor profile (Ubuntu's rsyslog package; enforced from 8.2210.0-3ubuntu2, i.e. 24.04) and its
# site include (rsyslog/rsyslog-pkg-ubuntu noble/v8-stable/debian/usr.sbin.rsyslogd:54). Debian 12 ships none.
RSYSLOG_APPARMOR_PROFILE = "/etc/apparmor.d/usr.sbin.rsyslogd"
RSYSLOG_APPARMOR_LOCAL = "/etc/apparmor.d/local/usr.sbin.rsyslogd"
KEYRINGS = {"osquery": "/etc/apt/keyrings/osquery.asc", "fluent": "/etc/apt/keyrings/fluent.asc"}
APT_SOURCES = {
    "osquery": "/etc/apt/sources.list.d/osquery.sources",
    "fluent": "/etc/apt/sources.list.d/fluent.sources",
}

PIPE_WAIT_SECONDS = 60
ENABLED_UNITS = ("bakery-ssh-host-keys.service", "osqueryd.service", "rsyslog.service", "fluentd.service")
PREREQS = ("rsyslog", "logrotate", "acl", "ca-certificates", "gnupg")

# Flags the image relies on; config may override values (but not those in PINNED_FLAGS).
BASE_FLAGS: dict[str, FlagValue] = {
    "config_plugin": "filesystem",
    "logger_plugin": "filesystem",
    "logger_path": "/var/log/osquery",
    "logger_mode": "0640",
    "database_path": "/var/osquery/osquery.db",
    "pidfile": "/var/osquery/osqueryd.pidfile",
    "extensions_socket": "/var/osquery/osquery.em",
    "host_identifier": "instance",
    "enable_syslog": True,
    "syslog_pipe_path": "/var/osquery/syslog_pipe",
    "disable_events": False,
}
PINNED_FLAGS: dict[str, FlagValue] = {"config_plugin": "filesystem", "enable_syslog": True}
FORBIDDEN_FLAGS = {
    "disable_watchdog": "the watchdog keeps runaway queries in check: remove it",
    "utc": "deprecated (always on since osquery 5): remove it",
    "worker_threads": "deprecated: remove it",
    "config_path": "osqueryd.service passes it from /etc/default/osqueryd: remove it",
    "flagfile": "osqueryd.service passes it from /etc/default/osqueryd: remove it",
}
PATH_FLAGS = ("logger_path", "database_path", "pidfile", "extensions_socket", "syslog_pipe_path")
HISTORY_FILES = (".bash_history", ".lesshst", ".viminfo", ".python_history")

_SAFE_PATH = re.compile(r"^/(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._/-]+$")
_FLAG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BARE_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+%:/-]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MODE = re.compile(r"^0[0-7]{3}$")


@dataclass(frozen=True)
class ManifestEntry:
    """One file to install: mode, owner, group, absolute destination, source relative to files/."""

    mode: str
    owner: str
    group: str
    dest: str
    src: str

    def line(self) -> str:
        return f"{self.mode} {self.owner}:{self.group} {self.dest} {self.src}"


def _flag_text(value: FlagValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _safe_path(key: str, value: str) -> str:
    if not _SAFE_PATH.match(value):
        raise ConfigError(
            f"{key}: {value!r} is not a plain absolute path: use letters, digits, '.', '_', '-' and '/' only"
        )
    return value


def bare_word(key: str, value: str) -> str:
    """A value written unquoted into Fluentd or deb822 text: only characters that need no quoting."""
    if not _BARE_WORD.match(value):
        raise ConfigError(
            f"{key}: {value!r} contains characters that would need quoting: use letters, digits and ._~+%:/-"
        )
    return value


def flags(spec: BuildSpec) -> dict[str, FlagValue]:
    """The osqueryd flags: the image's base flags overlaid with ``bakery.osquery.flags``, validated.

    Every flag must exist in the Linux build of ``bakery.osquery.version`` with a value its type parses
    (osqueryd exits on a bad flagfile line), and so must every ``bakery.osquery.options`` entry (osquery
    would ignore it): see :mod:`bakery.osqueryflags`.
    """
    osq = spec.config.osquery
    table = osqueryflags.load_flags(osq.version)
    configured = osq.flags
    for name, value in configured.items():
        key = f"bakery.osquery.flags.{name}"
        if name in FORBIDDEN_FLAGS:
            raise ConfigError(f"{key}: must not be set: {FORBIDDEN_FLAGS[name]}")
        if not _FLAG_NAME.match(name):
            raise ConfigError(f"{key}: not an osquery flag name: use lowercase letters, digits and _")
        osqueryflags.check_flag(table, key, name, _flag_text(value))
        if name in PINNED_FLAGS and _flag_text(value) != _flag_text(PINNED_FLAGS[name]):
            raise ConfigError(f"{key}: the image needs {_flag_text(PINNED_FLAGS[name])!r}: remove it or set that")
        text = _flag_text(value)
        if any(c.isspace() or c in "\"'" or not c.isprintable() for c in text):
            raise ConfigError(f"{key}: {text!r}: flagfile values are read literally: no spaces or quotes")
    for name, value in osq.options.items():
        osqueryflags.check_option(table, f"bakery.osquery.options.{name}", name, _flag_text(value))
    merged = {**BASE_FLAGS, **configured}
    for name in PATH_FLAGS:
        _safe_path(f"bakery.osquery.flags.{name}", _flag_text(merged[name]))
    if "filesystem" not in _flag_text(merged["logger_plugin"]).split(","):
        raise ConfigError(
            "bakery.osquery.flags.logger_plugin: must include 'filesystem' (Fluentd tails its logs): add it"
        )
    mode = _flag_text(merged["logger_mode"])
    if not _MODE.match(mode) or not int(mode, 8) & 0o040 or int(mode, 8) & 0o007:
        raise ConfigError(
            f"bakery.osquery.flags.logger_mode: {mode!r}: use an octal mode with group read and nothing for "
            "others (e.g. '0640'): Fluentd reads through a group-class ACL entry"
        )
    return dict(sorted(merged.items()))


def flagfile_lines(spec: BuildSpec) -> list[str]:
    """``--name=value`` lines of /etc/osquery/osquery.flags, sorted by name."""
    return [f"--{name}={_flag_text(value)}" for name, value in flags(spec).items()]


def flag(spec: BuildSpec, name: str) -> str:
    """One flag's value as written in the flagfile."""
    return _flag_text(flags(spec)[name])


def osquery_conf(spec: BuildSpec) -> dict[str, Any]:
    """The osquery.conf document: options, (empty) schedule, decorators and the shipped packs."""
    osq = spec.config.osquery
    for name in osq.options:
        if name in FORBIDDEN_FLAGS:
            raise ConfigError(f"bakery.osquery.options.{name}: must not be set: {FORBIDDEN_FLAGS[name]}")
    decorators: dict[str, Any] = {}
    if osq.decorators.load:
        decorators["load"] = list(osq.decorators.load)
    if osq.decorators.always:
        decorators["always"] = list(osq.decorators.always)
    if osq.decorators.interval:
        for interval in osq.decorators.interval:
            if not interval.isdigit() or int(interval) % 60:
                raise ConfigError(
                    f"bakery.osquery.decorators.interval.{interval}: use a number of seconds divisible by 60"
                )
        decorators["interval"] = {k: list(v) for k, v in osq.decorators.interval.items()}
    conf: dict[str, Any] = {
        "options": dict(osq.options),
        "schedule": {},
        "packs": {name: f"{PACKS_DIR}/{name}.conf" for name in spec.packs},
    }
    if decorators:
        conf["decorators"] = decorators
    return conf


def build_user(spec: BuildSpec) -> str:
    """The SSH user Packer provisions as (its authorized_keys are sealed away)."""
    user = spec.variant.ssh_username
    if not _USER.match(user):
        raise ConfigError(f"bakery.variants.{spec.variant_name}.ssh_username: {user!r} is not a valid user name")
    return user


def log_files(spec: BuildSpec) -> dict[str, str]:
    """osquery's result and snapshot logs, which Fluentd tails and logrotate rotates."""
    logger_path = flag(spec, "logger_path")
    return {
        "results": f"{logger_path}/osqueryd.results.log",
        "snapshots": f"{logger_path}/osqueryd.snapshots.log",
    }


def pos_files() -> dict[str, str]:
    """Fluentd in_tail position files, one per source (never shared)."""
    return {kind: f"{FLUENT_LOG_DIR}/osquery-{kind}.pos" for kind in ("results", "snapshots")}


def seal_items(spec: BuildSpec) -> list[tuple[str, str]]:
    """What 90-seal.sh does, in order (``stop``, ``remove-keys``, ``remove``, ``empty``), then proves done."""
    user = build_user(spec)
    homes = ["/root"] + ([f"/home/{user}"] if user != "root" else [])
    items = [
        ("stop", "osqueryd.service"),
        ("stop", "fluentd.service"),
        ("remove-keys", "/etc/ssh/ssh_host_*"),
        ("empty", "/etc/machine-id"),
        ("remove", "/var/lib/dbus/machine-id"),
        ("remove", flag(spec, "database_path")),
        ("remove", flag(spec, "pidfile")),
        ("remove", flag(spec, "syslog_pipe_path")),
        ("remove", flag(spec, "extensions_socket")),
        ("remove", f"{flag(spec, 'logger_path')}/*"),
        ("remove", f"{FLUENT_LOG_DIR}/*.pos"),
        ("remove", f"{FLUENT_LOG_DIR}/buffer/*"),
        # fluent-package 6.0.0 starts fluentd when installed (its postinst, from dh_installsystemd), so the
        # bake leaves fluentd's own state: its log, records it failed to send, the backup directory and the
        # update notifier's scratch files (fluent/fluent-package-builder v6.0.0: fluentd.service.erb,
        # templates/usr/lib/tmpfiles.d/fluentd.conf; fluent-package-update-notifier checker).
        ("remove", f"{FLUENT_LOG_DIR}/fluentd.log*"),
        ("remove", f"{FLUENT_LOG_DIR}/failed_records"),
        ("remove", "/tmp/fluent/*"),
        ("remove", "/tmp/fluent_package_update_notifier*"),
        *(("remove", f"{home}/.ssh/authorized_keys") for home in homes),
        *(("remove", f"{home}/{name}") for home in ("/root", "/home/*") for name in HISTORY_FILES),
        ("remove", "/var/lib/apt/lists/*_*"),
        ("remove", "/var/cache/apt/*.bin"),
        ("remove", "/var/cache/apt/archives/*.deb"),
        ("remove", "/var/lib/cloud/instance"),
        ("remove", "/var/lib/cloud/instances"),
        ("remove", "/var/lib/cloud/data"),
        ("remove", "/var/lib/cloud/sem"),
        ("remove", "/var/log/cloud-init.log"),
        ("remove", "/var/log/cloud-init-output.log"),
        ("remove", "/var/lib/dhcp/*.leases"),
        ("remove", "/tmp/bakery"),
    ]
    return items


def apparmor_rule(spec: BuildSpec) -> str:
    """The AppArmor file rule that lets rsyslogd open osquery's syslog pipe (ompipe opens it O_RDWR)."""
    return f"{flag(spec, 'syslog_pipe_path')} rw,"


def apt_sources(spec: BuildSpec) -> dict[str, dict[str, str]]:
    """deb822 fields of the vendors' apt sources (installed by 20-repos.sh for upstream bakes only)."""
    osq, fluent, variant = spec.config.osquery.repo, spec.config.fluentd, spec.variant
    return {
        "osquery": {
            "Types": "deb",
            "URIs": bare_word("bakery.osquery.repo.url", osq.url),
            "Suites": bare_word("bakery.osquery.repo.suite", osq.suite),
            "Components": bare_word("bakery.osquery.repo.component", osq.component),
            "Architectures": "amd64",
            "Signed-By": KEYRINGS["osquery"],
        },
        "fluent": {
            "Types": "deb",
            "URIs": bare_word(
                "bakery.fluentd.repo_url", f"{fluent.repo_url.rstrip('/')}/{variant.os}/{variant.codename}/"
            ),
            "Suites": variant.codename,
            "Components": "contrib",
            "Signed-By": KEYRINGS["fluent"],
        },
    }


def manifest(spec: BuildSpec) -> list[ManifestEntry]:
    """Every file 60-files.sh installs, with its mode and owner (root-only for osquery's config)."""

    def entry(mode: str, dest: str) -> ManifestEntry:
        return ManifestEntry(mode, "root", "root", dest, dest.lstrip("/"))

    packs = [entry("0640", f"{PACKS_DIR}/{name}.conf") for name in spec.packs]
    return [
        entry("0640", OSQUERY_CONF),
        entry("0640", OSQUERY_FLAGS),
        *packs,
        entry("0644", OSQUERYD_DROPIN),
        entry("0755", PIPE_READY),
        entry("0644", RSYSLOG_SNIPPET),
        entry("0644", FLUENT_CONF),
        entry("0644", FLUENT_SNIPPET),
        entry("0644", LOG_ACL_TMPFILES),
        entry("0644", LOGROTATE_CONF),
        entry("0644", HOSTKEYS_UNIT),
        entry("0644", IMAGE_INFO),
        entry("0644", SEAL_LIST),
    ]


def image_info(spec: BuildSpec) -> dict[str, Any]:
    """/etc/bakery/image.json: what this image is (a stand-in image says so)."""
    osquery_version, fluent_version = package_versions(spec)
    return {
        "artifact_source": spec.artifact_source,
        "environment": spec.env_name,
        "variant": spec.variant_name,
        "osquery_package_version": osquery_version,
        "fluent_package_version": fluent_version,
        "fluent_plugin": f"{spec.config.fluentd.plugin} {spec.config.fluentd.plugin_version}",
        "stand_in": spec.artifact_source == "stand-in",
    }


def package_versions(spec: BuildSpec) -> tuple[str, str]:
    """The exact apt versions of osquery and fluent-package (stand-ins have their own)."""
    if spec.artifact_source == "stand-in":
        return standin.STANDIN_VERSION, standin.STANDIN_VERSION
    return spec.config.osquery.package_version, spec.config.fluentd.version


def context(spec: BuildSpec) -> dict[str, Any]:
    """Extra template context for ``templates/image/`` (merged into the renderer's context)."""
    pubsub = spec.env.pubsub
    if pubsub is None:
        raise ConfigError(f"bakery.environments.{spec.env_name}.pubsub: Fluentd needs a topic: add project and topic")
    prereqs = [*PREREQS, *(["curl"] if spec.artifact_source == "upstream" else [])]
    return {
        "osquery_conf": osquery_conf(spec),
        "flagfile_lines": flagfile_lines(spec),
        "osquery_flag": {name: _flag_text(value) for name, value in flags(spec).items()},
        "osquery_logs": log_files(spec),
        "fluent_pos_files": pos_files(),
        "fluent_snippet": FLUENT_SNIPPET,
        "fluent_snippet_include": posixpath.relpath(FLUENT_SNIPPET, posixpath.dirname(FLUENT_CONF)),
        "fluent_buffer_path": FLUENT_BUFFER,
        "fluent_user": FLUENT_USER,
        "fluent_project": bare_word(f"bakery.environments.{spec.env_name}.pubsub.project", pubsub.project),
        "fluent_topic": bare_word(f"bakery.environments.{spec.env_name}.pubsub.topic", pubsub.topic),
        "apparmor_rule": apparmor_rule(spec),
        "pipe_ready_path": PIPE_READY,
        "pipe_wait_seconds": PIPE_WAIT_SECONDS,
        "manifest": [e.line() for e in manifest(spec)],
        "seal_items": [f"{action} {glob}" for action, glob in seal_items(spec)],
        "seal_marker": SEAL_MARKER,
        "enabled_units": list(ENABLED_UNITS),
        "prereq_packages": prereqs,
        "apt_sources": apt_sources(spec),
        "image_info": image_info(spec),
    }


def expectations(spec: BuildSpec) -> dict[str, Any]:
    """What the image test suite expects of a booted image of ``spec`` (written as expectations.json)."""
    osquery_version, fluent_version = package_versions(spec)
    fluent = spec.config.fluentd
    stand_in = spec.artifact_source == "stand-in"
    return {
        "artifact_source": spec.artifact_source,
        "real_binaries": not stand_in,
        "build_user": build_user(spec),
        "packages": {"osquery": osquery_version, fluent.package: fluent_version},
        "fluent_plugin": {
            "name": fluent.plugin,
            "version": fluent.plugin_version,
            "standin_record": standin.GEM_RECORD if stand_in else None,
        },
        "osquery": {
            "conf": OSQUERY_CONF,
            "flagfile": OSQUERY_FLAGS,
            "flags": flagfile_lines(spec),
            "forbidden_flags": sorted(FORBIDDEN_FLAGS),
            "packs": {name: f"{PACKS_DIR}/{name}.conf" for name in spec.packs},
            "database": flag(spec, "database_path"),
            "extensions_socket": flag(spec, "extensions_socket"),
            "logs": log_files(spec),
        },
        "syslog": {
            "pipe": flag(spec, "syslog_pipe_path"),
            "rsyslog_snippet": RSYSLOG_SNIPPET,
            "apparmor": {
                "profile": RSYSLOG_APPARMOR_PROFILE,
                "local": RSYSLOG_APPARMOR_LOCAL,
                "rule": apparmor_rule(spec),
            },
            "standin_probe_log": f"{posixpath.dirname(flag(spec, 'pidfile'))}/{standin.PROBE_LOG}"
            if stand_in
            else None,
        },
        "fluentd": {
            "conf": FLUENT_CONF,
            "snippet": FLUENT_SNIPPET,
            "include": posixpath.relpath(FLUENT_SNIPPET, posixpath.dirname(FLUENT_CONF)),
            "user": FLUENT_USER,
            "project": spec.env.pubsub.project if spec.env.pubsub else None,
            "topic": spec.env.pubsub.topic if spec.env.pubsub else None,
            "pos_files": pos_files(),
            "buffer_path": FLUENT_BUFFER,
        },
        "log_reader": {
            "user": FLUENT_USER,
            "directory": flag(spec, "logger_path"),
            "tmpfiles": LOG_ACL_TMPFILES,
        },
        "logrotate": {"conf": LOGROTATE_CONF, "files": sorted(log_files(spec).values())},
        "files": [asdict(e) for e in manifest(spec)],
        "services_enabled": list(ENABLED_UNITS),
        "apt": ({"keyrings": KEYRINGS, "sources": APT_SOURCES} if spec.artifact_source == "upstream" else None),
        "seal": {
            "list": SEAL_LIST,
            "marker": SEAL_MARKER,
            "items": [f"{action} {glob}" for action, glob in seal_items(spec)],
        },
        "image_info": IMAGE_INFO,
    }
