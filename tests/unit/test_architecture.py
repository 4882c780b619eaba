"""The import contracts in pyproject.toml (import-linter): no cycle in bakery/, the pipeline knows no target.

Each contract is run by the real ``lint-imports`` on this checkout, and shown to fail on a copy of the
package broken in exactly the way it forbids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``bakery`` package found first in ``root`` (its pyproject.toml's contracts)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def broken_copy(tmp_path: Path, module: str, extra_import: str) -> Path:
    """A copy of the package (and pyproject.toml) with one import added to ``module``."""
    shutil.copytree(ROOT / "bakery", tmp_path / "bakery", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "bakery" / module
    source = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in source
    path.write_text(source.replace(marker, f"{marker}\n{extra_import}\n", 1))
    return tmp_path


def test_the_checkout_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "extra_import", "expected"),
    [
        ("runreport.py", "from bakery import nightly  # noqa", "No cycles are allowed in bakery."),
        ("target.py", "from bakery import pipeline  # noqa", "No cycles are allowed in bakery."),
        (
            "render.py",
            "from bakery.local import baseimage  # noqa",
            "bakery.render is not allowed to import bakery.local",
        ),
        (
            "pipeline.py",
            "from bakery.local import vm  # noqa",
            "bakery.pipeline is not allowed to import bakery.local",
        ),
        (
            "pipeline.py",
            "from bakery import targets  # noqa",
            "bakery.pipeline is not allowed to import bakery.targets",
        ),
    ],
    ids=[
        "report-imports-nightly",
        "target-protocol-imports-pipeline",
        "render-imports-local",
        "pipeline-imports-local",
        "pipeline-picks-target",
    ],
)
def test_a_broken_dependency_is_caught(tmp_path: Path, module: str, extra_import: str, expected: str) -> None:
    result = lint_imports(broken_copy(tmp_path, module, extra_import))
    assert result.returncode != 0, result.stdout
    assert expected in result.stdout, result.stdout
