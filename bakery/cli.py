"""Glue between Invoke and the package: config loading, YAML errors, and error → ``Exit`` translation."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit

from bakery import config, proc
from bakery.errors import BakeryError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def install_config_error_reporting() -> None:
    """Make YAML syntax errors (invoke.yaml, ``-f FILE``), uncastable ``INVOKE_*`` variables and
    unmergeable layers one line and exit 2 instead of a traceback.

    Invoke loads those sources after tasks.py is imported and lets their errors escape as tracebacks;
    wrapping its loaders is the only hook it offers.
    """
    original = Config._load_yaml
    if getattr(original, "_bakery_wrapped", False):
        return
    original_env = Config.load_shell_env

    def load_shell_env(self: Config) -> None:
        from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar

        try:
            original_env(self)
        except (ValueError, UncastableEnvVar, AmbiguousEnvVar) as exc:
            raise Exit(f"environment: an INVOKE_* variable has the wrong type ({exc}): fix or unset it", 2) from None

    def load_yaml(self: Config, path: Any) -> Any:
        from invoke.vendor import yaml  # Invoke parses with its vendored PyYAML

        try:
            return original(self, path)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise Exit(f"{where}: YAML syntax error: {problem}: fix the file", 2) from None

    original_merge = Config.merge

    def merge(self: Config) -> None:
        from invoke.config import AmbiguousMergeError

        try:
            original_merge(self)
        except AmbiguousMergeError as exc:
            raise Exit(
                f"config: {exc}: a file sets a section to a plain value (e.g. null); give the keys instead", 2
            ) from None

    load_yaml._bakery_wrapped = True  # type: ignore[attr-defined]
    Config._load_yaml = load_yaml  # type: ignore[method-assign]
    Config._load_yml = load_yaml
    Config.load_shell_env = load_shell_env  # type: ignore[method-assign]
    Config.merge = merge  # type: ignore[method-assign]


def settings(ctx: Context) -> config.Settings:
    """Load and validate the typed settings once per task (raises Exit on bad config)."""
    with errors_to_exit():
        return config.load(ctx.config, PROJECT_ROOT)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Translate the project's exception tree into ``raise Exit(message, code)``, once, at the top."""
    try:
        with proc.sigterm_raises():
            yield
    except BakeryError as exc:
        raise Exit(f"error: {exc.message}", exc.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", 130) from None
    except OSError as exc:  # a file system or process error the project did not anticipate: still one line
        raise Exit(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1) from None


def say(message: str) -> None:
    """Progress output for people (stdout, flushed: nightly logs must interleave correctly)."""
    print(message, flush=True)  # noqa: T201


def warn(message: str) -> None:
    """Warnings for people (stderr)."""
    print(message, file=sys.stderr, flush=True)  # noqa: T201


def project_settings(runtime_file: Path | None = None) -> config.Settings:
    """Settings as ``invoke`` would load them from this checkout (for scripts, benchmarks and tests)."""
    from bakery.defaults import DEFAULTS

    cfg = Config(project_location=PROJECT_ROOT, runtime_path=runtime_file)
    cfg.load_collection(DEFAULTS)
    cfg.load_project()
    cfg.load_runtime()
    return config.load(cfg, PROJECT_ROOT)
