"""The image identity: which image a host runs (name, variant, input fingerprint), in every record it ships.

The values exist only once a bake starts (the published name carries the bake's time and git sha), so
they are NOT rendered into the build directory: the input fingerprint stays what the rendered tree makes
it. :func:`packer_variables` hands them to Packer as runtime variables; ``provision/80-identity.sh`` (run
before the seal) writes the two texts rendered here:

* :data:`IDENTITY_FILE`: the identity as JSON, for people and tools on the host;
* :data:`OSQUERY_DECORATORS_FILE`: an osquery config source holding one ``load`` decorator, so that every
  result and snapshot line osqueryd logs carries the identity in its ``decorations`` object.

Why osquery decorators rather than a Fluentd ``record_transformer`` field (both were possible):

* osquery's filesystem config plugin reads ``<config_path>.d/*.conf`` (sorted) before ``config_path``
  itself, each file a config source of its own (osquery 5.23.1 plugins/config/filesystem_config.cpp:54-64),
  so a file written at bake time adds decorators without touching the rendered (fingerprinted) osquery.conf.
* Decorators from several sources are kept per source and merged when a line is logged (5.23.1
  plugins/config/parsers/decorators.cpp:116-137 ``update`` per source, :317-329 ``getDecorations`` over all
  sources), so the identity sits beside the configured ``hostname``/``host_uuid`` decorations the SIEM
  already parses. ``load`` decorators run once per config load (decorators.cpp:136).
* The scheduler takes the decorations for every scheduled query before it branches into snapshot or
  differential results (5.23.1 osquery/dispatcher/scheduler.cpp:145-147), and both serializations add them
  (osquery/core/query.cpp:251-263 ``decorations`` object, or top-level with ``--decorations_top_level``;
  :304 batch results and snapshots, :312 event-format results): results AND snapshots carry it.
* The identity is then in osquery's own log files on the host, whoever ships them; a Fluentd field would
  exist only in what this Fluentd snippet ships, and the values would have to reach a fingerprinted Fluentd
  config through an environment file or an extra ``@include`` (fluentd.conf includes exactly one file).
* ``--disable_decorators`` turns decorations off (decorators.cpp:20, :279, :318): the image suite fails an
  image whose flagfile sets it.

Neither stand-in agent (bakery/standin.py) runs queries or ships records, so on stand-in images the suite
checks the files; that a logged record carries the identity is checked on images with the real osquery.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bakery.config import GCE_NAME_RE
from bakery.errors import BakeryError
from bakery.imagefiles import OSQUERY_CONF

IDENTITY_FILE = "/etc/bakery/identity.json"
OSQUERY_DECORATORS_FILE = f"{OSQUERY_CONF}.d/bakery-identity.conf"  # config_path + ".d/%.conf"
FILE_MODES = {IDENTITY_FILE: "0644", OSQUERY_DECORATORS_FILE: "0640"}  # osquery.conf itself is 0640
RUN_FILE = "image-identity.json"  # in the run directory: what the image suite expects (its --identity)
# The decoration (column) names: prefixed so that they cannot clash with the configured decorators
# (two decorators emitting one column name is undefined behaviour, decorators.cpp:57-60).
DECORATIONS = {
    "image": "bakery_image",
    "variant": "bakery_variant",
    "input_fingerprint": "bakery_input_fingerprint",
}
# Packer runtime variables (declared in templates/packer/_variables.pkr.hcl.j2) and the environment
# variables provision/80-identity.sh reads them from (templates/packer/_provisioners.pkr.hcl.j2).
PACKER_VARIABLES = {"image_identity": "BAKERY_IDENTITY", "image_identity_osquery": "BAKERY_IDENTITY_OSQUERY"}

_VARIANT = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # config.Slug
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Identity:
    """Which image this is. Values are restricted to characters that need no quoting in SQL or JSON."""

    image: str
    variant: str
    input_fingerprint: str

    def __post_init__(self) -> None:
        for name, value, pattern in (
            ("image", self.image, re.compile(GCE_NAME_RE)),
            ("variant", self.variant, _VARIANT),
            ("input_fingerprint", self.input_fingerprint, _FINGERPRINT),
        ):
            if not pattern.fullmatch(value):
                raise BakeryError(f"image identity: {name} {value!r} does not match {pattern.pattern}")

    def identity_json(self) -> str:
        """The text of :data:`IDENTITY_FILE`: one line of JSON with sorted keys (the script adds the newline)."""
        return _one_line(asdict(self))

    def decorations(self) -> dict[str, str]:
        """What osquery adds to every logged line's ``decorations``: {column: value}."""
        values = asdict(self)
        return {column: values[field] for field, column in DECORATIONS.items()}

    def decorator_query(self) -> str:
        """One ``load`` decorator selecting every value (one row, one column each)."""
        columns = ", ".join(f"'{value}' AS {column}" for column, value in self.decorations().items())
        return f"SELECT {columns};"

    def osquery_source(self) -> str:
        """The text of :data:`OSQUERY_DECORATORS_FILE`: an osquery config with one ``load`` decorator."""
        return _one_line({"decorators": {"load": [self.decorator_query()]}})

    def packer_variables(self) -> dict[str, str]:
        """Runtime Packer variables carrying both texts to provision/80-identity.sh."""
        return {"image_identity": self.identity_json(), "image_identity_osquery": self.osquery_source()}

    def expectations(self) -> dict[str, Any]:
        """What the image suite checks (``--identity``): the values, the files and the decorations."""
        return {
            **asdict(self),
            "files": {"identity": IDENTITY_FILE, "osquery_decorators": OSQUERY_DECORATORS_FILE},
            "modes": dict(FILE_MODES),
            "decorations": self.decorations(),
            "decorator_query": self.decorator_query(),
        }


def _one_line(document: dict[str, Any]) -> str:
    """One line of JSON: it travels as an environment variable through Packer's shell provisioner, which
    renders ``environment_vars`` as a Go template (hashicorp/packer v1.6.6 provisioner/shell/provisioner.go:77-86:
    only execute_command is excluded), so a value with ``{{`` would be changed."""
    text = json.dumps(document, sort_keys=True)
    assert "{{" not in text and "\n" not in text  # values are restricted in __post_init__
    return text


def provision_env(identity: Identity) -> dict[str, str]:
    """The environment provision/80-identity.sh gets from Packer (the provisioning harness uses it too)."""
    variables = identity.packer_variables()
    return {env: variables[var] for var, env in PACKER_VARIABLES.items()}


def write_expectations(identity: Identity, run_dir: Path) -> Path:
    """Write :data:`RUN_FILE` into ``run_dir`` (before the test stage) and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    path.write_text(json.dumps(identity.expectations(), indent=2, sort_keys=True) + "\n")
    return path
