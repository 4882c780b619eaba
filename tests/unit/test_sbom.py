"""The CycloneDX SBOM: exact purls, a document valid against the bundled 1.6 schema (offline), broken
documents rejected, deterministic bytes, nothing half-written."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from bakery import sbom
from bakery.errors import BakeryError
from bakery.identity import Identity
from bakery.imagetest import Package

FINGERPRINT = "ab" * 32
IDENT = Identity("gl-osquery-debian-12-20261127-150405-44d1c4d", "debian-12", FINGERPRINT)
BAKED_AT = datetime.datetime(2026, 11, 27, 15, 4, 5, tzinfo=datetime.UTC)
FACTS = sbom.ImageFacts(IDENT, "gl-osquery-debian-12", "gstg", "upstream", "debian", "bookworm", BAKED_AT)
PACKAGES = [
    Package("osquery", "5.23.1-1.linux", "amd64"),
    Package("attr", "1:2.4.47-2+b1", "amd64"),
    Package("tzdata", "2024a-0+deb12u1", "all"),
    Package("libc6", "2.36-9+deb12u9", "amd64"),
]


def document(packages: list[Package] = PACKAGES, facts: sbom.ImageFacts = FACTS) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sbom.to_json(sbom.build(facts, packages)))
    return data


@pytest.mark.parametrize(
    ("package", "vendor", "codename", "expected"),
    [
        # package-url/purl-spec types/deb-definition.json examples (the first two with their distro)
        (Package("curl", "7.50.3-1", "i386"), "debian", "jessie", "curl@7.50.3-1?arch=i386&distro=jessie"),
        (Package("dpkg", "1.19.0.4", "amd64"), "debian", "stretch", "dpkg@1.19.0.4?arch=amd64&distro=stretch"),
        (Package("attr", "1:2.4.47-2+b1", "amd64"), "debian", "sid", "attr@1:2.4.47-2%2Bb1?arch=amd64&distro=sid"),
        (Package("libc6", "2.35-0ubuntu3", "amd64"), "ubuntu", "jammy", "libc6@2.35-0ubuntu3?arch=amd64&distro=jammy"),
    ],
)
def test_purls_follow_the_deb_type(package: Package, vendor: str, codename: str, expected: str) -> None:
    assert sbom.purl(package, vendor, codename).to_string() == f"pkg:deb/{vendor}/{expected}"


def test_the_document_is_valid_cyclonedx_with_the_image_identity() -> None:
    text = sbom.to_json(sbom.build(FACTS, PACKAGES))
    assert sbom.validation_error(text) is None
    doc = json.loads(text)
    assert (doc["bomFormat"], doc["specVersion"], doc["version"]) == ("CycloneDX", "1.6", 1)
    assert doc["serialNumber"] == f"urn:uuid:{sbom.serial_number(IDENT, PACKAGES)}"
    meta = doc["metadata"]
    assert meta["timestamp"] == "2026-11-27T15:04:05+00:00"
    assert meta["tools"]["components"] == [{"name": "osquery-bakery", "type": "application", "version": "0.1.0"}]
    image = meta["component"]
    assert (image["type"], image["name"], image["bom-ref"]) == ("operating-system", IDENT.image, f"image:{IDENT.image}")
    props = {p["name"]: p["value"] for p in image["properties"]}
    assert props["osquery-bakery:image"] == IDENT.image
    assert props["osquery-bakery:variant"] == "debian-12"
    assert props["osquery-bakery:input-fingerprint"] == FINGERPRINT
    assert props["osquery-bakery:stand-in"] == "false"
    assert [c["name"] for c in doc["components"]] == ["attr", "libc6", "osquery", "tzdata"]
    assert {c["type"] for c in doc["components"]} == {"library"}
    assert doc["components"][0] == {
        "bom-ref": "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64&distro=bookworm",
        "name": "attr",
        "purl": "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64&distro=bookworm",
        "type": "library",
        "version": "1:2.4.47-2+b1",
    }
    (root,) = [d for d in doc["dependencies"] if d["ref"] == image["bom-ref"]]
    assert root["dependsOn"] == sorted(c["bom-ref"] for c in doc["components"])


def test_output_is_deterministic_and_the_serial_follows_the_packages() -> None:
    first = sbom.to_json(sbom.build(FACTS, PACKAGES))
    assert sbom.to_json(sbom.build(FACTS, list(reversed(PACKAGES)))) == first
    other = document(PACKAGES[:-1])
    assert other["serialNumber"] != json.loads(first)["serialNumber"]


def test_stand_in_images_say_so() -> None:
    facts = sbom.ImageFacts(IDENT, "osquery-debian-12", "local", "stand-in", "debian", "bookworm", BAKED_AT)
    props = {p["name"]: p["value"] for p in document(facts=facts)["metadata"]["component"]["properties"]}
    assert props["osquery-bakery:stand-in"] == "true"


def test_packages_read_back() -> None:
    assert sbom.packages(sbom.to_json(sbom.build(FACTS, PACKAGES))) == sorted(PACKAGES, key=lambda p: p.name)


def _broken(change: str) -> str:
    doc = document()
    if change == "component-type":
        doc["components"][0]["type"] = "debian-package"
    elif change == "no-bom-format":
        del doc["bomFormat"]
    elif change == "component-without-name":
        del doc["components"][1]["name"]
    elif change == "serial-not-a-urn":
        doc["serialNumber"] = "bake-1"
    elif change == "unknown-key":
        doc["metadata"]["component"]["image"] = IDENT.image
    elif change == "timestamp":
        doc["metadata"]["timestamp"] = "yesterday"
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("component-type", "$.components[0].type"),
        ("no-bom-format", "$: 'bomFormat' is a required property"),
        ("component-without-name", "$.components[1]: 'name' is a required property"),
        ("serial-not-a-urn", "$.serialNumber"),
        ("unknown-key", "$.metadata.component: Additional properties are not allowed"),
        ("timestamp", "$.metadata.timestamp: 'yesterday' is not a 'date-time'"),
    ],
)
def test_a_broken_document_fails_validation(change: str, where: str) -> None:
    error = sbom.validation_error(_broken(change))
    assert error is not None and error.startswith(where), error
    assert "\n" not in error


def test_not_json_fails_validation() -> None:
    assert (sbom.validation_error("{") or "").startswith("not JSON:")


def test_validation_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema and the schemas it references are bundled with cyclonedx-python-lib: a validator built
    with every socket refused still validates, and still rejects a broken document."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the validator opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert sbom.validation_error(sbom.to_json(sbom.build(FACTS, PACKAGES))) is None
    assert sbom.validation_error(_broken("component-type")) is not None


def test_write_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sbom.write(FACTS, PACKAGES, tmp_path / "run" / sbom.SBOM_FILE)
    assert json.loads(path.read_text()) == document()
    assert [p.name for p in path.parent.iterdir()] == [sbom.SBOM_FILE]

    broken = _broken("component-type")
    monkeypatch.setattr(sbom, "to_json", lambda _bom: broken)
    target = tmp_path / "other" / sbom.SBOM_FILE
    with pytest.raises(BakeryError, match=r"fails the CycloneDX 1.6 schema: \$.components\[0\].type"):
        sbom.write(FACTS, PACKAGES, target)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_a_component_without_a_deb_purl_is_refused() -> None:
    doc = document()
    del doc["components"][0]["purl"]
    with pytest.raises(ValueError, match=r"components\[0\] has no valid purl"):
        sbom.packages(json.dumps(doc))
    doc = document()
    doc["components"][0]["purl"] = "pkg:pypi/attr@1.0"
    with pytest.raises(ValueError, match=r"components\[0\] purl pkg:pypi/attr@1.0 is not a deb purl"):
        sbom.packages(json.dumps(doc))
