"""Built-in defaults for the ``bakery`` config subtree (Invoke's lowest layer, set with ``ns.configure``).

Every key has a default here, so ``INVOKE_BAKERY_*`` variables can override any scalar. Project
settings (GCP projects, topics) belong in ``invoke.yaml``; pipelines override with ``INVOKE_BAKERY_*``
variables or ``invoke -f FILE``.
"""

from __future__ import annotations

from typing import Any

from bakery.config import (
    Artifacts,
    Environment,
    FluentdConfig,
    LocalSettings,
    Notify,
    OsqueryConfig,
    PubSub,
    Retention,
    Timeouts,
    Variant,
)

VARIANTS = {
    "debian-12": Variant(
        os="debian",
        codename="bookworm",
        source_image_family="debian-12",
        source_image_project="debian-cloud",
        local=True,
    ),
    "ubuntu-2204": Variant(
        os="ubuntu",
        codename="jammy",
        source_image_family="ubuntu-2204-lts",
        source_image_project="ubuntu-os-cloud",
    ),
    "ubuntu-2404": Variant(
        os="ubuntu",
        codename="noble",
        source_image_family="ubuntu-2404-lts-amd64",
        source_image_project="ubuntu-os-cloud",
    ),
}

LOCAL = Environment(
    target="local",
    variants=("debian-12",),
    artifacts=Artifacts(source="stand-in"),
    pubsub=PubSub(project="local-project", topic="osquery-results-local"),
    retention=Retention(keep=3, max_age_days=30),
    local=LocalSettings(),
)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


DEFAULTS: dict[str, Any] = {
    "bakery": {
        "build_dir": "build",
        "env": "local",
        "image_suite": "tests/image",
        "osquery": _dump(OsqueryConfig()),
        "fluentd": _dump(FluentdConfig()),
        "timeouts": _dump(Timeouts()),
        "notify": _dump(Notify()),
        "variants": {name: _dump(v) for name, v in VARIANTS.items()},
        "environments": {"local": _dump(LOCAL)},
    }
}
