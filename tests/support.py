"""Helpers the test packages share."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bakery.config import BuildSpec


def build_in(spec: BuildSpec, directory: Path) -> BuildSpec:
    """``spec`` rendering under ``directory`` (build_dir made absolute; the project's own templates,
    provision scripts and packs are still used)."""
    return replace(spec, config=spec.config.model_copy(update={"build_dir": str(directory)}))
