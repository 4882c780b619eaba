"""osqueryd, rsyslog, fluentd (and the host-key generator) are enabled, and run on a booted VM."""

from __future__ import annotations

from typing import Any


def test_service_enabled(host: Any, unit: str) -> None:
    assert host.service(unit).is_enabled


def test_service_running(host: Any, unit: str, needs_booted: None) -> None:
    if unit == "bakery-ssh-host-keys.service":
        return  # a oneshot that only runs while host keys are missing
    assert host.service(unit).is_running


def test_the_host_key_generator_waits_for_cloud_init_and_the_guest_agent(host: Any) -> None:
    """Either makes an instance's host keys at first boot; the guest agent also publishes them as guest
    attributes, so a generator running alongside must not replace them (seen in the GCE rehearsal)."""
    unit = host.file("/etc/systemd/system/bakery-ssh-host-keys.service").content_string  # no manager needed
    after = {name for line in unit.splitlines() if line.startswith("After=") for name in line[6:].split()}
    assert {"cloud-init.service", "google-guest-agent.service"} <= after
