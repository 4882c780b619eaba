"""The whole provisioning sequence twice on a Debian 12 root leaves the same tree; a failed seal says what remains.

Not marked slow: ~6 s once the root filesystem is cached (~30 s the first time, mmdebstrap).
"""

from __future__ import annotations

import json
from pathlib import Path

import harness


def test_provisioning_is_idempotent_and_seal_refuses_leftovers(tmp_path: Path) -> None:
    """The whole sequence twice leaves the same tree; a seal that cannot remove an item exits non-zero."""
    spec = harness.local_spec(tmp_path / "project")
    build = harness.rendered(spec)
    root = harness.fresh_root(tmp_path / "root")
    exclude = ("/tmp/bakery-provision", "/etc/bakery/seal.json")
    snapshots, records = [], []
    for _ in range(2):
        harness.upload(root, build)
        harness.provision(root, spec)
        snapshots.append(harness.tree_snapshot(root, exclude))
        records.append(harness.seal_record(root))
    first, second = snapshots
    assert len(first) > 5000 and "/etc/osquery/osquery.flags" in first
    changed = sorted(p for p in first.keys() | second.keys() if first.get(p) != second.get(p))
    assert not changed, f"second run changed: {changed[:20]}"
    assert records[0]["items"] == records[1]["items"]
    assert records[1]["removed_host_keys"] == []

    history = root.file("/root/.bash_history")
    history.write_text("secret\n")
    harness.run(["chattr", "+i", str(history)])
    try:
        harness.upload(root, build)
        (result,) = harness.provision(root, spec, only=["90-seal.sh"], check=False)
    finally:
        harness.run(["chattr", "-i", str(history)])
    assert result.returncode != 0
    assert "NOT SEALED" in result.stderr and "/root/.bash_history" in result.stderr
    assert json.loads(root.file("/etc/bakery/seal.json").read_text()) == records[1]  # no new seal recorded
