"""Before anything starts, a GCE bake checks that its tools can do the job: IAP needs Packer >= 1.7 (Packer
1.6.6's googlecompute cannot open an IAP tunnel without account_file, hashicorp/packer#10813) and
``gcloud``. Refused bakes exit 3 with one line, make no API call and render nothing. The real CLI and the
real ``packer`` binary (Debian's 1.6.6) are used where they can be."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bakery import gcloud, nightly, packer_plugins, pipeline, runreport
from bakery.errors import ToolMissingError
from bakery.gce import instances
from bakery.gce.client import ComputeClients
from bakery.gce.target import GceTarget
from bakery.packer import detect_version
from tests.fakes.compute import FakeCompute
from tests.integration.gce.test_gce_pipeline import gce_spec

ROOT = Path(__file__).resolve().parents[3]


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (links to the real programs, or to ``true`` for gcloud)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        real = (
            "/bin/true"
            if tool == "gcloud"
            else subprocess.run(
                ["sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        (bin_dir / tool).symlink_to(real)
    return str(bin_dir)


def test_iap_on_packer_166_is_refused_before_any_api_call(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    spec = gce_spec(tmp_path, use_iap=True)
    target = GceTarget(spec, clients=clients)
    report = pipeline.BakeReport(spec, git_sha="abc1234", packer_version=(1, 6, 6))
    with pytest.raises(ToolMissingError) as raised:
        pipeline.bake(spec, target, lambda _line: None, report=report)
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 3
    for part in ("use_iap", "hashicorp/packer#10813", "Packer >= 1.7.0 (from 1.14.0 on", "use_iap: false", "1.2.7"):
        assert part in message
    assert fake.calls == []
    assert not spec.build_dir.exists()


def test_iap_on_packer_17_needs_gcloud(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = GceTarget(gce_spec(tmp_path, use_iap=True), clients=clients)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "ssh", "ssh-keygen"))
    with pytest.raises(ToolMissingError, match=r"^gcloud not found on PATH: install it with .*google-cloud-cli"):
        target.check_tools((1, 11, 2))
    monkeypatch.setenv("PATH", _path_with(tmp_path, "gcloud"))
    target.check_tools((1, 11, 2))
    GceTarget(gce_spec(tmp_path, use_iap=False), clients=clients).check_tools((1, 6, 6))  # no IAP: 1.6.6 is fine
    assert fake.calls == []


def test_nightly_variant_with_iap_on_packer_166_fails_before_any_api_call(
    fake: FakeCompute, clients: ComputeClients, tmp_path: Path
) -> None:
    spec = gce_spec(tmp_path, use_iap=True)
    result = runreport.VariantResult(spec)
    report = pipeline.BakeReport(spec, git_sha="abc1234", packer_version=(1, 6, 6))
    target_for = lambda s: GceTarget(s, clients=clients)  # noqa: E731
    nightly.run_variant(
        result, report, target_for, pipeline.packer_build, print, now=datetime.datetime.now(datetime.UTC)
    )
    assert result.action == "failed" and "hashicorp/packer#10813" in result.reason
    assert fake.calls == []


def test_cli_bake_and_dry_run_refuse_iap_on_the_installed_packer(fake: FakeCompute, tmp_path: Path) -> None:
    """The real CLI with Debian's Packer: `invoke bake --env gstg` (IAP is gstg's default) exits 3."""
    if packer_plugins.uses_plugins(detect_version()):
        pytest.skip("the installed Packer is >= 1.7: the gate does not apply")
    build = tmp_path / "build"
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(f"bakery:\n  build_dir: {build}\n")
    env = {**os.environ, "BAKERY_COMPUTE_ENDPOINT": fake.endpoint, "CHECKPOINT_DISABLE": "1"}
    for extra in ([], ["--dry-run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "-f", str(runtime), "bake", "--env", "gstg", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 3, proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and "hashicorp/packer#10813" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert fake.calls == []
    assert not build.exists()


def test_iap_proxy_command_authenticates_gcloud_like_bakery() -> None:
    """gcloud ignores GOOGLE_APPLICATION_CREDENTIALS: the ProxyCommand passes the file as
    CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE; an explicit override or no credential file adds nothing."""
    base = ["gcloud", "compute", "start-iap-tunnel", "vm-1", "22", "--listen-on-stdin"]
    with_file = instances.iap_proxy_command("vm-1", "us-east1-c", "p-1", {gcloud.ADC_FILE: "/ci/key.json"})
    assert with_file[:2] == ["env", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE=/ci/key.json"]
    assert with_file[2:8] == base
    assert instances.iap_proxy_command("vm-1", "us-east1-c", "p-1", {})[:6] == base
    explicit = {gcloud.ADC_FILE: "/ci/key.json", gcloud.OVERRIDE: "/other.json"}
    assert instances.iap_proxy_command("vm-1", "us-east1-c", "p-1", explicit)[0] == "gcloud"


def test_credential_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packer runs in the template's directory: a relative key file would name another file there."""
    monkeypatch.chdir(tmp_path)
    env = gcloud.credentials_env({gcloud.ADC_FILE: "key.json", "HOME": "/root"})
    assert env == {gcloud.ADC_FILE: f"{tmp_path}/key.json", gcloud.OVERRIDE: f"{tmp_path}/key.json", "HOME": "/root"}
    assert gcloud.credentials_env({"HOME": "/root"}) == {"HOME": "/root"}  # no file: gcloud's own account
