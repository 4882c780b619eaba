"""The failure webhook: POST the nightly summary as JSON (Slack-style ``text`` plus the report)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from bakery.errors import BakeryError


class NotifyError(BakeryError):
    """The webhook could not be reached or refused the summary (a warning: the run's result stands)."""


def safe_url(url: str) -> str:
    """The URL without path or query (webhook URLs carry their secret there), for logs."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def post(url: str, payload: dict[str, Any], timeout: float) -> None:
    """POST ``payload`` as JSON; raise NotifyError (naming only the host) on any failure or non-2xx."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the config (http/https only)
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "osquery-bakery"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - see above
            status = response.status
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"webhook {safe_url(url)} answered HTTP {exc.code}: the summary was not delivered") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"webhook {safe_url(url)} unreachable ({reason}): the summary was not delivered") from None
    if not 200 <= status < 300:
        raise NotifyError(f"webhook {safe_url(url)} answered HTTP {status}: the summary was not delivered")
