"""osquery and fluent-package at their pinned versions, held; the Pub/Sub plugin gem at its pin."""

from __future__ import annotations

import json
from typing import Any


def test_package_pinned(host: Any, expect: dict[str, Any], package: str) -> None:
    pkg = host.package(package)
    assert pkg.is_installed, f"{package} is not installed"
    assert pkg.version == expect["packages"][package]


def test_package_held(host: Any, package: str) -> None:
    assert package in host.check_output("apt-mark showhold").split()


def test_fluent_plugin_pinned(host: Any, expect: dict[str, Any]) -> None:
    plugin = expect["fluent_plugin"]
    cmd = host.run("/usr/sbin/fluent-gem list --installed --exact %s --version %s", plugin["name"], plugin["version"])
    assert cmd.rc == 0, f"{plugin['name']} {plugin['version']} is not installed: {cmd.stdout}{cmd.stderr}"
    if plugin["standin_record"]:
        recorded = host.file(plugin["standin_record"]).content_string.splitlines()
        assert f"{plugin['name']} {plugin['version']}" in recorded


def test_image_says_what_it_is(host: Any, expect: dict[str, Any]) -> None:
    info = json.loads(host.file(expect["image_info"]).content_string)
    assert info["artifact_source"] == expect["artifact_source"]
    assert info["stand_in"] is (not expect["real_binaries"])


def test_osqueryi_version(host: Any, expect: dict[str, Any], real: bool) -> None:
    out = host.check_output("osqueryi --version")
    if real:
        assert expect["packages"]["osquery"].split("-")[0] in out
        assert "STAND-IN" not in out
    else:
        assert "STAND-IN" in out


def test_osqueryi_runs_a_query(host: Any, needs_real_osquery: None) -> None:
    rows = json.loads(host.check_output("osqueryi --json %s", "SELECT version FROM osquery_info;"))
    assert rows and rows[0]["version"]
