"""The real ``gcloud`` authenticates with bakery's credential file only through the override bakery adds.

gcloud ignores ``GOOGLE_APPLICATION_CREDENTIALS``; the IAP ProxyCommand passes the file as
``CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE`` (bakery/gcloud.py). This runs the installed google-cloud-cli
inside a fresh network namespace (``unshare -n``: only a loopback interface exists, so nothing can leave
the machine) with a throwaway service-account key and ``auth/token_host`` pointed at a token endpoint on
127.0.0.1 in that namespace, and reads which identity signed the token request.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bakery import gcloud
from bakery.gce import instances

# gcloud is the one optional host tool (scripts/host-tools.txt): unshare, ip and openssl are installed by
# scripts/bootstrap.sh, so a missing one fails the run instead of skipping these tests.
pytestmark = pytest.mark.skipif(
    shutil.which("gcloud") is None,
    reason="gcloud is not installed: google-cloud-cli comes from Google's apt repository, which "
    "scripts/bootstrap.sh does not set up (install it as in .gitlab-ci.yml's .gce-tools to run these tests)",
)

EMAIL = "bakery-ci@p-test.iam.gserviceaccount.com"

# Runs inside the namespace: loopback up, a token endpoint, then gcloud with the given environment.
DRIVER = r"""
import http.server, json, os, subprocess, sys, threading, base64, urllib.parse
subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
seen = []
class Token(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        jwt = form["assertion"][0].split(".")[1]
        seen.append(json.loads(base64.urlsafe_b64decode(jwt + "=" * (-len(jwt) % 4)))["iss"])
        body = json.dumps({"access_token": "tok-local", "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Token)
threading.Thread(target=server.serve_forever, daemon=True).start()
argv, env = json.loads(sys.argv[1])
env["CLOUDSDK_AUTH_TOKEN_HOST"] = f"http://127.0.0.1:{server.server_port}/token"
proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
server.shutdown()
print(json.dumps({"rc": proc.returncode, "out": proc.stdout.strip(), "err": proc.stderr[-500:], "seen": seen}))
"""


def _gcloud_in_namespace(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", DRIVER, json.dumps([argv, env])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, text=True, timeout=60, check=True)
    key = tmp_path / "sa.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p-test",
                "private_key_id": "k1",
                "private_key": pem.stdout,
                "client_email": EMAIL,
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return key


def test_gcloud_uses_bakerys_key_only_through_the_override(key_file: Path, tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),  # no login of this machine's user
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        gcloud.ADC_FILE: str(key_file),
    }
    token = ["gcloud", "auth", "print-access-token"]

    ignored = _gcloud_in_namespace(token, base)  # what the ProxyCommand did before
    assert ignored["rc"] != 0 and ignored["seen"] == [], ignored

    # The ProxyCommand's own prefix (``env CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE=…``), then gcloud.
    prefix = instances.iap_proxy_command("vm-1", "us-east1-c", "p-test", base)[:2]
    assert prefix == ["env", f"{gcloud.OVERRIDE}={key_file}"]
    used = _gcloud_in_namespace([*prefix, *token], base)
    assert used["rc"] == 0 and used["out"] == "tok-local", used
    assert used["seen"] and set(used["seen"]) == {EMAIL}  # type: ignore[arg-type]
