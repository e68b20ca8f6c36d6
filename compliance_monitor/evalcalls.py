"""``eval calls``: whole-call detection quality, measured the way a supervisor lives it.

Every call of a manifest is streamed over the real bridge protocol (paced, ``--speed``), the console
websocket is read like a browser would, and each finding is scored against the labelled turns:

- caught: an expected agent violation got a finding of its category on the agent's side, no earlier
  than the offending turn's start (call-level ``missing_disclosure``: any time in the call);
- missed: no such finding;
- false alarm: an agent finding of severity warn or above whose category is not expected on the turn it
  overlaps (or anywhere, for call-level findings);
- time to alert: from the end of the offending turn (as streamed) to the finding's arrival on the console;
- withdrawn: a finding raised on a partial transcript that the final one did not bear out; the console
  strikes it through, so it counts neither as a catch nor as a false alarm, only here.

Categories outside the manifest's vocabulary (calling_hours, call_frequency depend on the clock) are
counted apart, as ``other``. Manifest format: ``../shared/calls/dev/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from compliance_monitor.ingest.replay import replay
from compliance_monitor.messages import UTTERANCE_CATEGORIES

TURN_CATEGORIES = set(UTTERANCE_CATEGORIES)
LABELLED_CALL_CATEGORIES = {"missing_disclosure"}  # calling_hours / call_frequency depend on the clock: apart
WARN_OR_ABOVE = {"warn", "high", "critical"}
TURN_SLACK_S = 0.5  # a finding's segment may start a little before its turn (VAD padding)


@dataclass
class Expected:
    category: str
    turn: int | None
    t0: float
    t1: float
    caught: bool = False
    latency_s: float | None = None


@dataclass
class CallResult:
    call_id: str
    compliant: bool
    expected: list[Expected]
    false_alarms: list[dict[str, Any]] = field(default_factory=list)
    other_findings: list[dict[str, Any]] = field(default_factory=list)
    customer_findings: int = 0
    withdrawn: int = 0
    ended: bool = False


def load_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def expectations(call: dict[str, Any]) -> list[Expected]:
    out = []
    for e in call["expected"]:
        if e["speaker"] != "agent":
            continue
        if e["turn_index"] is None:
            out.append(Expected(e["category"], None, 0.0, float(call["duration_s"])))
        else:
            turn = call["turns"][e["turn_index"]]
            out.append(Expected(e["category"], e["turn_index"], turn["t0"], turn["t1"]))
    return out


def score_call(
    call: dict[str, Any], events: list[tuple[float, dict[str, Any]]], started: float, speed: float
) -> CallResult:
    result = CallResult(call["call_id"], bool(call.get("compliant")), expectations(call))
    result.ended = any(e["type"] == "call_ended" for _, e in events)
    pace = speed if speed > 0 else float("inf")
    withdrawn = {e["finding_id"] for _, e in events if e["type"] == "finding_withdrawn"}
    for arrived, f in ((w, e) for w, e in events if e["type"] == "finding"):
        if f.get("finding_id") in withdrawn:
            result.withdrawn += 1
            continue
        if f["speaker"] != "agent":
            result.customer_findings += 1
            continue
        if f["category"] not in TURN_CATEGORIES | LABELLED_CALL_CATEGORIES:
            result.other_findings.append(f)
            continue
        match = next((x for x in result.expected if x.category == f["category"] and _on_turn(x, f)), None)
        if match is None:
            if f["severity"] in WARN_OR_ABOVE:
                result.false_alarms.append(f)
            continue
        if not match.caught:
            match.caught = True
            spoken_end = started + match.t1 / pace if pace != float("inf") else started
            match.latency_s = arrived - spoken_end
    return result


def _on_turn(expected: Expected, finding: dict[str, Any]) -> bool:
    if expected.turn is None:
        return True
    # no earlier than the offending turn's start, and overlapping it
    return finding["t1"] >= expected.t0 and finding["t0"] <= expected.t1 + TURN_SLACK_S


async def run_eval(
    manifest: Path,
    ws_base: str,
    *,
    bridge: str = "twilio",
    concurrency: int = 2,
    speed: float = 1.0,
    only: list[str] | None = None,
) -> list[CallResult]:
    calls = [c for c in load_manifest(manifest) if not only or c["call_id"] in only]
    events: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    ended: dict[str, asyncio.Event] = {}
    run_id = uuid.uuid4().hex[:6]
    ids = {c["call_id"]: f"eval-{run_id}-{c['call_id']}" for c in calls}
    for live_id in ids.values():
        ended[live_id] = asyncio.Event()
    slots = asyncio.Semaphore(max(1, concurrency))
    started: dict[str, float] = {}

    async with websockets.connect(f"{ws_base}/ws/console", max_size=2**22) as console:

        async def listen() -> None:
            async for message in console:
                event = json.loads(message)
                if event["call_id"] in ended:
                    events[event["call_id"]].append((time.time(), event))
                    if event["type"] == "call_ended":
                        ended[event["call_id"]].set()

        async def stream(call: dict[str, Any]) -> None:
            async with slots:
                live_id = ids[call["call_id"]]
                started[live_id] = time.time()
                await replay(
                    manifest.parent / call["file"],
                    f"{ws_base}/bridge/{bridge}",
                    bridge=bridge,
                    speed=speed,
                    call_id=live_id,
                    agent_id=f"eval-{call['call_id']}",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended[live_id].wait(), 120)

        listener = asyncio.create_task(listen())
        try:
            await asyncio.gather(*(stream(c) for c in calls))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return [score_call(c, events[ids[c["call_id"]]], started[ids[c["call_id"]]], speed) for c in calls]


def summarise(results: list[CallResult]) -> dict[str, Any]:
    per_category: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    for r in results:
        for x in r.expected:
            cat = per_category.setdefault(x.category, {"expected": 0, "caught": 0, "latencies": []})
            cat["expected"] += 1
            if x.caught:
                cat["caught"] += 1
                if x.latency_s is not None and x.turn is not None:
                    cat["latencies"].append(x.latency_s)
                    latencies.append(x.latency_s)
        for f in r.false_alarms:
            per_category.setdefault(f["category"], {"expected": 0, "caught": 0, "latencies": []})
            per_category[f["category"]]["false_alarms"] = per_category[f["category"]].get("false_alarms", 0) + 1
    categories = {
        c: {
            "expected": v["expected"],
            "caught": v["caught"],
            "missed": v["expected"] - v["caught"],
            "recall": round(v["caught"] / v["expected"], 3) if v["expected"] else None,
            "false_alarms": v.get("false_alarms", 0),
            **_pcts(v["latencies"]),
        }
        for c, v in sorted(per_category.items())
    }
    expected = sum(v["expected"] for v in categories.values())
    caught = sum(v["caught"] for v in categories.values())
    return {
        "calls": [
            {
                "call_id": r.call_id,
                "compliant": r.compliant,
                "ended": r.ended,
                "expected": [
                    {
                        "category": x.category,
                        "turn": x.turn,
                        "caught": x.caught,
                        "latency_s": None if x.latency_s is None else round(x.latency_s, 2),
                    }
                    for x in r.expected
                ],
                "false_alarms": [
                    {
                        "category": f["category"],
                        "severity": f["severity"],
                        "rule_id": f["rule_id"],
                        "t0": f["t0"],
                        "t1": f["t1"],
                        "matched_text": f["matched_text"],
                    }
                    for f in r.false_alarms
                ],
                "other_findings": [{"category": f["category"], "rule_id": f["rule_id"]} for f in r.other_findings],
                "customer_findings": r.customer_findings,
                "withdrawn": r.withdrawn,
            }
            for r in results
        ],
        "categories": categories,
        "totals": {
            "expected": expected,
            "caught": caught,
            "recall": round(caught / expected, 3) if expected else None,
            "false_alarms": sum(len(r.false_alarms) for r in results),
            "false_alarms_on_compliant_calls": sum(len(r.false_alarms) for r in results if r.compliant),
            "withdrawn": sum(r.withdrawn for r in results),
            **_pcts(latencies),
        },
    }


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"latency_p50_s": None, "latency_p95_s": None}
    return {
        "latency_p50_s": round(float(np.percentile(values, 50)), 2),
        "latency_p95_s": round(float(np.percentile(values, 95)), 2),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'call':<8} {'compliant':>9} {'caught':>7} {'missed':>7} {'false':>6}  details"]
    for c in summary["calls"]:
        caught = sum(x["caught"] for x in c["expected"])
        missed = [f"{x['category']}@{x['turn']}" for x in c["expected"] if not x["caught"]]
        false = [f"{f['category']}({f['matched_text']})" for f in c["false_alarms"]]
        detail = "; ".join(
            filter(
                None, ["missed " + ", ".join(missed) if missed else "", "false " + ", ".join(false) if false else ""]
            )
        )
        lines.append(
            f"{c['call_id']:<8} {'yes' if c['compliant'] else 'no':>9} {caught:>7} {len(missed):>7} "
            f"{len(false):>6}  {detail}"
        )
    lines += [
        "",
        f"{'category':<24} {'expected':>8} {'caught':>7} {'recall':>7} {'false':>6} {'p50 s':>6} {'p95 s':>6}",
    ]
    for name, v in summary["categories"].items():
        lines.append(
            f"{name:<24} {v['expected']:>8} {v['caught']:>7} {_f(v['recall']):>7} {v['false_alarms']:>6} "
            f"{_f(v['latency_p50_s']):>6} {_f(v['latency_p95_s']):>6}"
        )
    t = summary["totals"]
    lines.append(
        f"{'(all)':<24} {t['expected']:>8} {t['caught']:>7} {_f(t['recall']):>7} {t['false_alarms']:>6} "
        f"{_f(t['latency_p50_s']):>6} {_f(t['latency_p95_s']):>6}"
    )
    lines.append(f"false alarms (warn or above) on compliant calls: {t['false_alarms_on_compliant_calls']}")
    lines.append(f"withdrawn (raised on a partial, not in the final): {t['withdrawn']}")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
