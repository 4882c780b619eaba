"""How ``gcloud`` (IAP tunnels: the test stage's ssh ProxyCommand, Packer's tunnel) authenticates as bakery.

bakery and Packer use Application Default Credentials; a pipeline usually provides them as
``GOOGLE_APPLICATION_CREDENTIALS=key.json``. gcloud ignores that variable: it uses its own login, or the
VM's service account on GCE. Its hidden property ``auth/credential_file_override`` (environment variable
``CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE``; google-cloud-cli 528.0.0
``lib/googlecloudsdk/core/properties.py`` line 1684, read in ``core/credentials/store.py`` line 767) makes
it use a credential file instead. packer-plugin-googlecompute (PR #19, in v1.2.7's
``builder/googlecompute/step_start_tunnel.go``) sets it the same way for its own tunnel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ADC_FILE = "GOOGLE_APPLICATION_CREDENTIALS"
OVERRIDE = "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"


def credentials_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the override that makes gcloud use bakery's credential file (an explicit
    override is kept; without a credential file gcloud uses the VM's account or its own login). Both paths
    are made absolute: Packer and the ProxyCommand do not run in bakery's working directory."""
    env = dict(environ)
    for name in (ADC_FILE, OVERRIDE):
        if env.get(name):
            env[name] = os.path.abspath(env[name])
    if env.get(ADC_FILE) and not env.get(OVERRIDE):
        env[OVERRIDE] = env[ADC_FILE]
    return env


def override_for(environ: Mapping[str, str]) -> dict[str, str]:
    """Only the variables :func:`credentials_env` adds (empty when nothing is to be added)."""
    full = credentials_env(environ)
    return {key: value for key, value in full.items() if environ.get(key) != value}
