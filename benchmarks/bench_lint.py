"""Benchmark: lint a generated pack of 1,000 varied, realistic queries; print the median of 5 runs.

Run it from a checkout: ``python benchmarks/bench_lint.py`` (target: < 2 s); it measures that checkout's
``bakery`` (see the sys.path line below), whatever the working directory or the checkout the virtualenv
was installed from.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, not the checkout: put the checkout (the parent
# of this file's folder) first, so the ``bakery`` measured is this checkout's, not the installed one.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bakery.lint import SHIPPED_PACK_FLAGS, lint_osquery  # noqa: E402

RUNS = 5
QUERIES = 1000

TEMPLATES = [
    "SELECT pid, name, path, cmdline FROM processes WHERE name = 'proc{i}';",
    "SELECT p.name, lp.port, lp.address FROM listening_ports lp JOIN processes p USING (pid) WHERE lp.port = {i};",
    "SELECT DISTINCT p.path, s.remote_address FROM process_open_sockets s JOIN processes p ON p.pid = s.pid"
    " WHERE s.remote_port = {i} AND s.family IN (2, 10);",
    "SELECT u.username, k.key_file, k.algorithm FROM users u JOIN authorized_keys k ON k.uid = u.uid"
    " WHERE u.uid >= {i};",
    "SELECT name, version FROM deb_packages WHERE name LIKE 'lib{i}%' AND version_compare(version, '1.{i}') < 0;",
    "SELECT f.path, h.sha256 FROM file f JOIN hash h ON h.path = f.path WHERE f.path LIKE '/etc/app{i}/%%';",
    "SELECT username, shell FROM users WHERE uid IN (SELECT uid FROM user_groups WHERE gid = {i});",
    "SELECT name, current_value FROM system_controls WHERE name = 'net.ipv4.conf.eth{i}.rp_filter';",
    "SELECT datetime, tag, message FROM syslog_events WHERE tag = 'app{i}' AND message LIKE '%error%';",
    "SELECT regex_match(cmdline, '--port[= ]([0-9]+)', 1) AS port, sha256(cmdline) FROM processes WHERE pid > {i};",
    "SELECT device, path, type FROM mounts WHERE path LIKE '/mnt/{i}%';",
    "SELECT name, size, used_by FROM kernel_modules WHERE size > {i};",
    "SELECT id, active_state FROM systemd_units WHERE id = 'unit{i}.service';",
    "SELECT label, value FROM augeas WHERE path = '/etc/app{i}.conf';",
    "SELECT count(*) AS n, max(start_time) FROM processes WHERE uid = {i} GROUP BY uid;",
    "SELECT command, path FROM crontab WHERE command LIKE '%job{i}%';",
]


def make_pack(directory: Path) -> Path:
    queries = {
        f"q{i:04d}": {
            "query": TEMPLATES[i % len(TEMPLATES)].format(i=i),
            "interval": 300 + 60 * (i % 60),
            "description": f"generated query {i}",
        }
        for i in range(QUERIES)
    }
    pack = directory / "bench.conf"
    pack.write_text(json.dumps({"platform": "linux", "queries": queries}, indent=2))
    return pack


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pack = make_pack(Path(tmp))
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            findings = lint_osquery([pack], flags=SHIPPED_PACK_FLAGS)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"linted {QUERIES} queries, {RUNS} runs: median {median:.3f} s, {len(findings)} findings")


if __name__ == "__main__":
    main()
