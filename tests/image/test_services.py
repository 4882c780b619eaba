"""osqueryd, rsyslog, fluentd (and the host-key generator) are enabled, and run on a booted VM."""

from __future__ import annotations

from typing import Any


def test_service_enabled(host: Any, unit: str) -> None:
    assert host.service(unit).is_enabled


def test_service_running(host: Any, unit: str, needs_booted: None) -> None:
    if unit == "bakery-ssh-host-keys.service":
        return  # a oneshot that only runs while host keys are missing
    assert host.service(unit).is_running
