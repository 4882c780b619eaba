"""Vendor facts shipped as data (``bakery/data/VENDOR/KIND-VERSION.json``), each file with its upstream
provenance inside; selected by the pinned version."""

from __future__ import annotations

from pathlib import Path

from bakery.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"


def versions(vendor: str, kind: str) -> list[str]:
    """The versions that have ``KIND-VERSION.json`` data for ``vendor``."""
    prefix = f"{kind}-"
    return sorted(p.name[len(prefix) : -len(".json")] for p in (DATA_DIR / vendor).glob(f"{prefix}*.json"))


def path(vendor: str, kind: str, version: str, *, what: str, key: str, how_to_add: str) -> Path:
    """The data file of ``version``, or one ConfigError line naming ``key``, what exists and how to add it."""
    found = DATA_DIR / vendor / f"{kind}-{version}.json"
    if not found.is_file():
        raise ConfigError(
            f"{key}: no {what} for version {version}; available: {', '.join(versions(vendor, kind)) or 'none'}; "
            f"use one of those or add bakery/data/{vendor}/{kind}-{version}.json ({how_to_add})"
        )
    return found
