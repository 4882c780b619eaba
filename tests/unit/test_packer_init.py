"""``packer init`` on Packer >= 1.7, through the adapter and validate_rendered.

Only Debian's Packer 1.6.6 can be installed here, so the Packer >= 1.7 side is a TEST DOUBLE: a shell
script named ``packer`` that mimics what hashicorp/packer v1.16.0 does, as read in its source: ``packer
version`` prints ``Packer v1.16.0``; ``packer init`` installs what ``required_plugins`` names into
``PACKER_PLUGIN_PATH`` and does nothing when it is there already (command/init.go L132-135), exit 1 when
it cannot (network); ``validate`` without the plugin fails with "Missing plugins … Did you run packer
init for this project ?" and exit 1 (hcl2template/plugin.go L111-122, command/validate.go L74-78). It
proves bakery's side (argv, directory, order, idempotence, one-line failure), not Packer's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bakery import cli, packer_plugins, render, validate
from bakery.config import Timeouts
from bakery.errors import PackerError
from bakery.packer import detect_version
from tests.support import build_in

TIMEOUTS = Timeouts(packer_validate=30, packer_init=30)

DOUBLE = """#!/bin/sh
# TEST DOUBLE of packer >= 1.7 (see tests/unit/test_packer_init.py); not HashiCorp's Packer.
echo "$PWD $*" >> "$PACKER_DOUBLE_LOG"
plugin="$PACKER_PLUGIN_PATH/github.com/hashicorp/googlecompute/installed"
case "$1" in
  version) echo "Packer v1.16.0" ;;
  init)
    [ -e "$plugin" ] && exit 0
    if [ -n "${PACKER_DOUBLE_OFFLINE:-}" ]; then
      echo "Failed getting the \\"github.com/hashicorp/googlecompute\\" plugin:" >&2
      echo "could not reach releases.hashicorp.com" >&2
      exit 1
    fi
    mkdir -p "$(dirname "$plugin")" && : > "$plugin"
    echo "Installed plugin github.com/hashicorp/googlecompute v1.2.7" ;;
  validate)
    [ -e "$plugin" ] && { echo "The configuration is valid."; exit 0; }
    echo "Error: Missing plugins" >&2
    echo "Did you run packer init for this project ?" >&2
    exit 1 ;;
  fmt) exit 0 ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "packer"
    script.write_text(DOUBLE)
    script.chmod(0o755)
    log = tmp_path / "packer.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PACKER_PLUGIN_PATH", str(tmp_path / "plugins"))
    monkeypatch.setenv("PACKER_DOUBLE_LOG", str(log))
    monkeypatch.delenv("PACKER_DOUBLE_OFFLINE", raising=False)
    return log


def _rendered(tmp_path: Path) -> render.Rendered:
    spec = build_in(cli.project_settings().specs("gstg", "debian-12")[0], tmp_path / "build")
    rendered = render.render(spec, detect_version())
    assert rendered.needs_init and "required_plugins" in rendered.template.read_text()
    return rendered


def test_init_runs_before_validate_once_installed_it_is_kept(double: Path, tmp_path: Path) -> None:
    assert detect_version() == (1, 16, 0)
    rendered = _rendered(tmp_path)
    for _ in range(2):
        validate.validate_rendered(rendered, TIMEOUTS, tmp_path)
    calls = [line.split(" ", 1) for line in double.read_text().splitlines() if not line.endswith(" version")]
    subcommands = [args.split()[0] for _cwd, args in calls]
    assert subcommands == ["init", "validate", "fmt", "init", "validate", "fmt"]
    assert all(cwd == str(rendered.directory) for cwd, _args in calls)
    assert [args for _cwd, args in calls if args.startswith("init")] == ["init image.pkr.hcl"] * 2
    assert (tmp_path / "plugins/github.com/hashicorp/googlecompute/installed").exists()


def test_init_failure_is_one_clear_error_and_validate_never_runs(
    double: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _rendered(tmp_path)
    monkeypatch.setenv("PACKER_DOUBLE_OFFLINE", "1")
    with pytest.raises(PackerError) as raised:
        validate.validate_rendered(rendered, TIMEOUTS, tmp_path)
    first = str(raised.value).splitlines()[0]
    assert first.startswith("packer init (installs the template's pinned plugins") and first.endswith("exited 1")
    assert "could not reach releases.hashicorp.com" in str(raised.value)
    assert "validate" not in double.read_text()


def test_packer_166_renders_no_plugins_and_needs_no_init(tmp_path: Path) -> None:
    spec = build_in(cli.project_settings().specs("gstg", "debian-12")[0], tmp_path / "build")
    rendered = render.render(spec, (1, 6, 6))
    assert not rendered.needs_init and "packer {" not in rendered.template.read_text()
    assert packer_plugins.required_plugins("gce", (1, 6, 6)) == {}
    assert packer_plugins.required_plugins("gce", (1, 7, 0)) == {
        "googlecompute": {"version": "= 1.2.7", "source": "github.com/hashicorp/googlecompute"}
    }
