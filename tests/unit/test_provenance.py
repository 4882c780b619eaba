"""Manifests and ``invoke diff``: what a diff reports, what a broken manifest gives, the dpkg-query parser
and the webhook URL shown in logs. The CLI tests run the real ``invoke``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery import notify, provenance
from bakery.errors import ProvenanceError
from bakery.imagetest import Package, parse_dpkg_query

ROOT = Path(__file__).resolve().parents[2]
OSQUERY_CONF = '{\n  "options": {},\n  "packs": {"compliance": "/etc/osquery/packs/compliance.conf"}\n}\n'


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "manifest_version": 1,
        "image": "osquery-debian-12-a",
        "source_image": "debian-cloud/debian-12-v1",
        "bakery_version": "0.1.0",
        "git_sha": "aaaaaaa",
        "packer_version": "1.6.6",
        "artifact_source": "upstream",
        "inputs": {
            "files/etc/osquery/osquery.conf": "1" * 64,
            "files/etc/osquery/packs/compliance.conf": "2" * 64,
            "provision/30-packages.sh": "3" * 64,
        },
        "config": {"files/etc/osquery/osquery.conf": OSQUERY_CONF},
        "packages": [["libssl3", "3.0.11-1", "amd64"], ["osquery", "5.22.1-1.linux", "amd64"], ["vim", "9.0", "amd64"]],
    }
    return base | changes


def test_identical_manifests_have_no_differences() -> None:
    assert provenance.diff(manifest(), manifest()) == [
        "diff osquery-debian-12-a -> osquery-debian-12-a",
        "packages: unchanged (3)",
    ]


def test_diff_names_every_kind_of_change() -> None:
    old = manifest()
    new_conf = OSQUERY_CONF.replace('"options": {}', '"options": {"schedule_splay_percent": 10}')
    new = manifest(
        image="osquery-debian-12-b",
        source_image="debian-cloud/debian-12-v2",
        git_sha="bbbbbbb",
        inputs={
            "files/etc/osquery/osquery.conf": "9" * 64,
            "files/etc/osquery/packs/compliance.conf": "2" * 64,
            "files/etc/osquery/packs/ubuntu-noble.conf": "4" * 64,
            "provision/30-packages.sh": "5" * 64,
        },
        config={"files/etc/osquery/osquery.conf": new_conf},
        packages=[["libssl3", "3.0.13-1", "amd64"], ["osquery", "5.23.1-1.linux", "amd64"], ["curl", "7.88", "amd64"]],
    )
    assert provenance.diff(old, new) == [
        "diff osquery-debian-12-a -> osquery-debian-12-b",
        "  source_image: debian-cloud/debian-12-v1 -> debian-cloud/debian-12-v2",
        "  git_sha: aaaaaaa -> bbbbbbb",
        "packages: 3 -> 3",
        "  + curl:amd64 7.88",
        "  ~ libssl3:amd64 3.0.11-1 -> 3.0.13-1",
        "  ~ osquery:amd64 5.22.1-1.linux -> 5.23.1-1.linux",
        "  - vim:amd64 9.0",
        "packs:",
        "  + ubuntu-noble.conf",
        "config files:",
        "  ~ /etc/osquery/osquery.conf",
        "      --- old",
        "      +++ new",
        "      @@ -1,3 +1,3 @@",
        "       {",
        '      -  "options": {},',
        '      +  "options": {"schedule_splay_percent": 10},',
        '         "packs": {"compliance": "/etc/osquery/packs/compliance.conf"}',
        "  + /etc/osquery/packs/ubuntu-noble.conf",
        "other inputs:",
        "  ~ provision/30-packages.sh",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not readable JSON"),
        ('{"image": "x"}', "is not an osquery-bakery manifest (manifest_version 1 expected)"),
        ("[1, 2]", "is not an osquery-bakery manifest"),
    ],
)
def test_a_broken_manifest_is_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(ProvenanceError, match=re.escape(expected)) as raised:
        provenance.load(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_invoke_diff_of_two_manifest_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(manifest()))
    b.write_text(json.dumps(manifest(image="osquery-debian-12-b", packages=[["osquery", "5.23.1-1.linux", "amd64"]])))
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "diff", str(a), str(b)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:6] == [
        "diff osquery-debian-12-a -> osquery-debian-12-b",
        "packages: 3 -> 1",
        f"  list of old: manifest {a} (it records no SBOM)",
        f"  list of new: manifest {b} (it records no SBOM)",
        "  - libssl3:amd64 3.0.11-1",
        "  ~ osquery:amd64 5.22.1-1.linux -> 5.23.1-1.linux",
    ]


def test_invoke_diff_of_a_non_manifest_exits_2_with_one_line(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text('{"hello": 1}')
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "diff", str(a), str(a)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {a} is not an osquery-bakery manifest (manifest_version 1 expected)"
    ]


def test_dpkg_query_output_keeps_installed_packages_only() -> None:
    output = (
        "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\n"
        "zlib1g\t1:1.2.13.dfsg-1\tamd64\tinstalled\n"
        "osquery\t5.23.1-1.linux\tamd64\tinstalled\n"
        "rsyslog\t8.2302.0-1\tamd64\tconfig-files\n"
        "libc6\t2.36-9+deb12u4\ti386\tinstalled\n"
    )
    assert parse_dpkg_query(output) == [
        Package("libc6", "2.36-9+deb12u4", "i386"),
        Package("osquery", "5.23.1-1.linux", "amd64"),
        Package("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
    ]


def test_webhook_urls_are_logged_without_their_secret() -> None:
    assert notify.safe_url("https://hooks.slack.com/services/T0/B0/s3cret?x=1") == "https://hooks.slack.com/…"
    assert notify.safe_url("http://127.0.0.1:8080/hook/s3cret") == "http://127.0.0.1:8080/…"
