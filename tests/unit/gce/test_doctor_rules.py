"""The doctor's reading of firewall rules and its report format (pure functions, real client messages)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.cloud import compute_v1

from bakery.gce import doctor

NET = "https://www.googleapis.com/compute/v1/projects/p/global/networks/gstg"
SA = "image-builder@p.iam.gserviceaccount.com"


def rule(**fields: Any) -> compute_v1.Firewall:
    base: dict[str, Any] = {
        "name": "r",
        "network": NET,
        "direction": "INGRESS",
        "source_ranges": ["35.235.240.0/20"],
        "allowed": [compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])],
    }
    return compute_v1.Firewall(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "admits"),
    [
        ({}, True),
        ({"source_ranges": ["0.0.0.0/0"]}, True),
        ({"source_ranges": ["35.235.240.0/21"]}, False),  # half of IAP's range
        ({"source_ranges": ["10.0.0.0/8", "35.235.0.0/16"]}, True),
        ({"allowed": [compute_v1.Allowed(I_p_protocol="tcp", ports=["20-30"])]}, True),
        ({"allowed": [compute_v1.Allowed(I_p_protocol="tcp")]}, True),  # every port
        ({"allowed": [compute_v1.Allowed(I_p_protocol="all")]}, True),
        ({"allowed": [compute_v1.Allowed(I_p_protocol="udp", ports=["22"])]}, False),
        ({"allowed": [compute_v1.Allowed(I_p_protocol="tcp", ports=["2222"])]}, False),
        ({"disabled": True}, False),
        ({"direction": "EGRESS"}, False),
        ({"network": NET.replace("gstg", "gprd")}, False),
        ({"target_tags": ["bastion"]}, False),
        ({"target_service_accounts": [SA]}, True),
        ({"target_service_accounts": ["other@p.iam.gserviceaccount.com"]}, False),
    ],
)
def test_iap_rule(fields: dict[str, Any], admits: bool) -> None:
    assert doctor._admits_iap_ssh(rule(**fields), "gstg", SA) is admits


def test_a_rule_for_service_accounts_misses_a_vm_without_one() -> None:
    assert doctor._admits_iap_ssh(rule(), "gstg", "") is True
    assert doctor._admits_iap_ssh(rule(target_service_accounts=[SA]), "gstg", "") is False


@pytest.mark.parametrize(
    ("fields", "admits"),
    [
        ({}, True),
        ({"action": "deny"}, False),
        ({"action": "goto_next"}, False),
        ({"target_secure_tags": [compute_v1.FirewallPolicyRuleSecureTag(name="tagValues/1")]}, False),
        ({"target_service_accounts": ["other@p.iam.gserviceaccount.com"]}, False),
        ({"match": compute_v1.FirewallPolicyRuleMatcher(src_ip_ranges=["35.235.240.0/20"])}, False),  # no ports
    ],
)
def test_firewall_policy_rule(fields: dict[str, Any], admits: bool) -> None:
    base: dict[str, Any] = {
        "direction": "INGRESS",
        "action": "allow",
        "match": compute_v1.FirewallPolicyRuleMatcher(
            src_ip_ranges=["35.235.240.0/20"],
            layer4_configs=[compute_v1.FirewallPolicyRuleMatcherLayer4Config(ip_protocol="tcp", ports=["22"])],
        ),
    }
    policy_rule = compute_v1.FirewallPolicyRule(**{**base, **fields})
    assert doctor._policy_admits_iap_ssh(policy_rule, SA) is admits


def test_report_format_and_exit_codes() -> None:
    report = doctor.Report(
        "gstg",
        [
            doctor.Check("a.ok", "ok", "fine"),
            doctor.Check("b.warn", "warn", "hm", "do this"),
            doctor.Check("c.skip", "skip", "not needed", "ignored fix"),
        ],
    )
    assert report.exit_code == 0 and report.failed == []
    assert report.text().splitlines()[1] == "warn  b.warn                         hm  (fix: do this)"
    assert report.text().splitlines()[2] == "skip  c.skip                         not needed"
    report.checks.append(doctor.Check("d.fail", "fail", "broken", "mend it"))
    assert report.exit_code == doctor.EXIT_FAILED
    report.checks.append(doctor.Check("tools.x", "fail", "missing", "install it", tool=True))
    assert report.exit_code == doctor.EXIT_TOOL
    assert json.loads(report.to_json())["failed"] == 2
    error = doctor.PreflightFailed(report)
    assert error.exit_code == doctor.EXIT_TOOL and "\n" not in str(error)
    assert str(error).startswith(
        "preflight of environment gstg failed, no VM was started: d.fail: broken (fix: mend it)"
    )


def test_every_check_has_a_name() -> None:
    """A check that raises is reported under its name: every check method has one, and no name is stale."""
    assert {m for m in dir(doctor.Doctor) if m.startswith("check_")} == set(doctor.NAMES)
