"""Helpers the test packages share."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bakery.baserecipe import LOCAL, Recipe
from bakery.config import BuildSpec
from bakery.local.baseimage import TOOLS, BaseImage, base_dir, ensure_base_image, load_base_image

CACHE_DIR = Path(os.environ.get("BAKERY_CACHE_DIR", "/var/tmp/bakery-test-cache"))


def build_in(spec: BuildSpec, directory: Path) -> BuildSpec:
    """``spec`` rendering under ``directory`` (build_dir made absolute; the project's own templates,
    provision scripts and packs are still used)."""
    return replace(spec, config=spec.config.model_copy(update={"build_dir": str(directory)}))


def cached_base_image(recipe: Recipe = LOCAL, *, timeout: float = 1800) -> BaseImage:
    """``recipe``'s base image from the test cache ($BAKERY_CACHE_DIR), built first if missing: a test that
    needs it skips when the host lacks the build tools, or when it would have to build without root."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the base image needs {', '.join(missing)}")
    if load_base_image(base_dir(CACHE_DIR, recipe), recipe.key) is None and os.geteuid() != 0:
        pytest.skip(f"building the base image needs root (cache: {CACHE_DIR})")
    return ensure_base_image(CACHE_DIR, timeout=timeout, log=print, recipe=recipe)


def runtime_config(tmp: Path, suite: Path | None = None) -> Path:
    """An Invoke runtime file (``invoke -f``) for an end-to-end run under ``tmp``: its own build directory and
    local registry, the shared base image cache, optionally another image suite."""
    path = tmp / "pipeline.yaml"
    lines = [
        "bakery:",
        f"  build_dir: {tmp / 'build'}",
        *([f"  image_suite: {suite}"] if suite else []),
        "  environments:",
        "    local:",
        "      local:",
        f"        cache_dir: {CACHE_DIR}",
        f"        registry_dir: {tmp / 'registry'}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
