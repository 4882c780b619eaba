"""What a target is: the protocol the pipeline drives, and the names both sides share.

Targets (``bakery/local``, ``bakery/gce``) implement :class:`Target`; the pipeline drives it without knowing
which one it has; ``bakery/targets.py`` picks one for an environment.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from bakery import render
from bakery.encode import label_value
from bakery.errors import PackerError
from bakery.images import ImageRecord, ImageStore
from bakery.imagetest import TestOutcome

Say = Callable[[str], None]


class ZoneAttempt(NamedTuple):
    """One zone a stage (``build`` or ``test``) tried: ``reason`` is why it moved on ('' when it did not:
    the VM was created there, or the stage failed there for a reason its error gives)."""

    stage: str
    zone: str
    reason: str


class Target(Protocol):
    """What the pipeline needs from a target (local QEMU today, GCE next)."""

    store: ImageStore

    def source_image(self, say: Say) -> str:
        """The exact image the bake starts from (GCE: the public family resolved now; local: the base
        image's recipe key), the same for every call on this target."""
        ...

    def consumers(self, family: str) -> list[str]:
        """One line per instance template or managed instance group booting from ``family``."""
        ...

    def check_tools(self, packer_version: tuple[int, int, int]) -> None:
        """Raise ToolMissingError when a tool the bake needs is missing or cannot do the job; runs first."""
        ...

    def prepare(self, rendered: render.Rendered, say: Say) -> dict[str, str]:
        """Get ready to bake; return the runtime Packer variables (base image, accelerator, …)."""
        ...

    def retry_build(self, error: PackerError, say: Say) -> dict[str, str] | None:
        """After ``packer build`` failed with ``error``: the runtime variables to change for one more attempt
        (GCE: the next zone when the builder VM found no capacity), or None to fail with ``error``; may
        raise a one-line error of its own instead (GCE: quota, no zone left)."""
        ...

    def zones_tried(self) -> list[ZoneAttempt]:
        """Every zone the build and test stages tried so far, in order, and why each was left."""
        ...

    def candidate_name(self, image_name: str) -> str:
        """The name Packer gives the candidate (GCE: image names are project-global, so not ``image_name``)."""
        ...

    def output(self, rendered: render.Rendered, image_name: str) -> str:
        """Where Packer leaves the baked candidate."""
        ...

    def test(self, rendered: render.Rendered, candidate: str, run_dir: Path, say: Say) -> TestOutcome:
        """Boot the candidate and run the image test suite; always stop what was booted."""
        ...

    def publish(
        self, candidate: str, image_name: str, family: str, *, labels: dict[str, str], description: str, manifest: str
    ) -> ImageRecord:
        """Make the tested ``candidate`` image ``image_name``, the new head of ``family``."""
        ...

    def discard(self, candidate: str) -> None:
        """Remove what is left of a candidate (after publishing, a failure or an interrupt)."""
        ...

    def keep(self, candidate: str, run_dir: Path) -> str:
        """Keep a candidate that failed its tests for inspection; return where it is."""
        ...

    def plan(self, rendered_dir: Path) -> list[str]:
        """Human lines describing what prepare/test would do (for --dry-run)."""
        ...


def git_sha(root: Path = render.PROJECT_ROOT) -> str:
    """Short git sha of the checkout (``nogit`` outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    return out.stdout.strip() or "nogit"


def image_name(family: str, now: datetime.datetime, sha: str) -> str:
    """``FAMILY-YYYYMMDD-HHMMSS-SHA``, within GCE's 63 characters (the family part is cut if needed)."""
    suffix = f"-{now:%Y%m%d-%H%M%S}-{label_value(sha)[:7]}"
    return family[: 63 - len(suffix)].rstrip("-") + suffix
