"""The image identity: exact texts, refused values, and the Packer template and provision script that carry it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bakery import cli, identity, imagefiles, render
from bakery.errors import BakeryError
from bakery.identity import Identity

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "provision" / "80-identity.sh"
FINGERPRINT = "0123456789abcdef" * 4
IDENT = Identity("gl-osquery-debian-12-20261127-150405-44d1c4d", "debian-12", FINGERPRINT)


def test_texts_are_exact() -> None:
    assert IDENT.identity_json() == (
        '{"image": "gl-osquery-debian-12-20261127-150405-44d1c4d", '
        f'"input_fingerprint": "{FINGERPRINT}", "variant": "debian-12"}}'
    )
    query = (
        "SELECT 'gl-osquery-debian-12-20261127-150405-44d1c4d' AS bakery_image, 'debian-12' AS bakery_variant, "
        f"'{FINGERPRINT}' AS bakery_input_fingerprint;"
    )
    assert IDENT.decorator_query() == query
    assert json.loads(IDENT.osquery_source()) == {"decorators": {"load": [query]}}
    assert IDENT.decorations() == {
        "bakery_image": IDENT.image,
        "bakery_variant": "debian-12",
        "bakery_input_fingerprint": FINGERPRINT,
    }
    assert identity.provision_env(IDENT) == {
        "BAKERY_IDENTITY": IDENT.identity_json(),
        "BAKERY_IDENTITY_OSQUERY": IDENT.osquery_source(),
    }


def test_decorator_file_is_where_osquery_merges_config_sources() -> None:
    """osquery 5.23.1 reads FLAGS_config_path + ".d/%.conf" (plugins/config/filesystem_config.cpp:55)."""
    assert identity.OSQUERY_DECORATORS_FILE == imagefiles.OSQUERY_CONF + ".d/bakery-identity.conf"


def test_decorations_do_not_clash_with_the_configured_decorators() -> None:
    """Two decorators with one column name are undefined behaviour in osquery (decorators.cpp:57-60)."""
    spec = cli.project_settings().specs("local")[0]
    configured = " ".join(
        q for kind in ("load", "always") for q in getattr(spec.config.osquery.decorators, kind)
    ).lower()
    assert configured, "the project configures decorators: this test would check nothing"
    for column in identity.DECORATIONS.values():
        assert not re.search(rf"\b{column}\b", configured)


@pytest.mark.parametrize(
    ("image", "variant", "fingerprint", "bad"),
    [
        ("Gl-Osquery", "debian-12", FINGERPRINT, "image"),
        ("x' AS a; --", "debian-12", FINGERPRINT, "image"),
        ("gl-osquery", "debian 12", FINGERPRINT, "variant"),
        ("gl-osquery", "debian-12", FINGERPRINT[:63], "input_fingerprint"),
        ("gl-osquery", "debian-12", FINGERPRINT.upper(), "input_fingerprint"),
    ],
)
def test_values_that_would_need_quoting_are_refused(image: str, variant: str, fingerprint: str, bad: str) -> None:
    with pytest.raises(BakeryError, match=rf"^image identity: {bad} ['\"]") as raised:
        Identity(image, variant, fingerprint)
    assert "\n" not in str(raised.value)


def test_suite_expectations_file(tmp_path: Path) -> None:
    path = identity.write_expectations(IDENT, tmp_path / "run")
    assert path == tmp_path / "run" / identity.RUN_FILE
    data = json.loads(path.read_text())
    assert data["files"] == {
        "identity": "/etc/bakery/identity.json",
        "osquery_decorators": "/etc/osquery/osquery.conf.d/bakery-identity.conf",
    }
    assert data["modes"] == {data["files"]["identity"]: "0644", data["files"]["osquery_decorators"]: "0640"}
    assert (data["image"], data["variant"], data["input_fingerprint"]) == (IDENT.image, "debian-12", FINGERPRINT)
    assert data["decorations"] == IDENT.decorations()


def test_provision_script_writes_the_identity_files_with_their_modes() -> None:
    writes = re.findall(r'^write (\S+) (0\d{3}) "\$(\w+)"$', SCRIPT.read_text(), re.M)
    by_env = {env: var for var, env in identity.PACKER_VARIABLES.items()}
    assert {(path, mode) for path, mode, _env in writes} == set(identity.FILE_MODES.items())
    assert {env for *_, env in writes} == set(by_env)
    assert writes[0][0] == identity.IDENTITY_FILE and writes[1][0] == identity.OSQUERY_DECORATORS_FILE


def test_provision_script_runs_before_the_seal() -> None:
    names = [p.name for p in render.provision_scripts()]
    assert names.index(SCRIPT.name) == len(names) - 2 and names[-1].startswith("90-seal")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "BAKERY_IDENTITY: parameter null or not set"),
        ({"BAKERY_IDENTITY": "{}"}, "BAKERY_IDENTITY_OSQUERY: parameter null or not set"),
        ({"BAKERY_IDENTITY": '{"a":\n1}', "BAKERY_IDENTITY_OSQUERY": "{}"}, "is not one line of JSON"),
        ({"BAKERY_IDENTITY": "not json", "BAKERY_IDENTITY_OSQUERY": "{}"}, "is not one line of JSON"),
    ],
)
def test_provision_script_refuses_to_bake_without_the_identity(env: dict[str, str], message: str) -> None:
    """Each case stops before anything is written (the checks come first)."""
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("env_name", ["local", "gstg"])
def test_packer_passes_the_runtime_variables_to_the_scripts(env_name: str) -> None:
    spec = cli.project_settings().specs(env_name)[0]
    template, var_file = render.packer_template(spec, (1, 6, 6))
    for variable, env in identity.PACKER_VARIABLES.items():
        assert f'variable "{variable}" {{\n  type    = string\n  default = ""\n}}' in template
        assert f'"{env}=${{var.{variable}}}",' in template
        assert variable not in var_file, "the identity is a runtime variable, never in the rendered var file"
    assert "environment_vars = concat(var.provision_env, [" in template
