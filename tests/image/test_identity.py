"""The image identity (bakery/identity.py): the files the bake wrote, and every record osquery logs carries it.

The bake passes the identity it gave Packer as ``--identity``. osquery's filesystem config plugin reads
``<config_path>.d/*.conf`` as config sources of their own (osquery 5.23.1
plugins/config/filesystem_config.cpp:54-64) and logs the decorations of every source in each result and
snapshot line (osquery/core/query.cpp:251-263, :304, :312). The stand-in osqueryd runs no queries, so the
record check needs the real osquery (upstream or mirror images).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import Any

IDENTITY_KEYS = ("image", "variant", "input_fingerprint")
_LITERAL_COLUMN = r"'([^']*)' AS ([a-z_][a-z0-9_]*)"
_LITERAL_SELECT = re.compile(rf"SELECT {_LITERAL_COLUMN}(?:, {_LITERAL_COLUMN})*;")
RECORD_WAIT_SECONDS = 300


def _root_file(host: Any, path: str, mode: str) -> str:
    f = host.file(path)
    assert f.is_file, f"{path} is missing: provision/80-identity.sh did not run before the seal"
    assert (f.user, f.group) == ("root", "root"), f"{path} is owned by {f.user}:{f.group}"
    assert f"{f.mode:04o}" == mode, f"{path} has mode {f.mode:04o}, not {mode}"
    return str(f.content_string)


def test_identity_file(host: Any, identity: dict[str, Any]) -> None:
    path = identity["files"]["identity"]
    data = json.loads(_root_file(host, path, identity["modes"][path]))
    assert data == {key: identity[key] for key in IDENTITY_KEYS}, f"{path} names another image"


def decorator_values(text: str) -> dict[str, str]:
    """{column: value} of an osquery config source whose only content is ``load`` decorators selecting
    literals (what bakery/identity.py writes); an assertion error for anything else."""
    doc = json.loads(text)
    assert set(doc) == {"decorators"} and set(doc["decorators"]) == {"load"}, f"unexpected keys: {doc}"
    values: dict[str, str] = {}
    for query in doc["decorators"]["load"]:
        assert _LITERAL_SELECT.fullmatch(query), f"not a SELECT of literals: {query!r}"
        for value, column in re.findall(_LITERAL_COLUMN, query):
            assert column not in values, f"decoration {column} set twice"
            values[column] = value
    return values


def test_osquery_decorates_with_identity(host: Any, identity: dict[str, Any], expect: dict[str, Any]) -> None:
    path = identity["files"]["osquery_decorators"]
    assert posixpath.dirname(path) == expect["osquery"]["conf"] + ".d", "osquery reads only <config_path>.d/*.conf"
    assert path.endswith(".conf")
    values = decorator_values(_root_file(host, path, identity["modes"][path]))
    assert values == identity["decorations"]


def test_decorators_not_disabled(host: Any, identity: dict[str, Any], expect: dict[str, Any]) -> None:
    """``--disable_decorators`` would drop every decoration, the identity's too (decorators.cpp:279, :318)."""
    text = host.file(expect["osquery"]["flagfile"]).content_string
    for line in text.splitlines():
        name, _, value = line.strip().partition("=")
        assert not (name == "--disable_decorators" and value.lower() not in ("false", "0")), line


def _lines(host: Any, path: str) -> list[dict[str, Any]]:
    out = host.run("cat %s", path).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _decorations(record: dict[str, Any], top_level: bool) -> dict[str, Any]:
    found = record if top_level else record.get("decorations", {})
    return dict(found) if isinstance(found, dict) else {}


def test_logged_records_carry_identity(
    host: Any, identity: dict[str, Any], expect: dict[str, Any], needs_real_osquery: None, needs_booted: None
) -> None:
    """Every result (and snapshot, if any ran yet) line osqueryd logged carries the identity."""
    logs = expect["osquery"]["logs"]
    top_level = "--decorations_top_level=true" in expect["osquery"]["flags"]
    deadline = time.monotonic() + RECORD_WAIT_SECONDS
    while not (results := _lines(host, logs["results"])):
        assert time.monotonic() < deadline, f"osqueryd logged no result in {RECORD_WAIT_SECONDS} s"
        time.sleep(5)
    records = results + (_lines(host, logs["snapshots"]) if host.file(logs["snapshots"]).exists else [])
    want = identity["decorations"]
    wrong = [r.get("name") for r in records if {k: _decorations(r, top_level).get(k) for k in want} != want]
    assert not wrong, f"{len(wrong)} of {len(records)} records lack the image identity: {wrong[:5]}"
