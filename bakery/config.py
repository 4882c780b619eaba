"""Typed, frozen configuration, converted once from Invoke's merged config and validated before any side effect.

Invoke's own hierarchy supplies the raw values (defaults from ``bakery.defaults``, the project's
``invoke.yaml``, ``INVOKE_BAKERY_*`` variables, ``invoke -f FILE``); :func:`load` turns the ``bakery``
subtree into :class:`BakeryConfig` and every error into one :class:`ConfigError` line that names the
file that set the key, the key, the value and the fix.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
import types
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bakery.errors import ConfigError

GCE_NAME_RE = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_KEY_RE = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE_RE = r"^[a-z0-9_-]{0,63}$"
#: An IAM policy member naming one identity or group (cloud.google.com/iam/docs/principal-identifiers).
IAM_MEMBER_RE = r"^(serviceAccount|user|group):[^@\s:]+@[^@\s:]+\.[^@\s:]+$"
MAX_LABELS = 64
MAX_MEMORY_MB = 65536  # bakery.environments.*.local.memory_mb (see LocalSettings)
LOCAL_DIRS = ("cache_dir", "registry_dir")  # the local target's output directories (LocalSettings)

ArtifactSource = Literal["upstream", "mirror", "stand-in"]
Target = Literal["local", "gce"]

Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{40}$")]
Version = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
AptVersion = Annotated[str, StringConstraints(pattern=r"^[0-9][A-Za-z0-9.+~:-]*$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
DirPath = Annotated[str, StringConstraints(min_length=1)]  # relative to the project root; "" would be the root
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
        "sbom-sha256",
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
    # The fleet's identities that must be able to publish (IAM members, e.g.
    # "serviceAccount:web@PROJECT.iam.gserviceaccount.com"); `invoke doctor` checks the topic's and the
    # project's IAM policies grant each of them what the Pub/Sub output needs. Empty: not checked (a warning).
    publishers: tuple[Annotated[str, StringConstraints(pattern=IAM_MEMBER_RE)], ...] = ()


class Retention(_Model):
    """How many images a family keeps and how old they may get."""

    keep: int = Field(default=5, ge=1)
    max_age_days: int = Field(default=90, ge=1)


PROJECT_ID_RE = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
ANY_VALUE = "*"  # in a coverage exempt rule: the label is present, with any value


class Coverage(_Model):
    """Fleet coverage (``invoke coverage``, the nightly's coverage section): which VMs of ``projects``
    (default: the environment's gce project) boot from the environment's families. ``exempt``: rule name
    → label selector (every label must match; ``"*"`` matches any value); ``builtin_exempt`` adds
    the built-in rules for GKE nodes, Dataproc and bakery's own VMs (bakery/gce/coverage.py). Images older
    than ``max_age_days`` (default: the environment's retention max_age_days) are called out."""

    enabled: bool = False
    projects: tuple[str, ...] = ()
    max_age_days: int | None = Field(default=None, ge=1)
    exempt: dict[Slug, dict[str, str]] = Field(default_factory=dict)
    builtin_exempt: bool = True

    @field_validator("projects")
    @classmethod
    def _projects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for project in value:
            if not re.fullmatch(PROJECT_ID_RE, project):
                raise ValueError(
                    f"project {project!r} is not a GCP project id: use 6-30 lowercase letters, digits or -"
                )
        return value

    @field_validator("exempt")
    @classmethod
    def _selectors(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for rule, selector in value.items():
            if not selector:
                raise ValueError(f"rule {rule!r} has no labels, so it would exempt every VM: give label: value")
            for key, wanted in selector.items():
                if not re.fullmatch(LABEL_KEY_RE, key):
                    raise ValueError(f"rule {rule!r}: label key {key!r} breaks GCE's rule {LABEL_KEY_RE}: fix it")
                if wanted != ANY_VALUE and not re.fullmatch(LABEL_VALUE_RE, wanted):
                    raise ValueError(
                        f"rule {rule!r}: label {key}={wanted!r} breaks GCE's rule {LABEL_VALUE_RE}: give a "
                        f"label value, or {ANY_VALUE!r} for any value"
                    )
        return value


ZONE_RE = r"^[a-z]+-[a-z]+[0-9]-[a-z]$"


def zone_region(zone: str) -> str:
    """The region of a Compute Engine zone: ``us-east1-c`` → ``us-east1``."""
    return zone.rsplit("-", 1)[0]


class GceSettings(_Model):
    """Where and how Packer's googlecompute builder and the test instance run."""

    project: Annotated[str, StringConstraints(pattern=PROJECT_ID_RE)]
    zone: Annotated[str, StringConstraints(pattern=ZONE_RE)]
    # Where the builder VM and the test VM may be created, in order: the next zone is tried when one has no
    # capacity (bakery/gce/zones.py). Empty: ``zone`` alone. ``zones[0]`` must be ``zone`` (the zone the
    # variable file renders and the first one tried), and every zone must be in ``zone``'s region: the
    # subnetwork, the builder's regional settings and the candidate's storage stay the same.
    zones: tuple[str, ...] = ()
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

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for zone in value:
            if not isinstance(zone, str) or not re.fullmatch(ZONE_RE, zone):
                raise ValueError(f"{zone!r} is not a Compute Engine zone: give zones such as us-east1-c")
        duplicates = sorted({zone for zone in value if value.count(zone) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]!r} is listed twice: list each zone once")
        first = info.data.get("zone")  # absent when 'zone' itself is invalid (that error is reported)
        if first is None or not value:
            return value
        other = next((zone for zone in value if zone_region(zone) != zone_region(first)), None)
        if other is not None:
            raise ValueError(
                f"{other!r} is not in region {zone_region(first)} of zone {first!r} (the subnetwork is regional): "
                f"list only {zone_region(first)}-* zones"
            )
        if value[0] != first:
            raise ValueError(
                f"{list(value)} must start with zone {first!r} (the zone tried first): put {first!r} first, "
                "or set zone to the first of zones"
            )
        return value

    @property
    def zone_order(self) -> tuple[str, ...]:
        """The zones to try, in order: ``zones``, or ``(zone,)``."""
        return self.zones or (self.zone,)


class LocalSettings(_Model):
    """The QEMU target: accelerator, VM size and where base images and the registry live."""

    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    # Upper bound: a fixed cap, not the host's RAM, so a config validates the same on every machine (a CI
    # runner checks what a workstation bakes); 64 GiB is 32x the default, more than a build VM needs, and
    # catches the usual slips (GiB given as MiB * 1024, an extra zero or three).
    memory_mb: int = Field(default=2048, ge=512, le=MAX_MEMORY_MB)
    cpus: int = Field(default=2, ge=1)
    disk_size: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[MG]$")] = "4G"
    cache_dir: DirPath = "build/cache"
    registry_dir: DirPath = "build/registry"


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
    coverage: Coverage = Coverage()

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
        if self.target == "local" and self.coverage.enabled:
            raise ValueError("coverage reads a GCE fleet: set coverage.enabled only on a 'gce' environment")
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

    # Finite: every external wait has a timeout (YAML's .inf and "nan" are numbers to pydantic).
    packer_validate: float = Field(default=120, gt=0, allow_inf_nan=False)
    packer_init: float = Field(default=600, gt=0, allow_inf_nan=False)  # downloads the pinned plugins the first time
    packer_build: float = Field(default=5400, gt=0, allow_inf_nan=False)
    boot: float = Field(default=300, gt=0, allow_inf_nan=False)
    image_tests: float = Field(default=900, gt=0, allow_inf_nan=False)


class Notify(_Model):
    """Where a nightly run's summary goes when a variant failed (empty URL: nowhere)."""

    webhook_url: str = ""
    timeout: float = Field(default=10, gt=0, allow_inf_nan=False)

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

    build_dir: DirPath = "build"
    env: str = "local"
    image_suite: DirPath = "tests/image"
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
                        f"{getattr(env, key)!r} gives {name!r} for {variant}, which breaks GCE's name rule "
                        f"{GCE_NAME_RE}: use "
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
        env = self.config.env if name is None else name
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

# Invoke's config layers that can set ``bakery`` keys, highest precedence first (invoke 3.0.3,
# invoke/config.py Config.merge: defaults < collection < system < user < project < env < runtime < overrides).
_LAYERS = ("_overrides", "_runtime", "_env", "_project", "_user", "_system", "_collection")
ENV_PREFIX = "INVOKE_"  # Invoke's env_prefix for the ``invoke`` binary (Config.__init__: f"{prefix.upper()}_")
Loc = tuple[str | int, ...]


def env_var_name(path: Loc, prefix: str = ENV_PREFIX) -> str:
    """The variable Invoke reads for a config key path (invoke/env.py ``_to_env_var``: joined by _, upper)."""
    return prefix + "_".join(str(p) for p in path).upper()


def dotted(loc: Loc) -> str:
    """``bakery.osquery.packs[0]``: a key path as the README and invoke.yaml spell it."""
    text = "bakery"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _lookup(data: Any, path: Loc) -> tuple[bool, Any]:
    node = data
    for part in path:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_mapping or in_list):
            return False, None
        node = node[part]
    return True, node


def _first_leaf(node: Any) -> Loc:
    path: Loc = ()
    while isinstance(node, Mapping) and node:
        key = next(iter(node))
        path, node = (*path, key), node[key]
    return path


def layer_label(raw_config: Any, layer: str, path: Loc = ()) -> str:
    """How an error names one of Invoke's config layers: its file, the variable or the flag."""
    if layer == "_env":
        return "environment variable " + env_var_name(("bakery", *path))
    if layer == "_overrides":
        return "a command-line flag"
    if layer == "_collection":
        return "bakery/defaults.py"
    return _short(getattr(raw_config, f"{layer}_path", None)) or layer.strip("_")


def source_of(raw_config: Any, path: Loc) -> str:
    """The layer (file, ``environment variable INVOKE_…``, flag) that set ``bakery.<path>``; for a key no
    layer sets (a missing key), the one that set its nearest enclosing section."""
    if raw_config is not None:
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            for layer in _LAYERS:
                found, node = _lookup(getattr(raw_config, layer, None), ("bakery", *prefix))
                if found:
                    if layer == "_env":
                        prefix = (*prefix, *_first_leaf(node))
                    return layer_label(raw_config, layer, prefix)
    return _short(getattr(raw_config, "_project_path", None)) or "invoke.yaml"


def _short(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


# --- the schema, walked by key path (env variables, suggestions) -----------------------------------------


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` → X."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(_strip(a) for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _child(annotation: Any, key: str | int) -> Any:
    """The annotation of ``key`` inside a value of type ``annotation`` (None when there is no such key)."""
    for member in _union_members(_strip(annotation)):
        if _is_model(member):
            field = member.model_fields.get(str(key))
            if field is not None:
                return field.annotation
        elif get_origin(member) is dict:
            return get_args(member)[1]
        elif get_origin(member) in (tuple, list) and isinstance(key, int):
            return get_args(member)[0]
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    annotation: Any = BakeryConfig
    for part in loc:
        annotation = _child(annotation, part)
        if annotation is None:
            return None
    models = [m for m in _union_members(_strip(annotation)) if _is_model(m)]
    return models[0] if models else None


def _did_you_mean(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# --- errors from pydantic ----------------------------------------------------------------------------------

_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or fix its spelling (the README's configuration reference lists every key)",
    "string_type": "give a string",
    "int_type": "give an integer",
    "float_type": "give a number",
    "bool_type": "give true or false",
    "dict_type": "give a mapping",
    "tuple_type": "give a list",
    "finite_number": "give a finite number of seconds",
    "string_too_short": "give a non-empty value",
    "less_than_equal": "give a smaller value",
    "greater_than_equal": "give a larger value",
    "greater_than": "give a larger value",
}

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true/false",
    "dict_type": "a mapping",
    "tuple_type": "a list",
}


_PATTERN_HINTS = {
    "topic": "use a Pub/Sub topic id (letters, digits, -_.~+%, 3-255 characters, starting with a letter)",
    "zone": "use a Compute Engine zone such as us-east1-c",
    "publishers": "use an IAM member such as serviceAccount:web@PROJECT.iam.gserviceaccount.com",
    "project": "use a GCP project id (6-30 lowercase letters, digits or -)",
    "fingerprint": "use the key's full 40-hex-digit fingerprint in uppercase",
    "version": "use MAJOR.MINOR.PATCH, e.g. 5.23.1",
    "package_version": "use the exact apt version, e.g. 5.23.1-1.linux",
    "source_image_family": "use a GCE image family name (lowercase letters, digits, -)",
    "disk_size": "use a size like 4G or 8192M",
}


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _data_loc(plain: Any, loc: tuple[Any, ...]) -> Loc:
    """pydantic's error location as a key path into the data: without validator steps and union member
    tags (``flags.events_max.str``), keeping a missing key."""
    out: list[str | int] = []
    node = plain
    for part in loc:
        if str(part).startswith("function-"):
            continue
        if isinstance(node, Mapping):
            out.append(part)
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        else:
            break
    return tuple(out)


def _describe(errors: list[Any], plain: Any) -> tuple[Loc, str]:
    """The first pydantic error as (key path, message); a union's member errors become one message."""
    first = errors[0]
    loc = _data_loc(plain, first["loc"])
    kind = first["type"]
    msg = str(first["msg"])
    value = first.get("input")
    if kind == "value_error":
        return loc, msg.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        pattern = first.get("ctx", {}).get("pattern", "")
        hint = _PATTERN_HINTS.get(str(loc[-1]) if loc else "", "fix the value")
        return loc, f"value {_shown(value)} does not match {pattern}: {hint}"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return loc, f"value {_shown(value)} is not allowed: use one of {expected}"
    if kind == "missing":
        return loc, "is missing: add it"
    if kind == "extra_forbidden":
        return loc, f"is not a key here: {_did_you_mean(loc)}{_FIXES[kind]}"
    siblings = [e["type"] for e in errors if _data_loc(plain, e["loc"]) == loc]
    if len(siblings) > 1 and all(k in _TYPE_WORDS for k in siblings):  # a union: str | int | bool
        words = list(dict.fromkeys(_TYPE_WORDS[k] for k in siblings))
        wanted = ", ".join(words[:-1]) + " or " + words[-1]
        return loc, f"got {_shown(value)}: give {wanted}"
    fix = _FIXES.get(kind, "fix the value")
    return loc, f"{msg.lower()} (got {_shown(value)}): {fix}"


def from_mapping(data: Mapping[str, Any], project_root: Path, raw_config: Any = None) -> Settings:
    """Validate the ``bakery`` subtree; raise one ConfigError line for the first problem found."""
    plain = _plain(data)
    try:
        config = BakeryConfig.model_validate(plain)
    except ValidationError as exc:
        loc, message = _describe(exc.errors(), plain)
        raise ConfigError(f"{source_of(raw_config, loc)}: {dotted(loc)}: {message}") from None
    broken = _references(config)
    if broken is not None:
        ref_loc, message = broken
        raise ConfigError(f"{source_of(raw_config, ref_loc)}: {dotted(ref_loc)}: {message}")
    settings = Settings(config, project_root)
    _check_paths(settings, raw_config)
    return settings


def output_dir_problem(path: Path) -> str | None:
    """Why nothing can be written at or under ``path`` (a file in the way, no permission, a read-only file
    system), or None. Leaves nothing behind: the nearest existing directory is probed with a directory
    that is made and removed at once (a permission check alone is wrong for root)."""
    existing = path
    try:
        while not existing.exists():
            if existing.is_symlink():
                return f"{existing} is a dangling symbolic link"
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            where = "" if existing == path else " (on its path)"
            return f"{existing}{where} is a file, not a directory"
        probe = tempfile.mkdtemp(prefix=".bakery-probe-", dir=existing)
    except OSError as exc:
        return f"nothing can be created in {existing} ({exc.strerror or exc})"
    os.rmdir(probe)
    return None


def check_output_location(path: Path, what: str) -> None:
    """ConfigError naming ``what`` (a flag or key) when nothing can be written at ``path``."""
    problem = output_dir_problem(path)
    if problem:
        raise ConfigError(f"{what} {str(path)!r}: {problem}: give a directory you can write")


def _check_paths(settings: Settings, raw_config: Any) -> None:
    """Directories the bakery reads must exist; those it writes must be creatable: checked before any work."""
    root, config = settings.project_root, settings.config
    suite = root / config.image_suite
    if not suite.is_dir():
        raise ConfigError(
            f"{source_of(raw_config, ('image_suite',))}: bakery.image_suite: {config.image_suite!r}: {suite} is "
            "not a directory: point it at the testinfra image suite (default tests/image)"
        )
    outputs: list[tuple[Loc, str]] = [(("build_dir",), config.build_dir)]
    for name, env in config.environments.items():
        art = env.artifacts
        if art.source == "mirror":
            loc: Loc = ("environments", name, "artifacts", "mirror_dir")
            where = source_of(raw_config, loc)
            if not art.mirror_dir:
                raise ConfigError(
                    f"{where}: {dotted(loc)}: source 'mirror' needs mirror_dir: set it to a directory of "
                    ".deb/.gem files with a SHA256SUMS list"
                )
            path = (root / art.mirror_dir).resolve()
            if not path.is_dir():
                raise ConfigError(
                    f"{where}: {dotted(loc)}: directory {str(path)!r} does not exist: create it or point "
                    "mirror_dir at your mirror"
                )
        if env.local is not None:
            outputs += [(("environments", name, "local", key), getattr(env.local, key)) for key in LOCAL_DIRS]
    for out_loc, value in outputs:
        problem = output_dir_problem(root / value)
        if problem:
            raise ConfigError(
                f"{source_of(raw_config, out_loc)}: {dotted(out_loc)}: {value!r}: {problem}: point it at a "
                "directory you can write, or move what is in the way"
            )


# --- INVOKE_BAKERY_* variables, cast by the schema -------------------------------------------------------

BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _cast(annotation: Any, current: Any, text: str) -> Any:
    """``text`` as the type the schema (or, for osquery flags, the current value) gives the key."""
    members = [m for m in _union_members(_strip(annotation)) if m is not type(None)]
    if len(members) > 1:  # FlagValue (str | int | bool): the type of the value it replaces
        kind: Any = type(current) if isinstance(current, bool | int | float) else str
    else:
        kind = members[0] if members else str
    if kind is bool:
        if text.strip().lower() not in BOOL_WORDS:
            raise ValueError(f"is not a boolean: use one of {', '.join(BOOL_WORDS)} (any case)")
        return BOOL_WORDS[text.strip().lower()]
    if kind is int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
            raise ValueError("is not a whole number: give digits only, e.g. 2048")
        return int(text)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError("is not a finite number: give e.g. 300 or 2.5")
        return number
    if get_origin(kind) in (tuple, list):
        raise ValueError("cannot set a list: Invoke reads only single values from the environment; set it in a -f file")
    return text


def _settable(annotation: Any, node: Any, path: Loc, out: dict[str, tuple[Loc, Any, Any]]) -> None:
    """Every key an INVOKE_BAKERY_* variable may set: the schema's fields (also those no file sets) and the
    existing entries of mappings (labels, flags, environments)."""
    members = [m for m in _union_members(_strip(annotation)) if m is not type(None)]
    model = next((m for m in members if _is_model(m)), None)
    if model is not None:
        if isinstance(node, Mapping):  # a section set to null (gce: for a local env) takes no variables
            for name, field in model.model_fields.items():
                _settable(field.annotation, node.get(name), (*path, name), out)
        return
    if len(members) == 1 and get_origin(members[0]) is dict:
        if isinstance(node, Mapping):
            for key, value in node.items():
                _settable(get_args(members[0])[1], value, (*path, str(key)), out)
        return
    out.setdefault(env_var_name(("bakery", *path), prefix=""), (path, annotation, node))


def env_layer(merged: Mapping[str, Any] | None, environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """The ``bakery`` values set by ``INVOKE_BAKERY_*`` variables, as Invoke's env layer (nested dict).

    Unlike Invoke's own loader (invoke/env.py), keys come from the schema, so a key no file sets can be set
    too; booleans are strict (true/false, yes/no, 1/0, any case) where Invoke takes every non-empty string
    but "0" as true; numbers must parse; and a variable that names no key is an error, not ignored.
    """
    keys: dict[str, tuple[Loc, Any, Any]] = {}
    _settable(BakeryConfig, merged if isinstance(merged, Mapping) else {}, (), keys)
    layer: dict[str, Any] = {}
    for suffix, (path, annotation, current) in keys.items():
        name = prefix + suffix
        if name not in environ:
            continue
        try:
            value = _cast(annotation, current, environ[name])
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}={environ[name]!r}: {dotted(path)} {exc}") from None
        node = layer
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = value
    known = {prefix + k for k in keys}
    for name in sorted(environ):
        if name.startswith(prefix + "BAKERY_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"environment variable {name}={environ[name]!r} sets no bakery key (keys that are sections, and "
                f"new entries of a mapping, cannot be set from the environment): {hint}fix its name or unset it"
            )
    return layer


# --- Invoke's merge of the layers ------------------------------------------------------------------------


def merge_conflict(layers: list[tuple[Callable[[Loc], str], Any]]) -> str | None:
    """Replay Invoke's merge (invoke/config.py ``merge_dicts``) of ``layers`` (how to name the layer for a
    key path, its data), lowest first; the first place where one layer gives a mapping and an earlier one a
    plain value (or the reverse) as one line naming both, or None."""
    merged: dict[str, Any] = {}
    origin: dict[Loc, str] = {}

    def replay(base: dict[str, Any], updates: Mapping[str, Any], path: Loc, name: Callable[[Loc], str]) -> str | None:
        for key, value in updates.items():
            here = (*path, key)
            if key in base and isinstance(base[key], dict) != isinstance(value, dict):
                return _conflict_line(here, value, base[key], name(here), origin.get(here, "an earlier layer"))
            if isinstance(value, dict):
                problem = replay(base.setdefault(key, {}), value, here, name)
                if problem:
                    return problem
            else:
                base[key] = value
            origin[here] = name(here)
        return None

    for name, data in layers:
        if isinstance(data, Mapping):
            problem = replay(merged, data, (), name)
            if problem:
                return problem
    return None


def _conflict_line(path: Loc, value: Any, earlier: Any, where: str, earlier_where: str) -> str:
    key = ".".join(str(p) for p in path)
    if isinstance(earlier, dict):
        keys = ", ".join(list(earlier)[:4]) + (", …" if len(earlier) > 4 else "")
        return (
            f"{where}: {key}: got {_shown(value)}, but {earlier_where} has a section there (keys {keys}): give "
            "its keys indented under it, or remove the line"
        )
    return (
        f"{where}: {key}: got a section ({_shown(value)}), but {earlier_where} has the single value "
        f"{_shown(earlier)} there: give one {type(earlier).__name__} value"
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
