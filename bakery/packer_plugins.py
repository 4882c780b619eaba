"""The Packer plugins the templates use on Packer >= 1.7, pinned exactly, and the facts pinned with them.

Packer 1.6.6 (Debian 12) has the qemu and googlecompute builders built in and rejects a ``packer { }``
block; from 1.7 on the builders are plugins that a template declares in ``required_plugins`` and
``packer init`` installs. Each plugin is pinned to one version, and the arguments its source block
accepts at that version are data (``bakery/data/packer/NAME-VERSION-arguments.json``, extracted from the
plugin's ``builder/*/config.hcl2spec.go`` at the tag named inside the file); a test checks every rendered
source block against it.

IAP with Packer 1.6.6: with ``use_iap`` and no ``account_file``, 1.6.6's googlecompute first runs
``gcloud auth activate-service-account --key-file=''`` and treats its failure as a non-retryable tunnel
error (hashicorp/packer v1.6.6, ``builder/googlecompute/step_start_tunnel.go``; hashicorp/packer#10813,
#11245). packer-plugin-googlecompute fixed it (PR #19: no activation; gcloud gets
``CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE`` from ``GOOGLE_APPLICATION_CREDENTIALS``), so IAP bakes need
Packer >= 1.7 with the pinned plugin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bakery import vendordata
from bakery.errors import ToolMissingError

DATA_DIR = vendordata.DATA_DIR / "packer"
Version = tuple[int, int, int]

#: First Packer release with ``required_plugins`` and ``packer init`` (hashicorp/packer v1.7.0, where
#: ``command/init.go`` first appears).
PLUGINS_SINCE: Version = (1, 7, 0)
#: From 1.14 ``packer init`` installs official plugins from HashiCorp's release site; older Packers need newer
#: official plugins installed by hand (packer-plugin-googlecompute v1.2.7 README.md, "Update to Packer
#: Plugin Installation"). The recommended minimum for GCE bakes.
RECOMMENDED: Version = (1, 14, 0)


@dataclass(frozen=True)
class Plugin:
    """One Packer plugin: its ``required_plugins`` name and source, and the exact version pinned."""

    name: str
    source: str
    version: str

    @property
    def constraint(self) -> str:
        """An exact pin in hashicorp/go-version's syntax (``constraint.go``: operator ``=``)."""
        return f"= {self.version}"

    @property
    def arguments_file(self) -> Path:
        return DATA_DIR / f"{self.name}-{self.version}-arguments.json"


#: Per target. googlecompute v1.2.7 = hashicorp/packer-plugin-googlecompute 1fbf6a099c72b18b0a9360362514b42d88c358d1;
#: qemu v1.1.4 = hashicorp/packer-plugin-qemu 7db0aae19166404c9ba02771c1d0572d98159203.
PLUGINS: dict[str, Plugin] = {
    "local": Plugin("qemu", "github.com/hashicorp/qemu", "1.1.4"),
    "gce": Plugin("googlecompute", "github.com/hashicorp/googlecompute", "1.2.7"),
}


def uses_plugins(packer_version: Version) -> bool:
    """Whether this Packer needs ``required_plugins`` and ``packer init`` (>= 1.7)."""
    return packer_version >= PLUGINS_SINCE


def required_plugins(target: str, packer_version: Version) -> dict[str, dict[str, str]]:
    """The ``required_plugins`` entries of a template for ``target`` (empty before Packer 1.7)."""
    if not uses_plugins(packer_version):
        return {}
    plugin = PLUGINS[target]
    return {plugin.name: {"version": plugin.constraint, "source": plugin.source}}


@cache
def arguments(plugin: Plugin) -> dict[str, str]:
    """Argument name -> cty type (``String``, ``Number``, ``Bool``, ``List(cty.String)``, ``block:…``)."""
    data: dict[str, str] = json.loads(plugin.arguments_file.read_text())["arguments"]
    return data


def check_iap(packer_version: Version, *, use_iap: bool, env_name: str) -> None:
    """Refuse a bake through IAP on a Packer whose googlecompute builder cannot open the tunnel."""
    if use_iap and not uses_plugins(packer_version):
        found = _dotted(packer_version)
        raise ToolMissingError(
            f"environment {env_name!r} uses IAP (bakery.environments.{env_name}.gce.use_iap) but Packer {found}'s "
            "googlecompute builder cannot open an IAP tunnel without account_file (hashicorp/packer#10813, "
            f"fixed only in packer-plugin-googlecompute): install Packer >= {_dotted(PLUGINS_SINCE)} (from "
            f"{_dotted(RECOMMENDED)} on, bakery's `packer init` fetches the pinned googlecompute "
            f"{PLUGINS['gce'].version} from HashiCorp's release site), or set use_iap: false and bake from inside "
            "the VPC"
        )


def _dotted(version: Version) -> str:
    return ".".join(str(part) for part in version)
