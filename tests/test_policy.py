"""Unit tests for the findings → actions policy (compliance_monitor.policy.engine)."""

from __future__ import annotations

import pytest

from compliance_monitor.config import PolicySettings
from compliance_monitor.messages import Action, ActionKind, Finding, Severity, Speaker
from compliance_monitor.policy.engine import PolicyEngine

pytestmark = pytest.mark.unit

WARN, ALERT, HALT = ActionKind.WARN_COLLECTOR, ActionKind.ALERT_SUPERVISOR, ActionKind.HALT_CALL


def finding(
    severity: Severity = Severity.HIGH,
    speaker: Speaker = Speaker.AGENT,
    *,
    rule_id: str = "threat.consequences",
    segment_no: int = 0,
    t1: float = 5.0,
    call_id: str = "call-1",
    action_hint: ActionKind | None = None,
) -> Finding:
    return Finding(
        call_id=call_id,
        speaker=speaker,
        segment_no=segment_no,
        rule_id=rule_id,
        category=rule_id.split(".")[0],
        severity=severity,
        matched_text="后果自负",
        span=(3, 7),
        t0=t1 - 2.0,
        t1=t1,
        explanation="supervisor text",
        collector_explanation="collector text",
        action_hint=action_hint,
    )


def kinds(actions: list[Action]) -> list[ActionKind]:
    return [a.kind for a in actions]


@pytest.fixture
def policy() -> PolicyEngine:
    return PolicyEngine(PolicySettings())


# --------------------------------------------------------------------------- severity → actions


def test_agent_high_finding_warns_and_alerts(policy: PolicyEngine) -> None:
    f = finding(Severity.HIGH)
    actions = policy.decide(f)
    assert kinds(actions) == [WARN, ALERT]
    assert all(a.finding is f and a.call_id == "call-1" for a in actions)
    assert "threat.consequences" in actions[0].reason
    assert "high" in actions[1].reason


def test_agent_warn_finding_only_warns(policy: PolicyEngine) -> None:
    assert kinds(policy.decide(finding(Severity.WARN))) == [WARN]


def test_agent_info_finding_does_nothing(policy: PolicyEngine) -> None:
    assert policy.decide(finding(Severity.INFO)) == []


@pytest.mark.parametrize("severity", [Severity.HIGH, Severity.CRITICAL])
def test_customer_finding_at_alert_threshold_only_alerts(policy: PolicyEngine, severity: Severity) -> None:
    # The debtor swearing is for the supervisor; the collector did nothing wrong and the call goes on.
    assert kinds(policy.decide(finding(severity, Speaker.CUSTOMER, rule_id="customer.abuse"))) == [ALERT]


@pytest.mark.parametrize("severity", [Severity.INFO, Severity.WARN])
def test_customer_finding_below_alert_threshold_does_nothing(policy: PolicyEngine, severity: Severity) -> None:
    assert policy.decide(finding(severity, Speaker.CUSTOMER, rule_id="customer.abuse")) == []


def test_customer_finding_never_halts_even_with_a_halt_hint(policy: PolicyEngine) -> None:
    f = finding(Severity.CRITICAL, Speaker.CUSTOMER, rule_id="customer.abuse", action_hint=HALT)
    assert HALT not in kinds(policy.decide(f))


def test_critical_agent_finding_halts(policy: PolicyEngine) -> None:
    actions = policy.decide(finding(Severity.CRITICAL, rule_id="threat.violence"))
    assert kinds(actions) == [WARN, ALERT, HALT]
    assert "supervisor to confirm" in actions[-1].reason  # auto_halt is off by default


def test_auto_halt_reason() -> None:
    policy = PolicyEngine(PolicySettings(auto_halt=True))
    actions = policy.decide(finding(Severity.CRITICAL, rule_id="threat.violence"))
    assert "halting automatically" in actions[-1].reason


def test_halt_only_once_per_call(policy: PolicyEngine) -> None:
    assert HALT in kinds(policy.decide(finding(Severity.CRITICAL, rule_id="threat.violence", t1=5.0)))
    # Another critical rule, later: warned and alerted, but the call is already being halted.
    later = policy.decide(finding(Severity.CRITICAL, rule_id="threat.family", segment_no=3, t1=100.0))
    assert kinds(later) == [WARN, ALERT]
    # A different call is not affected.
    assert HALT in kinds(policy.decide(finding(Severity.CRITICAL, rule_id="threat.family", call_id="call-2")))


def test_action_hints(policy: PolicyEngine) -> None:
    # A rule may ask for a supervisor alert or a halt below the severity thresholds.
    assert kinds(policy.decide(finding(Severity.WARN, rule_id="a.x", action_hint=ALERT))) == [WARN, ALERT]
    assert kinds(policy.decide(finding(Severity.WARN, rule_id="a.y", action_hint=HALT))) == [WARN, HALT]


def test_thresholds_come_from_settings() -> None:
    strict = PolicyEngine(PolicySettings(warn_at="info", alert_supervisor_at="warn", halt_at="high"))
    assert kinds(strict.decide(finding(Severity.INFO, rule_id="a.i"))) == [WARN]
    assert kinds(strict.decide(finding(Severity.HIGH, rule_id="a.h"))) == [WARN, ALERT, HALT]
    never = PolicyEngine(PolicySettings(halt_at="never"))
    assert kinds(never.decide(finding(Severity.CRITICAL))) == [WARN, ALERT]


# --------------------------------------------------------------------------- de-duplication and cool-down


def test_is_new_dedups_rule_on_same_segment(policy: PolicyEngine) -> None:
    partial = finding(segment_no=7, t1=3.0)
    final = finding(segment_no=7, t1=3.4)
    assert policy.is_new(partial)
    assert not policy.is_new(final)  # the final of a segment whose partial already raised it
    assert policy.is_new(finding(segment_no=8))  # next segment
    assert policy.is_new(finding(segment_no=7, rule_id="abuse.insult"))  # another rule, same segment
    assert policy.is_new(finding(segment_no=7, speaker=Speaker.CUSTOMER))  # the other speaker's segment 7
    assert policy.is_new(finding(segment_no=7, call_id="call-2"))  # another call


def test_a_withdrawn_finding_ends_the_cooldown_it_started(policy: PolicyEngine) -> None:
    misheard = finding(segment_no=1, t1=10.0)
    assert kinds(policy.decide(misheard)) == [WARN, ALERT]
    policy.withdraw(misheard)  # the final did not say it
    assert kinds(policy.decide(finding(segment_no=2, t1=20.0))) == [WARN, ALERT]  # said for real: acts
    policy.withdraw(finding(segment_no=1, t1=10.0))  # a stale withdrawal leaves the newer cool-down alone
    assert policy.decide(finding(segment_no=3, t1=25.0)) == []
    policy.withdraw(finding(call_id="never-seen"))  # unknown call: nothing to do


def test_cooldown_suppresses_repeats_within_window(policy: PolicyEngine) -> None:
    assert kinds(policy.decide(finding(segment_no=1, t1=10.0))) == [WARN, ALERT]
    assert policy.decide(finding(segment_no=2, t1=20.0)) == []  # 10 s later: same rule, cooling down
    assert policy.decide(finding(segment_no=3, t1=39.0)) == []  # 29 s after the last action
    assert kinds(policy.decide(finding(segment_no=4, t1=50.0))) == [WARN, ALERT]  # 40 s later


def test_cooldown_is_per_rule(policy: PolicyEngine) -> None:
    assert policy.decide(finding(rule_id="threat.consequences", t1=10.0))
    assert kinds(policy.decide(finding(rule_id="abuse.insult", t1=11.0))) == [WARN, ALERT]


def test_cooldown_setting() -> None:
    policy = PolicyEngine(PolicySettings(cooldown_s=5.0))
    assert policy.decide(finding(t1=10.0))
    assert policy.decide(finding(t1=14.0)) == []
    assert policy.decide(finding(t1=15.0))


def test_end_call_resets_state(policy: PolicyEngine) -> None:
    f = finding(Severity.CRITICAL, rule_id="threat.violence", segment_no=2, t1=10.0)
    assert policy.is_new(f)
    assert kinds(policy.decide(f)) == [WARN, ALERT, HALT]
    assert not policy.is_new(f)
    assert policy.decide(f) == []
    policy.end_call("call-1")
    assert policy.is_new(f)
    assert kinds(policy.decide(f)) == [WARN, ALERT, HALT]
    policy.end_call("never-started")  # harmless


def test_the_standards_new_categories_warn_and_alert_as_their_pack_severity_says(policy: PolicyEngine) -> None:
    from compliance_monitor.detect.rulepack import load_pack
    from tests.test_rules import PACK_FILE

    pack = load_pack(PACK_FILE)
    for n, category in enumerate(("misrepresentation", "induced_borrowing", "improper_payment")):
        (rule,) = [r for r in pack.rules if r.category == category]
        f = finding(rule.severity, rule_id=rule.id, call_id=f"call-{category}", segment_no=n)
        assert f.category == category
        assert kinds(policy.decide(f)) == [WARN, ALERT], category  # high: the collector and a supervisor hear of it
