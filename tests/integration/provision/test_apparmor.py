"""65-apparmor.sh on a Debian 12 root: with Ubuntu 24.04's rsyslogd profile planted (tests/fixtures/apparmor,
from rsyslog-pkg-ubuntu's noble packaging), the pipe rule lands in the profile's local include exactly once
(re-runs change nothing, an admin's own lines stay); without a profile (Debian 12) nothing is written.
Debian's real ``apparmor_parser`` then compiles the profile with that include (no kernel load: AppArmor is not
running in the chroot, so the profile is not reloaded here; the image suite checks a booted Ubuntu VM).
Not marked slow: a few seconds with the root cached."""

from __future__ import annotations

from pathlib import Path

import harness

from bakery import imagefiles

PROFILE = Path(__file__).resolve().parents[2] / "fixtures" / "apparmor" / "usr.sbin.rsyslogd"


def test_rule_added_to_the_local_include_once(tmp_path: Path) -> None:
    spec = harness.local_spec(tmp_path / "project")
    root = harness.fresh_root(tmp_path / "root")
    harness.upload(root, harness.rendered(spec))
    local = root.file(imagefiles.RSYSLOG_APPARMOR_LOCAL)
    rule = imagefiles.apparmor_rule(spec)
    assert rule == "/var/osquery/syslog_pipe rw,"

    (out,) = harness.provision(root, spec, only=["65-apparmor.sh"])
    assert "nothing to do" in out.stdout
    assert not local.exists()

    root.file(imagefiles.RSYSLOG_APPARMOR_PROFILE).parent.mkdir(parents=True, exist_ok=True)
    root.file(imagefiles.RSYSLOG_APPARMOR_PROFILE).write_text(PROFILE.read_text())
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("# Site-specific additions and overrides for 'usr.sbin.rsyslogd'\n/srv/logs/** rw,\n")
    for _ in range(2):
        harness.provision(root, spec, only=["65-apparmor.sh"])
    lines = [line.strip() for line in local.read_text().splitlines()]
    assert lines.count(rule) == 1
    assert "/srv/logs/** rw," in lines  # the admin's own rule is kept
    assert "#include <local/usr.sbin.rsyslogd>" in PROFILE.read_text()  # where the profile picks it up
    assert "/var/osquery" not in PROFILE.read_text()  # the profile alone would deny the pipe

    # Debian's real apparmor_parser compiles the profile with the local include (-Q: no kernel load, -K: no
    # cache) and, in its preprocessed output (-p), the rule is part of the rsyslogd profile.
    parse = ["apparmor_parser", "-Q", "-K", "-p", imagefiles.RSYSLOG_APPARMOR_PROFILE]
    compiled = root.chroot(parse)
    assert rule in [line.strip() for line in compiled.stdout.splitlines()]
    local.write_text(local.read_text() + "/var/osquery/syslog_pipe rwx_not_a_mode,\n")
    broken = root.chroot(["apparmor_parser", "-Q", "-K", imagefiles.RSYSLOG_APPARMOR_PROFILE], check=False)
    assert broken.returncode != 0  # the parser really checks what the local include adds
