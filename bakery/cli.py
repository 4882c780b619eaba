"""Glue between Invoke and the package: config loading, YAML errors, and error → ``Exit`` translation."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from invoke import config as invoke_config
from invoke.config import AmbiguousMergeError, Config
from invoke.context import Context
from invoke.env import Environment
from invoke.exceptions import AmbiguousEnvVar, Exit, ParseError, UncastableEnvVar, UnknownFileType
from invoke.program import Program

from bakery import config, proc
from bakery.errors import BakeryError, ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def install_config_error_reporting() -> None:
    """Make every bad-input error Invoke itself meets one line and exit 2 instead of a traceback or a
    silent default: config files (missing, unreadable, not a mapping, bad syntax, unknown extension or
    top-level key), layers that cannot merge (a section set to a plain value), ``INVOKE_BAKERY_*``
    variables (cast by the schema, strict booleans: :func:`bakery.config.env_layer`) and command-line
    parse errors (unknown task or flag, missing value or positional).

    Invoke loads these sources after tasks.py is imported and offers no hook for its errors, so this
    wraps its loader methods, once, here (invoke 3.0.3: invoke/config.py ``Config._load_file``,
    ``_load_yaml``/``_load_json``/``_load_py``, ``merge``; ``load_shell_env`` builds the module-level
    ``Environment``; invoke/program.py ``Program.parse_tasks``/``parse_cleanup`` raise ``ParseError``,
    which ``Program.run`` turns into exit 1).
    """
    if getattr(Config._load_file, "_bakery_wrapped", False):
        return
    setattr(invoke_config, "Environment", _SchemaEnvironment)  # noqa: B010 - load_shell_env looks it up there

    for suffix in ("yaml", "yml", "json", "py"):
        setattr(Config, f"_load_{suffix}", _parse_errors_to_exit(getattr(Config, f"_load_{suffix}")))

    original_load_file = Config._load_file

    def load_file(self: Config, prefix: str, absolute: bool = False, merge: bool = True) -> None:
        try:
            original_load_file(self, prefix, absolute=absolute, merge=False)
        except UnknownFileType:
            path = getattr(self, f"_{prefix}_path")
            raise Exit(
                f"error: {_runtime_origin(path)}: {Path(str(path)).suffix or 'no extension'} is not a config file "
                f"type Invoke reads: name the file .yaml, .yml, .json or .py",
                2,
            ) from None
        except OSError as exc:  # ENOENT is Invoke's "no such file, skip"; this is a directory, no permission…
            raise Exit(
                f"error: {exc.filename}: cannot read the config file ({exc.strerror}): give a readable file", 2
            ) from None
        _check_loaded_file(self, prefix)
        if merge and getattr(self, f"_{prefix}_found"):
            self.merge()

    original_merge = Config.merge

    def merge(self: Config) -> None:
        try:
            original_merge(self)
        except AmbiguousMergeError as exc:
            line = config.merge_conflict(_layers(self))
            raise Exit(f"error: {line or exc}", 2) from None

    original_env = Config.load_shell_env

    def load_shell_env(self: Config) -> None:
        try:
            original_env(self)
        except ConfigError as exc:
            raise Exit(f"error: {exc.message}", exc.exit_code) from None
        except (UncastableEnvVar, AmbiguousEnvVar) as exc:  # Invoke's own (non-bakery) keys
            raise Exit(f"error: environment: {exc}: fix or unset the INVOKE_* variable", 2) from None

    for name in ("parse_tasks", "parse_cleanup"):
        setattr(Program, name, _parse_error_to_exit(getattr(Program, name)))
    load_file._bakery_wrapped = True  # type: ignore[attr-defined]
    Config._load_file = load_file  # type: ignore[method-assign]
    Config.merge = merge  # type: ignore[method-assign]
    Config.load_shell_env = load_shell_env  # type: ignore[method-assign]


class _SchemaEnvironment(Environment):
    """Invoke's env loader, with the ``bakery`` subtree left to :func:`bakery.config.env_layer`."""

    def _crawl(self, key_path: list[str], env_vars: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        return {} if key_path == ["bakery"] else super()._crawl(key_path, env_vars)

    def load(self) -> dict[str, Any]:
        data = super().load()
        layer = config.env_layer(self._config.get("bakery"), os.environ, self._prefix or "")
        if layer:
            data["bakery"] = layer
        return data


def _runtime_origin(path: Any) -> str:
    """``-f PATH`` or ``INVOKE_RUNTIME_CONFIG=PATH``: how the runtime file was named (invoke/program.py
    ``update_config``: the flag wins, the variable is the fallback)."""
    flag = any(a in ("-f", "--config") or a.startswith("--config=") for a in sys.argv[1:])
    if not flag and os.environ.get("INVOKE_RUNTIME_CONFIG") == str(path):
        return f"INVOKE_RUNTIME_CONFIG={path}"
    return str(path)


# Top-level keys a project or runtime file may hold: Invoke's own sections (Config.global_defaults) and ours.
def _known_top_level() -> set[str]:
    return {*Config.global_defaults(), "bakery"}


def _check_loaded_file(cfg: Config, prefix: str) -> None:
    path = getattr(cfg, f"_{prefix}_path")
    found = getattr(cfg, f"_{prefix}_found")
    if prefix == "runtime" and path is not None and not found:
        raise Exit(
            f"error: {_runtime_origin(path)}: the runtime config file does not exist: fix the path (relative "
            "paths start at the current directory)",
            2,
        )
    if not found:
        return
    data = getattr(cfg, f"_{prefix}")
    if data is None:  # an empty YAML file
        cfg._set(f"_{prefix}", {})
        return
    if not isinstance(data, dict):
        raise Exit(
            f"error: {path}: holds {type(data).__name__} {config._shown(data)}, not a mapping: a config file "
            "is a mapping whose top-level key is 'bakery:' (the keys are indented under it)",
            2,
        )
    if prefix in ("runtime", "project"):  # system and user files are shared with other Invoke projects
        known = _known_top_level()
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise Exit(
                    f"error: {path}: top-level key {key!r} is neither 'bakery' nor one of Invoke's sections: "
                    f"{hint}put the settings under 'bakery:'",
                    2,
                )


def _parse_errors_to_exit(loader: Callable[[Config, Any], Any]) -> Callable[[Config, Any], Any]:
    def load(self: Config, path: Any) -> Any:
        from invoke.vendor import yaml  # Invoke parses with its vendored PyYAML

        try:
            return loader(self, path)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise Exit(f"error: {where}: YAML syntax error: {problem}: fix the file", 2) from None
        except json.JSONDecodeError as exc:
            raise Exit(
                f"error: {path}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}: fix the file", 2
            ) from None
        except UnicodeDecodeError:
            raise Exit(f"error: {path}: is not UTF-8 text (a binary file?): give a YAML config file", 2) from None
        except (Exit, OSError):
            raise
        except Exception as exc:  # a .py config file runs arbitrary code  # noqa: BLE001
            line = next(
                (f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == str(path)), None
            )
            where = f"{path}:{line}" if line else str(path)
            problem = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise Exit(f"error: {where}: loading the config file failed: {problem}: fix it", 2) from None

    return load


def _layers(cfg: Config) -> list[tuple[Callable[[config.Loc], str], Any]]:
    """Invoke's layers in merge order (invoke/config.py ``Config.merge``), each with how to name it."""

    def fixed(text: str) -> Callable[[config.Loc], str]:
        return lambda _path: text

    def env(path: config.Loc) -> str:
        return "environment variable " + config.env_var_name(path, cfg._env_prefix or "")

    layers: list[tuple[Callable[[config.Loc], str], Any]] = [
        (fixed("Invoke's defaults"), cfg._defaults),
        (fixed("bakery/defaults.py"), cfg._collection),
    ]
    for name in ("system", "user", "project"):
        if getattr(cfg, f"_{name}_found"):
            layers.append((fixed(config.layer_label(cfg, f"_{name}")), getattr(cfg, f"_{name}")))
    layers.append((env, cfg._env))
    if cfg._runtime_found:
        layers.append((fixed(config.layer_label(cfg, "_runtime")), cfg._runtime))
    layers += [(fixed("a command-line flag"), cfg._overrides), (fixed("a change made by a task"), cfg._modifications)]
    return layers


def _parse_error_to_exit(method: Callable[[Program], None]) -> Callable[[Program], None]:
    def parse(self: Program) -> None:
        try:
            method(self)
        except ParseError as exc:
            raise Exit(f"error: {_parse_error_line(exc, self)}", 2) from None

    return parse


def _parse_error_line(exc: ParseError, program: Program) -> str:
    """Invoke's parser message as one line naming the task, the flag or word, and the fix."""
    text = str(exc)
    task = getattr(exc.context, "name", None)
    help_hint = f"see `invoke --help {task}`" if task else "see `invoke --list`"
    unknown = re.fullmatch(r"No idea what '(.*)' is!", text)
    if unknown:
        word = unknown.group(1)
        if word.startswith("-"):
            command = f"invoke {task}" if task else "invoke"
            return f"command line: {command}: unknown flag {word!r}: {help_hint} for its flags"
        collection = getattr(program, "collection", None)
        names = list(collection.task_names) if collection is not None else []
        close = difflib.get_close_matches(word, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"command line: unknown task {word!r}: {hint}run `invoke --list` for the tasks"
    needs_value = re.fullmatch(r"Flag <Argument: ([\w-]+).*> needed value and was not given one!", text)
    if needs_value:
        flag = "--" + needs_value.group(1).replace("_", "-")
        return f"command line: invoke {task}: flag {flag} needs a value: give one, e.g. {flag} VALUE ({help_hint})"
    missing = re.fullmatch(r"'(.+)' did not receive required positional arguments: (.+)", text)
    if missing:
        return f"command line: invoke {missing.group(1)}: missing argument {missing.group(2)}: give it ({help_hint})"
    return f"command line: {' '.join(text.split())}: {help_hint}"


# The Invoke config the running task loaded its settings from: errors raised later that start with a key
# (``bakery.osquery.flags.x: …``, from rendering) are prefixed with the file or variable that set it.
_LOADED: list[Any] = []
_KEY_FIRST = re.compile(r"bakery(?:\.[\w-]+|\[\d+\])+")


def settings(ctx: Context) -> config.Settings:
    """Load and validate the typed settings once per task (raises Exit on bad config)."""
    _LOADED[:] = [ctx.config]
    with errors_to_exit():
        return config.load(ctx.config, PROJECT_ROOT)


def _attributed(exc: BakeryError) -> str:
    """``exc``'s message; a ConfigError that starts with a key path gets the layer that set the key."""
    match = _KEY_FIRST.match(exc.message) if isinstance(exc, ConfigError) and _LOADED else None
    if match is None:
        return exc.message
    loc = tuple(int(i) if i else k for k, i in re.findall(r"\.([\w-]+)|\[(\d+)\]", match.group(0)[len("bakery") :]))
    return f"{config.source_of(_LOADED[0], loc)}: {exc.message}"


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Translate the project's exception tree into ``raise Exit(message, code)``, once, at the top."""
    try:
        with proc.sigterm_raises():
            yield
    except BakeryError as exc:
        raise Exit(f"error: {_attributed(exc)}", exc.exit_code) from None
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
