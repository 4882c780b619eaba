"""Helpers of the image suite that look at the target over testinfra."""

from __future__ import annotations

import re
from typing import Any

_SAFE_GLOB = re.compile(r"^/[][A-Za-z0-9._/*?:@+=-]+$")
_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-)")


def existing(host: Any, glob: str) -> list[str]:
    """Every existing path (dangling symlinks included) that a seal glob names on the host."""
    assert _SAFE_GLOB.match(glob), f"unexpected characters in seal glob {glob!r}"
    out = host.check_output(f'for p in {glob}; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done')
    return [line for line in out.splitlines() if line]


def created_times(host: Any, path: str) -> dict[str, int]:
    """{entry: birth time (mtime where the filesystem records no birth)} for path and everything below."""
    out = host.check_output("find %s -xdev -exec stat -c '%%W %%Y %%n' {} +", path)
    times = {}
    for line in out.splitlines():
        birth, mtime, name = line.split(" ", 2)
        times[name] = int(birth) if birth.isdigit() and int(birth) > 0 else int(mtime)
    return times


def authorized_keys(text: str) -> list[str]:
    """'type base64' of every key in an authorized_keys text (options before the type are skipped)."""
    keys = []
    for line in text.splitlines():
        fields = line.split()
        for index, field in enumerate(fields[:-1]):
            if _KEY_TYPE.match(field):
                keys.append(f"{field} {fields[index + 1]}")
                break
    return keys
