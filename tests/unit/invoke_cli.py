"""Run the real ``invoke`` CLI of this checkout (or of a copy of it) the way a user does, for bad-input tests.

Every run gets its own build directory (in the runtime file), local registry and cache directory (through
``INVOKE_BAKERY_*`` variables, so a runtime file can still override them), and an environment without the
caller's ``INVOKE_*`` variables: the outcome does not depend on the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
# What a copy of the project needs to run its tasks (the package, its data, templates, packs, the suite).
PROJECT_PARTS = ("bakery", "templates", "packs", "provision", "packer", "tasks.py", "invoke.yaml", "tests/image")


@dataclass(frozen=True)
class Run:
    proc: subprocess.CompletedProcess[str]
    build: Path
    registry: Path
    runtime: Path


def base_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without INVOKE_* variables, with this run's registry and cache directories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_REGISTRY_DIR"] = str(tmp_path / "registry")
    env["INVOKE_BAKERY_ENVIRONMENTS_LOCAL_LOCAL_CACHE_DIR"] = str(tmp_path / "cache")
    env["INVOKE_BAKERY_BUILD_DIR"] = str(tmp_path / "build")  # used when the runtime file sets none
    return {**env, **(extra or {})}


def run_invoke(
    tmp_path: Path,
    runtime_yaml: str | None,
    *args: str,
    env: dict[str, str] | None = None,
    file_text: str | None = None,
    runtime_name: str = "runtime.yaml",
    use_runtime: bool = True,
    cwd: Path = ROOT,
) -> Run:
    """``invoke -f RUNTIME ARGS``. The runtime file is ``bakery:`` with this run's build_dir and then
    ``runtime_yaml`` (indented under bakery:), or exactly ``file_text``; ``use_runtime=False``: no ``-f``."""
    build = tmp_path / "build"
    runtime = tmp_path / runtime_name
    if file_text is None:
        file_text = f"bakery:\n  build_dir: {build}\n" + (runtime_yaml or "")
    if not runtime.exists():
        runtime.write_text(file_text)
    argv = [*INVOKE, *(["-f", str(runtime)] if use_runtime else []), *args]
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=120, env=base_env(tmp_path, env), check=False
    )
    return Run(proc, build, tmp_path / "registry", runtime)


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` with its content hash (directories: "dir"), to show nothing changed."""
    if not path.exists():
        return {}
    entries = {}
    for item in sorted(path.rglob("*")):
        rel = str(item.relative_to(path))
        entries[rel] = "dir" if item.is_dir() else hashlib.sha256(item.read_bytes()).hexdigest()
    return entries


def copy_project(dest: Path) -> Path:
    """A copy of the project (package included, so PROJECT_ROOT is the copy) to break templates or packs in."""
    for part in PROJECT_PARTS:
        source = ROOT / part
        target = dest / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return dest
