"""Replay issue 20's attacks against a running monitor and print what they did. Loopback only, bounded.

    compliance-monitor serve --port 8000 &                    # with a throw-away archive (CM_ARCHIVE__PATH)
    python scripts/attack_bridges.py --url ws://127.0.0.1:8000 --pid $! --real-call ../shared/calls/dev/dev01.wav

Each case opens a bounded number of connections (``--scale`` multiplies them, at most 8 at a time), sends
its frames and waits a bounded time for the server's close. With ``--real-call`` one well-formed call
streams in real time through the Twilio bridge alone first (baseline), then again while the attack runs;
the table shows the time from a segment's end in the audio to its final transcript on the console feed.
The script stops by itself: every wait is bounded and the whole run is cut at ``--time-limit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import websockets

from compliance_monitor.audio.g711 import ulaw_encode
from compliance_monitor.ingest.replay import replay

Frames = list[str | bytes]
TONE = (3000 * np.sin(np.arange(160) / 3)).astype(np.int16)
TONE_B64 = base64.b64encode(ulaw_encode(TONE)).decode()


@dataclass
class Case:
    name: str
    connections: int
    frames: Callable[[int], Frames]  # frames for the i-th connection
    wait_s: float = 5.0  # for the server's close after the last frame
    bridge: str = "pcm"
    together: bool = False  # all connections send at once (same call id races)
    codes: Counter[str] = field(default_factory=Counter)
    note: str = ""


def pcm_start(call_id: str, **fields: object) -> str:
    return json.dumps({"event": "start", "call_id": call_id, "agent_id": "A-attack", "sample_rate": 8000, **fields})


def twilio_start(call_sid: str) -> str:
    start = {"callSid": call_sid, "streamSid": "MZ" + call_sid, "tracks": ["inbound"]}
    return json.dumps({"event": "start", "streamSid": "MZ" + call_sid, "start": start})


def twilio_media(timestamp_ms: int) -> str:
    media = {"track": "inbound", "timestamp": str(timestamp_ms), "payload": TONE_B64}
    return json.dumps({"event": "media", "media": media})


STOP = json.dumps({"event": "stop"})
RUN = uuid.uuid4().hex[:6]  # call ids unique to this run


def cases(scale: int) -> list[Case]:
    deep = '{"event": "start", "start": ' + "[" * 50_000 + "]" * 50_000 + "}"
    surrogate_stop = json.dumps({"event": "stop", "reason": "\ud800"})
    jumps = [twilio_media(60_000 * k) for k in range(250)]  # 76 KB of frames, 60 s apart
    return [
        Case(
            "pcm stop reason lone surrogate",
            10 * scale,
            lambda i: [pcm_start(f"sur-{RUN}-{i}"), TONE.tobytes(), surrogate_stop],
        ),
        Case(
            "pcm metadata lone surrogate",
            10 * scale,
            lambda i: [pcm_start(f"surm-{RUN}-{i}", metadata={"q": "\udc80"})],
        ),
        Case(
            "twilio 250 frames 60 s apart",
            2 * scale,
            lambda i: [twilio_start(f"CA-jump-{RUN}-{i}"), *jumps, STOP],
            wait_s=30,
            bridge="twilio",
        ),
        Case("twilio deep JSON nesting", 10 * scale, lambda i: [deep], bridge="twilio"),
        Case(
            "twilio 5000-digit integer",
            10 * scale,
            lambda i: ['{"event": "connected", "sequenceNumber": ' + "9" * 5000 + "}"],
            bridge="twilio",
        ),
        Case(
            "twilio 1e400", 10 * scale, lambda i: ['{"event": "connected", "sequenceNumber": 1e400}'], bridge="twilio"
        ),
        Case(
            "twilio dtmf not an object",
            10 * scale,
            lambda i: [twilio_start(f"CA-dtmf-{RUN}-{i}"), '{"event": "dtmf", "dtmf": "5"}'],
            bridge="twilio",
        ),
        Case(
            "twilio mark not an object",
            10 * scale,
            lambda i: [twilio_start(f"CA-mark-{RUN}-{i}"), '{"event": "mark", "mark": 5}'],
            bridge="twilio",
        ),
        Case("same call id x5 at once", 5, lambda i: [pcm_start(f"dup-{RUN}")], wait_s=2, together=True),
        Case("junk calls (no audio)", 50 * scale, lambda i: [pcm_start(f"junk-{RUN}-{i}", agent_id=f"A-j{i}"), STOP]),
        Case("idle: never starts", 4 * scale, lambda i: [], wait_s=15),
        # Last but one: on a server that leaks these, every later call is refused (1013).
        Case(
            "pcm custom_parameters string",
            70 * scale,
            lambda i: [pcm_start(f"cp-{RUN}-{i}", metadata={"custom_parameters": "x"})],
        ),
        Case("good pcm call after the attack", 1, lambda i: [pcm_start(f"good-{RUN}"), TONE.tobytes() * 10, STOP]),
    ]


async def one_connection(url: str, frames: Frames, wait_s: float, hold: asyncio.Event | None = None) -> str:
    """The server's close code for one connection, 'open' if it kept the connection past wait_s."""
    try:
        async with websockets.connect(url, max_size=2**22, open_timeout=10) as ws:
            try:
                for frame in frames:
                    await ws.send(frame)
                if hold is not None:  # a raced start: stay until the case is over, then hang up
                    await asyncio.wait_for(hold.wait(), wait_s)
                    return str(ws.close_code or "open")
                async with asyncio.timeout(wait_s):
                    async for _ in ws:
                        pass
            except websockets.ConnectionClosed:
                pass
            except TimeoutError:
                return str(ws.close_code or "open")
            return str(ws.close_code)
    except websockets.InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


async def run_case(base: str, case: Case, token: str | None) -> None:
    url = f"{base}/bridge/{case.bridge}" + (f"?token={token}" if token else "")
    if case.together:
        hold = asyncio.Event()
        tasks = [
            asyncio.create_task(one_connection(url, case.frames(i), case.wait_s, hold)) for i in range(case.connections)
        ]
        await asyncio.sleep(1.0)
        hold.set()
        case.codes.update(await asyncio.gather(*tasks))
        return
    gate = asyncio.Semaphore(8)

    async def bounded(i: int) -> str:
        async with gate:
            return await one_connection(url, case.frames(i), case.wait_s)

    case.codes.update(await asyncio.gather(*(bounded(i) for i in range(case.connections))))


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


async def finals_latency(base: str, http: str, wav: Path, token: str | None) -> list[float]:
    """Stream ``wav`` in real time through the Twilio bridge; seconds from each segment's end to its final."""
    call_id = f"CA-real-{uuid.uuid4().hex[:8]}"
    arrivals: list[tuple[float, float]] = []
    async with websockets.connect(f"{base}/ws/console" + (f"?token={token}" if token else "")) as feed:

        async def listen() -> None:
            async for message in feed:
                event = json.loads(message)
                if event.get("call_id") == call_id and event["type"] == "transcript" and event["final"]:
                    arrivals.append((time.time(), event["t1"]))
                if event.get("call_id") == call_id and event["type"] == "call_ended":
                    return

        listener = asyncio.create_task(listen())
        started = time.time()
        await replay(wav, f"{base}/bridge/twilio", speed=1.0, call_id=call_id, token=token, tail_silence_s=1.0)
        await asyncio.wait_for(listener, 120)
    return [arrived - (started + t1) for arrived, t1 in arrivals]


def percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "-"


async def reuse_check(base: str, http: str, token: str | None) -> str:
    """Two calls, one after the other, with one call id: is the first one's archive row kept?"""
    url = f"{base}/bridge/pcm" + (f"?token={token}" if token else "")
    call_id = f"reuse-{RUN}"
    for agent in ("A-first", "A-second"):
        await one_connection(url, [pcm_start(call_id, agent_id=agent), TONE.tobytes(), STOP], 5)
        await asyncio.sleep(1.0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=http, headers=headers, timeout=10) as client:
        response = await client.get(f"/api/calls/{call_id}")
    if response.status_code != 200:
        return f"no archive row ({response.status_code})"
    agent = response.json()["call"]["agent_id"]
    return "kept (the second call got a new key)" if agent == "A-first" else f"overwritten by {agent}"


async def stats(http: str, token: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=http, headers=headers, timeout=10) as client:
        health = (await client.get("/api/health")).json()
        calls = (await client.get("/api/calls", params={"limit": 500})).json()["calls"]
        junk = [c for c in calls if c["call_id"].startswith(f"junk-{RUN}")]
        dup = [c for c in calls if c["call_id"].startswith(f"dup-{RUN}")]
        live = [c for c in calls if c["status"] == "live" and RUN in c["call_id"]]
        return {
            "live_calls": health["live_calls"],
            "archive rows left live": len(live),
            "junk calls archived / with findings": f"{len(junk)} / {sum(1 for c in junk if c['n_findings'])}",
            "rows for the raced call id": len(dup),
        }


async def main(args: argparse.Namespace) -> None:
    host = urlparse(args.url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit("loopback only: --url must point at 127.0.0.1")
    base = args.url.rstrip("/")
    http = base.replace("ws://", "http://", 1)
    baseline: list[float] = []
    if args.real_call:
        print("baseline: the real call alone ...", flush=True)
        baseline = await finals_latency(base, http, args.real_call, args.token)
    rss_before = rss_mb(args.pid)
    attack = cases(args.scale)
    started = time.monotonic()

    reuse = "not run"

    async def all_cases() -> None:
        nonlocal reuse
        reuse = await reuse_check(base, http, args.token)
        print(f"  ended call id reused: {reuse}", flush=True)
        for case in attack:
            await run_case(base, case, args.token)
            print(f"  {case.name}: {dict(case.codes)}", flush=True)

    real = asyncio.create_task(finals_latency(base, http, args.real_call, args.token)) if args.real_call else None
    try:
        async with asyncio.timeout(args.time_limit):
            await all_cases()
            under_attack = await real if real else []
    except TimeoutError:
        print(f"time limit {args.time_limit:g} s reached: the remaining cases were not run")
        under_attack = []
    await asyncio.sleep(3)  # let draining calls end
    rss_after = rss_mb(args.pid)
    summary = await stats(http, args.token)

    print("\n| case | connections | close codes seen |\n|---|---|---|")
    for case in attack:
        codes = ", ".join(f"{code}×{n}" for code, n in sorted(case.codes.items()))
        print(f"| {case.name} | {sum(case.codes.values())}/{case.connections} | {codes} |")
    print()
    if rss_before is not None and rss_after is not None:
        print(f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after (+{rss_after - rss_before:.0f} MB)")
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"archive row of an ended call whose id was reused: {reuse}")
    if args.real_call:
        print(
            f"real call, time to final (s): alone p50 {percentile(baseline, 50)} p95 {percentile(baseline, 95)} "
            f"(n={len(baseline)}); under attack p50 {percentile(under_attack, 50)} p95 {percentile(under_attack, 95)} "
            f"(n={len(under_attack)})"
        )
    print(f"attack took {time.monotonic() - started:.0f} s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the monitor, loopback only")
    parser.add_argument("--pid", type=int, help="the server's process id, for its RSS before and after")
    parser.add_argument("--token", help="bridge/auditor token when auth is on")
    parser.add_argument("--real-call", type=Path, help="a wav to stream in real time alongside the attack")
    parser.add_argument("--scale", type=int, default=1, choices=range(1, 6), help="multiplies the connections")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds for the whole attack")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
