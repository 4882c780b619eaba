"""Typed, frozen configuration, converted once from Invoke's merged config and validated before any side effect.

Invoke's own hierarchy supplies the raw values (defaults from ``bakery.defaults``, the project's
``invoke.yaml``, ``INVOKE_BAKERY_*`` variables, ``invoke -f FILE``); :func:`load` turns the ``bakery``
subtree into :class:`BakeryConfig` and every error into one :class:`ConfigError` line that names the
file that set the key, the key, the value and the fix.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bakery.errors import ConfigError

GCE_NAME_RE = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_KEY_RE = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE_RE = r"^[a-z0-9_-]{0,63}$"
MAX_LABELS = 64

ArtifactSource = Literal["upstream", "mirror", "stand-in"]
Target = Literal["local", "gce"]

Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{40}$")]
Version = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
AptVersion = Annotated[str, StringConstraints(pattern=r"^[0-9][A-Za-z0-9.+~:-]*$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
FlagValue = str | int | bool


# Labels the project sets on images and builder VMs itself; environment labels may not use these keys.
RESERVED_LABELS = frozenset(
    {
        "bakery-env",
        "bakery-variant",
        "bakery-version",
        "artifact-source",
        "osquery-version",
        "fluent-version",
        "input-fingerprint",
        "git-sha",
        "promoted-from",
        "bakery-role",
        "bakery-run-id",
        "bakery-expires",
        "bakery-failed",
        "test-report",
        "manifest-sha256",
        "source-image",
    }
)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    room = MAX_LABELS - len(RESERVED_LABELS)
    if len(labels) > room:
        raise ValueError(
            f"has {len(labels)} labels; GCE allows at most {MAX_LABELS} and the project sets up to "
            f"{len(RESERVED_LABELS)} itself, so at most {room}: remove some"
        )
    for key, value in labels.items():
        if key in RESERVED_LABELS:
            raise ValueError(f"label key {key!r} is set by the project itself: choose another key")
        if not re.fullmatch(LABEL_KEY_RE, key):
            raise ValueError(
                f"label key {key!r} breaks GCE's rule {LABEL_KEY_RE}: use lowercase letters, digits, _ or -, "
                "start with a letter, at most 63 characters"
            )
        if not re.fullmatch(LABEL_VALUE_RE, value):
            raise ValueError(
                f"label {key}={value!r} breaks GCE's rule {LABEL_VALUE_RE}: use lowercase letters, digits, "
                "_ or -, at most 63 characters"
            )
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OsqueryRepo(_Model):
    """The vendor's apt repository and the fingerprint its key must have."""

    url: str = "https://pkg.osquery.io/deb"
    suite: str = "deb"
    component: str = "main"
    key_url: str = "https://pkg.osquery.io/deb/pubkey.gpg"
    fingerprint: Fingerprint = "1484120AC4E9F8A1A577AEEE97A80C63C9D8B80B"


class Decorators(_Model):
    """osquery decorator queries: run at config load, before every query, or every N seconds."""

    load: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    interval: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class OsqueryConfig(_Model):
    """osquery: version pin, the packs to ship, flagfile flags, osquery.conf options and decorators."""

    version: Version = "5.23.1"
    package_version: AptVersion = "5.23.1-1.linux"
    repo: OsqueryRepo = OsqueryRepo()
    packs: tuple[Slug, ...] = ("osquery-monitoring", "incident-response", "compliance")
    flags: dict[str, FlagValue] = Field(default_factory=dict)
    options: dict[str, FlagValue] = Field(default_factory=dict)
    decorators: Decorators = Decorators()

    @model_validator(mode="after")
    def _version_matches_package(self) -> OsqueryConfig:
        if not self.package_version.startswith(self.version + "-"):
            raise ValueError(
                f"package_version {self.package_version!r} does not belong to version {self.version!r}: "
                f"set package_version to '{self.version}-1.linux'"
            )
        return self


class FluentdConfig(_Model):
    """fluent-package (Fluentd LTS) and the pinned Pub/Sub output plugin gem."""

    package: str = "fluent-package"
    version: AptVersion = "6.0.0-1"
    lts: int = 6
    repo_url: str = "https://fluentd.cdn.cncf.io/lts/6"
    key_url: str = "https://fluentd.cdn.cncf.io/GPG-KEY-fluent-package"
    # The fluent-package LTS repositories' signing key ("Fluent Package Official Signing Key"):
    # fluent/fluent-package-builder bd339305fc4b4876aecbff50e392aadf00d83f27,
    # fluent-package/manage-fluent-repositories.sh SIGNING_KEY; the key file is bakery/data/keys/fluent-package.pub.
    # (BEE682289B2217F45AF4CC3F901F9177AB97ACBE is the old td-agent key.)
    fingerprint: Fingerprint = "B40948B6A3B80E90F40E841F977D7A0943FA320E"
    plugin: str = "fluent-plugin-gcloud-pubsub-custom"
    plugin_version: Version = "1.6.0"


class Artifacts(_Model):
    """Where osquery and Fluentd come from: vendors' repositories, a local mirror, or stand-ins."""

    source: ArtifactSource
    mirror_dir: str | None = None


class PubSub(_Model):
    """The Pub/Sub topic Fluentd ships osquery results to."""

    project: str
    topic: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")]


class Retention(_Model):
    """How many images a family keeps and how old they may get."""

    keep: int = Field(default=5, ge=1)
    max_age_days: int = Field(default=90, ge=1)


class GceSettings(_Model):
    """Where and how Packer's googlecompute builder and the test instance run."""

    project: Annotated[str, StringConstraints(pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")]
    zone: Annotated[str, StringConstraints(pattern=r"^[a-z]+-[a-z]+[0-9]-[a-z]$")]
    network: str = "default"
    subnetwork: str = ""
    service_account: str = ""
    # The test VM's identity, never the builder's: it must hold no Pub/Sub role on the production topic,
    # so records of test VMs never reach the SIEM. Empty: the test VM runs without a service account.
    test_service_account: str = ""
    scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)
    machine_type: str = "e2-standard-2"
    disk_size_gb: int = Field(default=20, ge=10)
    disk_type: Literal["pd-standard", "pd-balanced", "pd-ssd"] = "pd-balanced"
    storage_location: str = ""
    omit_external_ip: bool = True
    use_iap: bool = True
    secure_boot: bool = True
    vtpm: bool = True
    integrity_monitoring: bool = True
    builder_max_run_minutes: int = Field(default=90, ge=10)
    api_endpoint: str | None = None


class LocalSettings(_Model):
    """The QEMU target: accelerator, VM size and where base images and the registry live."""

    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    memory_mb: int = Field(default=2048, ge=512)
    cpus: int = Field(default=2, ge=1)
    disk_size: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[MG]$")] = "4G"
    cache_dir: str = "build/cache"
    registry_dir: str = "build/registry"


class Environment(_Model):
    """One deployment environment: a target, its variants, family names and target settings."""

    target: Target
    variants: tuple[str, ...]
    family: str = "osquery-{variant}"
    candidate_family: str = "osquery-{variant}-candidate"
    labels: Labels = Field(default_factory=dict)
    artifacts: Artifacts
    pubsub: PubSub | None = None
    retention: Retention = Retention()
    gce: GceSettings | None = None
    local: LocalSettings | None = None

    @model_validator(mode="after")
    def _target_settings(self) -> Environment:
        if self.target == "gce":
            if self.gce is None:
                raise ValueError("target 'gce' needs a 'gce' section (project, zone, ...): add it")
            if self.pubsub is None:
                raise ValueError("target 'gce' needs 'pubsub' with project and topic: add the SIEM's topic")
        if self.target == "gce" and self.artifacts.source == "stand-in":
            raise ValueError(
                "target 'gce' cannot use artifact source 'stand-in' (stand-ins are never published to GCE): "
                "use upstream or mirror"
            )
        if self.target == "local" and self.local is None:
            raise ValueError("target 'local' needs a 'local' section: add 'local: {}'")
        if not self.variants:
            raise ValueError("'variants' is empty: list at least one variant")
        return self


class Variant(_Model):
    """An OS the image is built from (GCE public image family; local base is always Debian 12)."""

    os: Literal["debian", "ubuntu"]
    codename: Slug
    source_image_family: Annotated[str, StringConstraints(pattern=GCE_NAME_RE)]
    source_image_project: str
    ssh_username: str = "packer"
    local: bool = False
    packs: tuple[Slug, ...] = ()  # shipped on this variant only, after bakery.osquery.packs


class Timeouts(_Model):
    """Seconds allowed for each external wait."""

    packer_validate: float = Field(default=120, gt=0)
    packer_init: float = Field(default=600, gt=0)  # downloads the pinned plugins the first time
    packer_build: float = Field(default=5400, gt=0)
    boot: float = Field(default=300, gt=0)
    image_tests: float = Field(default=900, gt=0)


class Notify(_Model):
    """Where a nightly run's summary goes when a variant failed (empty URL: nowhere)."""

    webhook_url: str = ""
    timeout: float = Field(default=10, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        try:
            parts = urllib.parse.urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value
            _ = parts.port  # raises on a malformed port
        except ValueError:
            valid = False
        if not valid:  # the value is not echoed: a webhook URL carries its secret
            raise ValueError("is not an http(s) URL: give the webhook's full URL (https://host/path) or leave it empty")
        return value


class BakeryConfig(_Model):
    """The whole ``bakery`` configuration subtree."""

    build_dir: str = "build"
    env: str = "local"
    image_suite: str = "tests/image"
    osquery: OsqueryConfig = OsqueryConfig()
    fluentd: FluentdConfig = FluentdConfig()
    variants: dict[Slug, Variant]
    environments: dict[Slug, Environment]
    timeouts: Timeouts = Timeouts()
    notify: Notify = Notify()


def _references(config: BakeryConfig) -> tuple[tuple[str, ...], str] | None:
    """Cross-references pydantic cannot locate: (key path, message) of the first broken one."""
    if config.env not in config.environments:
        return ("env",), f"default env {config.env!r} is not an environment: use one of {_known(config.environments)}"
    for env_name, env in config.environments.items():
        for variant in env.variants:
            if variant not in config.variants:
                return (
                    ("environments", env_name, "variants"),
                    f"unknown variant {variant!r}: use one of {_known(config.variants)} or define it under "
                    "bakery.variants",
                )
            if env.target == "local" and not config.variants[variant].local:
                return (
                    ("environments", env_name, "variants"),
                    f"variant {variant!r} has no local base image: use debian-12 for the local target",
                )
            for key in ("family", "candidate_family"):
                name = _family_name(getattr(env, key), variant)
                if not re.fullmatch(GCE_NAME_RE, name):
                    return (
                        ("environments", env_name, key),
                        f"gives {name!r} for {variant}, which breaks GCE's name rule {GCE_NAME_RE}: use "
                        "lowercase letters, digits and -, start with a letter, at most 63 characters",
                    )
        if env.family == env.candidate_family:
            return ("environments", env_name, "candidate_family"), "must differ from family: rename it"
    return None


def _known(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(mapping))


def _family_name(pattern: str, variant: str) -> str:
    return pattern.replace("{variant}", variant)


@dataclass(frozen=True)
class BuildSpec:
    """One image to build: the configuration resolved for an environment and a variant."""

    config: BakeryConfig
    env_name: str
    variant_name: str
    project_root: Path

    @property
    def env(self) -> Environment:
        return self.config.environments[self.env_name]

    @property
    def variant(self) -> Variant:
        return self.config.variants[self.variant_name]

    @property
    def family(self) -> str:
        return _family_name(self.env.family, self.variant_name)

    @property
    def candidate_family(self) -> str:
        return _family_name(self.env.candidate_family, self.variant_name)

    @property
    def build_dir(self) -> Path:
        return self.project_root / self.config.build_dir / self.env_name / self.variant_name

    @property
    def runs_dir(self) -> Path:
        """Test runs (JUnit, manifests, failed images): kept apart from the rendered tree, which re-renders."""
        return self.project_root / self.config.build_dir / "runs" / self.env_name / self.variant_name

    @property
    def output_dir(self) -> Path:
        """Where Packer leaves a candidate until it is published or discarded."""
        return self.project_root / self.config.build_dir / "output" / self.env_name / self.variant_name

    @property
    def image_suite(self) -> Path:
        return self.project_root / self.config.image_suite

    @property
    def packs(self) -> tuple[str, ...]:
        """The osquery packs this image ships: the shared ones, then the variant's own."""
        shared = self.config.osquery.packs
        return shared + tuple(p for p in self.variant.packs if p not in shared)

    @property
    def artifact_source(self) -> ArtifactSource:
        return self.env.artifacts.source

    def mirror_dir(self) -> Path | None:
        raw = self.env.artifacts.mirror_dir
        return None if raw is None else (self.project_root / raw).resolve()


@dataclass(frozen=True)
class Settings:
    """Validated configuration plus where it came from (for error messages and paths)."""

    config: BakeryConfig
    project_root: Path

    def environment(self, name: str | None) -> str:
        """Resolve an environment name (``None`` → the configured default) or raise one line."""
        env = name or self.config.env
        if env not in self.config.environments:
            raise ConfigError(
                f"unknown environment {env!r}: use --env with one of {_known(self.config.environments)} "
                "(or add it under bakery.environments in invoke.yaml)"
            )
        return env

    def specs(self, env: str | None = None, variant: str | None = None) -> list[BuildSpec]:
        """Every (environment, variant) to build, optionally narrowed; unknown names raise one line."""
        env_name = self.environment(env)
        variants = self.config.environments[env_name].variants
        if variant is not None:
            if variant not in variants:
                raise ConfigError(
                    f"unknown variant {variant!r} for environment {env_name!r}: use --variant with one of "
                    f"{', '.join(variants)}"
                )
            variants = (variant,)
        return [BuildSpec(self.config, env_name, v, self.project_root) for v in variants]

    def all_specs(self) -> list[BuildSpec]:
        """Every environment × variant the project knows."""
        return [spec for env in sorted(self.config.environments) for spec in self.specs(env)]

    @property
    def build_root(self) -> Path:
        return self.project_root / self.config.build_dir


# --- conversion from Invoke's config -----------------------------------------------------------------

_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it (check the spelling against the README's configuration reference)",
    "string_type": "give a string",
    "int_type": "give an integer",
    "float_type": "give a number",
    "bool_type": "give true or false",
    "dict_type": "give a mapping",
    "tuple_type": "give a list",
    "literal_error": "",
    "string_pattern_mismatch": "",
    "greater_than_equal": "",
    "greater_than": "",
}


_PATTERN_HINTS = {
    "topic": "use a Pub/Sub topic id (letters, digits, -_.~+%, 3-255 characters, starting with a letter)",
    "zone": "use a Compute Engine zone such as us-east1-c",
    "project": "use a GCP project id (6-30 lowercase letters, digits or -)",
    "fingerprint": "use the key's full 40-hex-digit fingerprint in uppercase",
    "version": "use MAJOR.MINOR.PATCH, e.g. 5.23.1",
    "package_version": "use the exact apt version, e.g. 5.23.1-1.linux",
    "source_image_family": "use a GCE image family name (lowercase letters, digits, -)",
    "disk_size": "use a size like 4G or 8192M",
}


def _source_of(raw_config: Any, path: tuple[str | int, ...]) -> str:
    """Name the Invoke config layer (file, environment variable, flag) that last set ``path``."""
    layers = [
        ("_overrides", "command-line flag"),
        ("_runtime", "{_runtime_path}"),
        ("_env", "environment variable INVOKE_{envvar}"),
        ("_project", "{_project_path}"),
        ("_collection", "bakery/defaults.py"),
    ]
    for attr, label in layers:
        data = getattr(raw_config, attr, None)
        node: Any = data
        found = True
        for part in ("bakery", *path):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                found = False
                break
        if found:
            envvar = "_".join(str(p).upper() for p in ("bakery", *path))
            return label.format(
                _runtime_path=getattr(raw_config, "_runtime_path", None) or "-f",
                _project_path=_short(getattr(raw_config, "_project_path", None)) or "invoke.yaml",
                envvar=envvar,
            )
    # Missing keys: report the file the user edits.
    return _short(getattr(raw_config, "_project_path", None)) or "invoke.yaml"


def _short(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _describe(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    loc: tuple[str | int, ...] = tuple(p for p in error["loc"] if not str(p).startswith("function-after"))
    kind = error["type"]
    msg = str(error["msg"])
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return loc, msg
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        hint = _PATTERN_HINTS.get(str(loc[-1]) if loc else "", "fix the value")
        return loc, f"value {error.get('input')!r} does not match {pattern}: {hint}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return loc, f"value {error.get('input')!r} is not allowed: use one of {expected}"
    fix = _FIXES.get(kind, "fix the value")
    shown = "" if kind in ("missing", "extra_forbidden") else f" (got {error.get('input')!r})"
    return loc, f"{msg.lower()}{shown}: {fix}".rstrip(": ")


def from_mapping(data: Mapping[str, Any], project_root: Path, raw_config: Any = None) -> Settings:
    """Validate the ``bakery`` subtree; raise one ConfigError line for the first problem found."""
    plain = _plain(data)
    try:
        config = BakeryConfig.model_validate(plain)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc, message = _describe(first)
        dotted = ".".join(str(p) for p in ("bakery", *loc))
        raise ConfigError(f"{_source_of(raw_config, loc)}: {dotted}: {message}") from None
    broken = _references(config)
    if broken is not None:
        loc, message = broken
        dotted = ".".join(("bakery", *loc))
        raise ConfigError(f"{_source_of(raw_config, loc)}: {dotted}: {message}")
    settings = Settings(config, project_root)
    _check_paths(settings, raw_config)
    return settings


def _check_paths(settings: Settings, raw_config: Any) -> None:
    for name, env in settings.config.environments.items():
        art = env.artifacts
        if art.source == "mirror":
            loc: tuple[str, ...] = ("environments", name, "artifacts", "mirror_dir")
            where = _source_of(raw_config, loc)
            if not art.mirror_dir:
                raise ConfigError(
                    f"{where}: bakery.environments.{name}.artifacts.mirror_dir: source 'mirror' needs "
                    "mirror_dir: set it to a directory of .deb/.gem files with a SHA256SUMS list"
                )
            path = (settings.project_root / art.mirror_dir).resolve()
            if not path.is_dir():
                raise ConfigError(
                    f"{where}: bakery.environments.{name}.artifacts.mirror_dir: directory {str(path)!r} does "
                    "not exist: create it or point mirror_dir at your mirror"
                )


def _plain(value: Any) -> Any:
    """Invoke's DataProxy → plain dicts/tuples (YAML lists become tuples for the frozen model)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def load(invoke_config: Any, project_root: Path) -> Settings:
    """Convert Invoke's merged config (``c.config``) into validated :class:`Settings`."""
    data = invoke_config.get("bakery")
    if data is None:
        raise ConfigError("invoke.yaml: no 'bakery' section: run invoke from the project directory")
    return from_mapping(data, project_root, invoke_config)
