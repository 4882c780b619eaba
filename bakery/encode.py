"""One encoder per target language: every value spliced into HCL, JSON or shell text goes through these."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

_HCL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def to_json(value: Any, indent: int | None = 2) -> str:
    """Deterministic JSON (sorted keys, stable separators, no trailing newline)."""
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)


def to_sh(value: Any) -> str:
    """Quote one value as a single shell word."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(str(value))


def _hcl_string(text: str) -> str:
    # JSON string escaping is a subset of HCL's; HCL additionally treats ${ and %{ as template sequences.
    return json.dumps(text, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def to_hcl(value: Any, indent: int = 0) -> str:
    """Encode a Python value as an HCL2 literal expression (strings, numbers, bools, lists, maps)."""
    pad = "  " * indent
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _hcl_string(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        keys = sorted(value)
        width = max(len(_hcl_key(k)) for k in keys)
        lines = [f"{pad}  {_hcl_key(k).ljust(width)} = {to_hcl(value[k], indent + 1)}" for k in keys]
        return "{\n" + "\n".join(lines) + f"\n{pad}}}"
    if isinstance(value, Sequence):
        if not value:
            return "[]"
        items = [to_hcl(v, indent + 1) for v in value]
        if all("\n" not in i for i in items) and sum(len(i) + 2 for i in items) < 80:
            return "[" + ", ".join(items) + "]"
        return "[\n" + ",\n".join(f"{pad}  {i}" for i in items) + f",\n{pad}]"
    raise TypeError(f"cannot encode {type(value).__name__} as HCL")


def _hcl_key(key: Any) -> str:
    text = str(key)
    return text if _HCL_IDENT.match(text) else _hcl_string(text)


def label_value(text: str) -> str:
    """Squeeze free text into a GCE label value (lowercase, [a-z0-9_-], at most 63 characters)."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]
