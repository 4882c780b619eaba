"""Render the Packer template, its variables and the image's files for one environment × variant.

Rendering is strict (undefined names fail), deterministic (same inputs → byte-identical files and the
same input fingerprint) and atomic (a failed render leaves nothing under the build directory).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from bakery import __version__, artifacts, imagefiles, packer_plugins
from bakery.baserecipe import content_key
from bakery.config import BuildSpec
from bakery.encode import label_value, to_hcl, to_json, to_sh
from bakery.errors import ConfigError, RenderError
from bakery.imagefiles import package_versions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT_ROOT / "templates"

TEMPLATE_FILE = "image.pkr.hcl"
VARS_FILE = "variables.pkrvars.hcl"
FINGERPRINT_FILE = "fingerprint.json"
EXPECTATIONS_FILE = "expectations.json"


@dataclass(frozen=True)
class Rendered:
    """A rendered build directory and its input fingerprint."""

    spec: BuildSpec
    directory: Path
    fingerprint: str
    source_image: str
    needs_init: bool = False  # the template declares required_plugins: run `packer init` before validate/build

    @property
    def template(self) -> Path:
        return self.directory / TEMPLATE_FILE

    @property
    def var_file(self) -> Path:
        return self.directory / VARS_FILE


@functools.lru_cache(maxsize=8)
def jinja_env(root: Path = TEMPLATES) -> jinja2.Environment:
    """The one Jinja2 environment per template root: strict, newline-preserving, with an encoder filter per
    language. Shared, so each template is compiled once per process (Jinja recompiles a changed file)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - we render HCL, JSON and shell, never HTML
    )
    env.filters["hcl"] = to_hcl
    env.filters["tojson"] = to_json
    env.filters["sh"] = to_sh
    env.filters["label"] = label_value
    return env


def provision_env(spec: BuildSpec) -> dict[str, str]:
    """Environment of the provisioning scripts inside the builder VM (apt sources are rendered files)."""
    osq, fluent = spec.config.osquery, spec.config.fluentd
    osquery_version, fluent_version = package_versions(spec)
    return {
        "BAKERY_FILES": "/tmp/bakery/files",
        "BAKERY_ARTIFACTS": "/tmp/bakery/artifacts",
        "BAKERY_ARTIFACT_SOURCE": spec.artifact_source,
        "BAKERY_BUILD_USER": spec.variant.ssh_username,
        "OSQUERY_PACKAGE_VERSION": osquery_version,
        "OSQUERY_KEY_URL": osq.repo.key_url,
        "OSQUERY_KEY_FINGERPRINT": osq.repo.fingerprint,
        "FLUENT_PACKAGE": fluent.package,
        "FLUENT_PACKAGE_VERSION": fluent_version,
        "FLUENT_KEY_URL": fluent.key_url,
        "FLUENT_KEY_FINGERPRINT": fluent.fingerprint,
        "FLUENT_PLUGIN": fluent.plugin,
        "FLUENT_PLUGIN_VERSION": fluent.plugin_version,
    }


def provision_scripts(root: Path = PROJECT_ROOT) -> list[Path]:
    """The provisioning scripts of the project at ``root``, in the order Packer runs them."""
    return sorted((root / "provision").glob("*.sh"))


def image_labels(spec: BuildSpec) -> dict[str, str]:
    """Provenance labels every image of this spec carries (plus the fingerprint and git sha at bake time)."""
    osquery_version, fluent_version = package_versions(spec)
    labels = {
        "bakery-env": spec.env_name,
        "bakery-variant": spec.variant_name,
        "bakery-version": label_value(__version__),
        "artifact-source": spec.artifact_source,
        "osquery-version": label_value(osquery_version),
        "fluent-version": label_value(fluent_version),
    }
    return {**spec.env.labels, **labels}


def packer_vars(spec: BuildSpec) -> dict[str, Any]:
    """Values rendered into the variable file: everything known before the bake starts."""
    env = provision_env(spec)
    common: dict[str, Any] = {
        "artifact_source": spec.artifact_source,
        "provision_env": [f"{k}={v}" for k, v in sorted(env.items())],
        "provision_scripts": [f"provision/{p.name}" for p in provision_scripts(spec.project_root)],
        "ssh_username": spec.variant.ssh_username,
        "ssh_timeout": "10m",
    }
    if spec.env.target == "local":
        local = spec.env.local
        assert local is not None  # guaranteed by config validation
        return {**common, "cpus": local.cpus, "memory_mb": local.memory_mb, "disk_size": local.disk_size}
    gce = spec.env.gce
    assert gce is not None  # guaranteed by config validation
    return {
        **common,
        "project_id": gce.project,
        "zone": gce.zone,
        "source_image_family": spec.variant.source_image_family,
        "source_image_project": spec.variant.source_image_project,
        "machine_type": gce.machine_type,
        "network": gce.network,
        "subnetwork": gce.subnetwork,
        "omit_external_ip": gce.omit_external_ip,
        "use_iap": gce.use_iap,
        "service_account_email": gce.service_account,
        "scopes": list(gce.scopes),
        "disk_size_gb": gce.disk_size_gb,
        "disk_type": gce.disk_type,
        "secure_boot": gce.secure_boot,
        "vtpm": gce.vtpm,
        "integrity_monitoring": gce.integrity_monitoring,
        "candidate_family": spec.candidate_family,
        "image_description": (
            f"osquery {package_versions(spec)[0]} + Fluentd to Pub/Sub, {spec.variant_name}, "
            f"baked by osquery-bakery {__version__} ({spec.artifact_source})"
        ),
        "image_storage_locations": [gce.storage_location] if gce.storage_location else [],
        "image_labels": image_labels(spec),
        "builder_labels": {**spec.env.labels, "bakery-role": "builder"},
    }


def runtime_vars(spec: BuildSpec) -> dict[str, str]:
    """Names of the variables only known when a bake starts, with placeholder values for validation."""
    common = {"image_name": "validate-only", "input_fingerprint": "0" * 64}
    if spec.env.target == "local":
        return {
            **common,
            "base_image": "base.qcow2",
            "base_image_checksum": "none",
            "accelerator": "tcg",
            "ssh_private_key_file": "/dev/null",
            "output_directory": "output",
        }
    return {**common, "run_id": "validate", "expires": "0", "git_sha": "unknown", "source_image": ""}


def _hcl_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map(string)"
    return "list(string)"


def _template_line(exc: BaseException, env: jinja2.Environment, name: str) -> str:
    """``templates/NAME:LINE`` of the template line that failed (an included template's, if it failed
    there): Jinja2 rewrites the traceback so that a template's frames carry its file name and line."""
    loader = env.loader
    root = Path(loader.searchpath[0]) if isinstance(loader, jinja2.FileSystemLoader) else None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if root is not None and path.is_relative_to(root) and frame.lineno:
            return f"templates/{path.relative_to(root)}:{frame.lineno}"
    return f"templates/{name}"


def _render_file(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        message = (exc.message or "syntax error").rstrip(".")
        raise RenderError(f"templates/{exc.name or name}:{exc.lineno}: {message}: fix the template") from None
    except jinja2.UndefinedError as exc:
        where = _template_line(exc, env, name)
        raise RenderError(f"{where}: {exc.message}: define it or fix the name") from None
    except jinja2.TemplateNotFound as exc:
        where = _template_line(exc, env, name)
        raise RenderError(f"{where}: template {exc.name!r} does not exist: fix the name or add the file") from None
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:  # a filter or expression failed
        where = _template_line(exc, env, name)
        raise RenderError(f"{where}: {type(exc).__name__}: {' '.join(str(exc).split())}: fix the template") from None


def packer_template(spec: BuildSpec, packer_version: tuple[int, int, int]) -> tuple[str, str]:
    """The Packer HCL template and its variable file for ``spec`` under a given Packer version."""
    values = packer_vars(spec)
    types = {k: _hcl_type(v) for k, v in {**values, **runtime_vars(spec)}.items()}
    context = {
        "spec": spec,
        "variable_types": types,
        "required_plugins": packer_plugins.required_plugins(spec.env.target, packer_version),
    }
    template = _render_file(jinja_env(spec.project_root / "templates"), f"packer/{spec.env.target}.pkr.hcl.j2", context)
    width = max(len(k) for k in values)
    var_file = "".join(f"{k.ljust(width)} = {to_hcl(values[k])}\n" for k in sorted(values))
    return template, var_file


def image_context(spec: BuildSpec) -> dict[str, Any]:
    """The template context of the files baked into the image."""
    osquery_version, fluent_version = package_versions(spec)
    assert spec.env.pubsub is not None or spec.env.target == "local"
    return {
        "spec": spec,
        "env": spec.env,
        "variant": spec.variant,
        "osquery": spec.config.osquery,
        "fluentd": spec.config.fluentd,
        "pubsub": spec.env.pubsub,
        "packs": list(spec.packs),
        "artifact_source": spec.artifact_source,
        "osquery_package_version": osquery_version,
        "fluent_package_version": fluent_version,
        **imagefiles.context(spec),
    }


def _render_image_files(spec: BuildSpec, dest: Path) -> None:
    templates = spec.project_root / "templates"
    env = jinja_env(templates)
    context = image_context(spec)
    root = templates / "image"
    for source in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = source.relative_to(root)
        target = dest / (str(rel)[: -len(".j2")] if rel.suffix == ".j2" else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render_file(env, f"image/{rel}", context))
    for pack in spec.packs:
        source = spec.project_root / "packs" / f"{pack}.conf"
        if not source.is_file():
            key = "osquery.packs" if pack in spec.config.osquery.packs else f"variants.{spec.variant_name}.packs"
            raise ConfigError(
                f"bakery.{key} names {pack!r} but packs/{pack}.conf does not exist: "
                f"add the pack or remove it from the list"
            )
        target = dest / "etc/osquery/packs" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def fingerprint_label(value: str) -> str:
    """The input fingerprint as a label value (GCE allows 63 characters; the template uses the same cut)."""
    return value[:63]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def default_source_image(spec: BuildSpec) -> str:
    """The source image as known without asking anyone: the local base image's recipe key, or the public
    family (a bake resolves the family to its current image first, see ``Target.source_image``)."""
    if spec.env.target == "local":  # the local base image is ours: its recipe is an input
        return f"local-base/{content_key()}"
    return f"{spec.variant.source_image_project}/{spec.variant.source_image_family}"


def fingerprint(spec: BuildSpec, files: Mapping[str, str], source_image: str) -> str:
    """sha256 over everything that determines the image (files, scripts, source image, artifact versions)."""
    digest = hashlib.sha256()
    osquery_version, fluent_version = package_versions(spec)
    for line in (
        f"source-image {source_image}",
        f"artifact-source {spec.artifact_source}",
        f"osquery {osquery_version}",
        f"fluent-package {fluent_version}",
        f"plugin {spec.config.fluentd.plugin} {spec.config.fluentd.plugin_version}",
        *(f"file {path} {sha}" for path, sha in sorted(files.items())),
    ):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def render(spec: BuildSpec, packer_version: tuple[int, int, int], source_image: str | None = None) -> Rendered:
    """Render ``spec`` into its build directory atomically and return it with its fingerprint.

    ``source_image``: the exact source image the bake will start from (``Target.source_image``); without
    it, :func:`default_source_image` (the public family, unresolved) goes into the fingerprint."""
    final = spec.build_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.variant_name}.", dir=final.parent))
    try:
        template, var_file = packer_template(spec, packer_version)
        (staging / TEMPLATE_FILE).write_text(template)
        (staging / VARS_FILE).write_text(var_file)
        (staging / "provision").mkdir()
        for script in provision_scripts(spec.project_root):
            shutil.copyfile(script, staging / "provision" / script.name)
        _render_image_files(spec, staging / "files")
        (staging / "artifacts").mkdir()
        artifacts.stage_artifacts(spec, staging / "artifacts")
        (staging / EXPECTATIONS_FILE).write_text(to_json(imagefiles.expectations(spec)) + "\n")
        files = _tree_digest(staging)
        source = source_image or default_source_image(spec)
        value = fingerprint(spec, files, source)
        (staging / FINGERPRINT_FILE).write_text(
            to_json({"fingerprint": value, "source_image": source, "files": files}) + "\n"
        )
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty_dirs(final.parent, final.parent.parent)
        raise
    return Rendered(spec, final, value, source, needs_init=packer_plugins.uses_plugins(packer_version))


def _replace_dir(staging: Path, final: Path) -> None:
    """Swap ``staging`` in for ``final`` (the old tree is removed only after the new one is in place)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_empty_dirs(*directories: Path) -> None:
    """Remove each directory in turn (innermost first) while it is empty: a failed render leaves no trace."""
    for directory in directories:
        if not directory.is_dir() or any(directory.iterdir()):
            return
        directory.rmdir()
