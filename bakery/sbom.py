"""The image's SBOM: the package list read from the booted test VM as a CycloneDX 1.6 JSON document.

Every bake writes it beside its manifest (``SBOM_FILE`` in the run directory), validated against the
CycloneDX JSON schema that cyclonedx-python-lib bundles (with its ``json-validation`` extra the schema and
the SPDX/JSF/cryptography schemas it references are read from the installed package: no network). The
image carries its sha256 (label ``sbom-sha256``) and the manifest records it, so ``invoke diff`` can tell
the image's SBOM from a stale one.

Choices:

* One component per installed dpkg package (type ``library``), identified by a purl
  ``pkg:deb/<vendor>/<name>@<version>?arch=<arch>&distro=<codename>``: package-url/purl-spec
  types/deb-definition.json (namespace = vendor "debian" or "ubuntu", lowercased; name lowercased; ``arch``
  qualifier; examples use ``distro=<codename>``, e.g. ``distro=jessie``). The vendor namespace is the
  variant's OS for every package, also for osquery and fluent-package, which come from their vendors'
  repositories: dpkg-query does not say which repository a package came from.
* The image itself is ``metadata.component``, type ``operating-system`` (the 1.6 schema: "an operating
  system without regard to deployment model (… virtual machine, image, etc)"), named after the published
  image, with the image identity (bakery/identity.py) and provenance as ``osquery-bakery:*`` properties. It
  depends on every package component.
* Deterministic: the timestamp is the bake's start time (the one in the image name), the serial number a
  UUIDv5 of the image name, input fingerprint and package list; components are sorted. The same bake
  gives byte-identical output, so the label stays checkable; CycloneDX asks for a unique serial number per
  BOM, which holds because each image name is baked once and a different package list gives another UUID.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from bakery import __version__
from bakery.errors import BakeryError
from bakery.identity import Identity
from bakery.imagetest import Package

SBOM_FILE = "bakery-sbom.cdx.json"  # CycloneDX's recommended suffix for JSON BOMs is .cdx.json
SCHEMA_VERSION = SchemaVersion.V1_6
FORMAT = "CycloneDX 1.6 JSON"
PROPERTY_PREFIX = "osquery-bakery:"
# UUIDv5 namespace of this project's SBOM serial numbers (uuid5 of the URL namespace and a fixed name).
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:osquery-bakery:sbom")


@dataclass(frozen=True)
class ImageFacts:
    """What the SBOM says about the image besides its packages."""

    identity: Identity
    family: str
    environment: str
    artifact_source: str
    os: str  # purl vendor namespace: debian | ubuntu
    codename: str  # purl distro qualifier: bookworm, jammy, noble
    baked_at: datetime.datetime


def purl(package: Package, vendor: str, codename: str) -> PackageURL:
    """The package's purl (purl-spec deb type: lowercased vendor and name, ``arch`` and ``distro`` qualifiers)."""
    return PackageURL(
        type="deb",
        namespace=vendor.lower(),
        name=package.name.lower(),
        version=package.version,
        qualifiers={"arch": package.architecture, "distro": codename},
    )


def serial_number(identity: Identity, packages: Iterable[Package]) -> uuid.UUID:
    """UUIDv5 of the image name, its input fingerprint and its package list."""
    listing = "\n".join(f"{p.name} {p.version} {p.architecture}" for p in sorted(packages, key=_key))
    digest = hashlib.sha256(listing.encode()).hexdigest()
    return uuid.uuid5(SERIAL_NAMESPACE, f"{identity.image} {identity.input_fingerprint} {digest}")


def build(facts: ImageFacts, packages: Iterable[Package]) -> Bom:
    """The CycloneDX BOM of one image."""
    listed = sorted(packages, key=_key)
    ident = facts.identity
    properties = {
        "image": ident.image,
        "variant": ident.variant,
        "input-fingerprint": ident.input_fingerprint,
        "family": facts.family,
        "environment": facts.environment,
        "artifact-source": facts.artifact_source,
        "stand-in": str(facts.artifact_source == "stand-in").lower(),
        "distro": f"{facts.os} {facts.codename}",
        "package-source": "dpkg-query on the booted test VM, after the image tests",
    }
    image = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=ident.image,
        bom_ref=f"image:{ident.image}",
        description=f"osquery-bakery image {ident.image} ({ident.variant}, {facts.artifact_source})",
        properties=[Property(name=PROPERTY_PREFIX + k, value=v) for k, v in properties.items()],
    )
    components = []
    for package in listed:
        ref = purl(package, facts.os, facts.codename)
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package.name,
                version=package.version,
                purl=ref,
                bom_ref=ref.to_string(),
            )
        )
    tool = Component(type=ComponentType.APPLICATION, name="osquery-bakery", version=__version__)
    bom = Bom(
        serial_number=serial_number(ident, listed),
        metadata=BomMetaData(
            timestamp=facts.baked_at.astimezone(datetime.UTC),
            component=image,
            tools=ToolRepository(components=[tool]),
        ),
        components=components,
    )
    bom.register_dependency(image, components)
    return bom


def to_json(bom: Bom) -> str:
    """The BOM as CycloneDX 1.6 JSON text."""
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def validation_error(text: str) -> str | None:
    """None when ``text`` is a CycloneDX 1.6 JSON document valid against the bundled schema, else the first
    error in one line (where in the document, and what)."""
    try:
        json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    error = JsonStrictValidator(SCHEMA_VERSION).validate_str(text)
    if error is None:
        return None
    detail = error.data  # a jsonschema ValidationError
    return f"{getattr(detail, 'json_path', '$')}: {getattr(detail, 'message', str(detail))}".replace("\n", " ")


def write(facts: ImageFacts, packages: Iterable[Package], path: Path) -> Path:
    """Build, validate and write the SBOM to ``path`` in one rename (nothing half-written); return ``path``."""
    text = to_json(build(facts, packages))
    error = validation_error(text)
    if error is not None:  # our own document: a bug, not bad input
        raise BakeryError(f"the SBOM of {facts.identity.image} fails the CycloneDX 1.6 schema: {error}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def packages(text: str) -> list[Package]:
    """The dpkg packages of a (valid) SBOM's components: name, version and the purl's ``arch``, sorted.
    Raises ValueError naming a component that has no deb purl."""
    document: dict[str, Any] = json.loads(text)
    found = []
    for index, component in enumerate(document.get("components", [])):
        try:
            ref = PackageURL.from_string(component["purl"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"components[{index}] has no valid purl: {exc}") from None
        qualifiers = ref.qualifiers if isinstance(ref.qualifiers, dict) else {}
        if ref.type != "deb" or "arch" not in qualifiers:
            raise ValueError(f"components[{index}] purl {component['purl']} is not a deb purl with an arch")
        found.append(Package(component["name"], component.get("version", ""), qualifiers["arch"]))
    return sorted(found, key=_key)


def _key(package: Package) -> tuple[str, str, str]:
    return (package.name, package.architecture, package.version)
