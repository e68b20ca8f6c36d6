"""Findings → actions: warn the collector, alert supervisors, request (or perform) a halt.

De-duplicated per call: the same rule on the same segment never acts twice (a partial and its
final, a re-decode), and the same rule and action wait ``cooldown_s`` of call time before acting
again, so a collector who repeats a phrase gets one warning, not ten. Time is the call's stream
time, not the wall clock, which keeps the policy deterministic in tests and replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compliance_monitor.config import PolicySettings
from compliance_monitor.messages import Action, ActionKind, Finding, Severity, Speaker


@dataclass(slots=True)
class _CallState:
    seen_segments: set[tuple[str, str, int]] = field(default_factory=set)
    last_action: dict[tuple[str, ActionKind], float] = field(default_factory=dict)
    halted: bool = False


class PolicyEngine:
    def __init__(self, settings: PolicySettings) -> None:
        self.s = settings
        self._calls: dict[str, _CallState] = {}

    def end_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def is_new(self, finding: Finding) -> bool:
        """False for a finding already raised on this segment (partial then final)."""
        state = self._calls.setdefault(finding.call_id, _CallState())
        key = (finding.rule_id, finding.speaker.value, finding.segment_no)
        if key in state.seen_segments:
            return False
        state.seen_segments.add(key)
        return True

    def withdraw(self, finding: Finding) -> None:
        """A finding taken back (raised on a partial, not in the final): the cool-downs it started end, so
        the rule acts again when it is really said. A halt it requested cannot be taken back."""
        state = self._calls.get(finding.call_id)
        if state is None:
            return
        for kind in ActionKind:
            if state.last_action.get((finding.rule_id, kind)) == finding.t1:
                del state.last_action[(finding.rule_id, kind)]

    def decide(self, finding: Finding) -> list[Action]:
        state = self._calls.setdefault(finding.call_id, _CallState())
        actions = [
            Action(finding.call_id, kind, finding, reason)
            for kind, reason in self._wanted(finding)
            if self._off_cooldown(state, finding, kind)
        ]
        if any(a.kind is ActionKind.HALT_CALL for a in actions):
            state.halted = True
        return actions

    def _wanted(self, finding: Finding) -> list[tuple[ActionKind, str]]:
        rank = finding.severity.rank
        wanted: list[tuple[ActionKind, str]] = []
        label = f"{finding.category}/{finding.severity.value} ({finding.rule_id})"
        # Customer-side findings (the debtor swearing) inform the supervisor; the collector did nothing wrong.
        if finding.speaker is Speaker.AGENT and rank >= Severity(self.s.warn_at).rank:
            wanted.append((ActionKind.WARN_COLLECTOR, f"collector warned: {label}"))
        if rank >= Severity(self.s.alert_supervisor_at).rank or finding.action_hint is ActionKind.ALERT_SUPERVISOR:
            wanted.append((ActionKind.ALERT_SUPERVISOR, f"supervisor alerted: {label}"))
        # halt_at "never" wins over a rule's halt hint: some deployments only ever let people halt.
        halt_wanted = self.s.halt_at != "never" and (
            finding.action_hint is ActionKind.HALT_CALL or rank >= Severity(self.s.halt_at).rank
        )
        if finding.speaker is Speaker.AGENT and halt_wanted:
            how = "halting automatically" if self.s.auto_halt else "halt recommended, supervisor to confirm"
            wanted.append((ActionKind.HALT_CALL, f"{how}: {label}"))
        return wanted

    def _off_cooldown(self, state: _CallState, finding: Finding, kind: ActionKind) -> bool:
        if kind is ActionKind.HALT_CALL and state.halted:
            return False
        key = (finding.rule_id, kind)
        last = state.last_action.get(key)
        if last is not None and finding.t1 - last < self.s.cooldown_s:
            return False
        state.last_action[key] = finding.t1
        return True
