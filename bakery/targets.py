"""Pick the :class:`~bakery.target.Target` implementation for an environment (the one module that knows them all)."""

from __future__ import annotations

from bakery.config import BuildSpec
from bakery.target import Say, Target


def target_for(spec: BuildSpec, *, dry_run: Say | None = None) -> Target:
    """The target implementation for the environment's ``target`` (``dry_run``: GCE mutations are printed)."""
    if spec.env.target == "local":
        from bakery.local.target import LocalTarget

        return LocalTarget(spec)
    from bakery.gce.target import GceTarget

    return GceTarget(spec, dry_run=dry_run)
