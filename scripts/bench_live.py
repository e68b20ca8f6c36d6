"""Live-path benchmark: N concurrent calls of real Mandarin speech, at real-time pace, through the bridge.

For each N it prints the ASR real-time factor (model busy time / audio decoded), the ASR load (busy
time / wall time: above ~0.9 the model cannot keep up), and the time from the end of each spoken
utterance to its final transcript and to its finding on the console websocket (p50 / p95). Then the
largest N that stayed real time (every final arrived, p95 to final ≤ --max-p95 s, load < 0.9).

    python scripts/bench_live.py --calls 1 2 4            # starts its own server (CPU, embedded default)
    python scripts/bench_live.py --url ws://host:8000 --calls 8   # against a running server

Each call streams AISHELL-1 test utterances (../shared/audio, Apache-2.0) with pauses; the server is
started with scripts/bench_rules.yaml so that a word in the audio (交易) raises a finding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compliance_monitor.audio.wavfile import read_wav, write_wav  # noqa: E402
from compliance_monitor.ingest.replay import replay  # noqa: E402

CLIPS = ["BAC009S0764W0121.wav", "BAC009S0764W0122.wav"]
FINDING_WORD_CLIP = "BAC009S0764W0121.wav"  # contains 交易 (bench rule)


@dataclass
class Utterance:
    speech_end: float  # stream seconds
    has_finding: bool


@dataclass
class CallPlan:
    path: Path
    utterances: list[Utterance]
    duration: float


@dataclass
class RoundResult:
    n: int
    final_latency: list[float] = field(default_factory=list)
    finding_latency: list[float] = field(default_factory=list)
    missing_finals: int = 0
    missing_findings: int = 0
    rtf: float = 0.0
    load: float = 0.0
    wall_s: float = 0.0


def speech_end(audio: np.ndarray, rate: int) -> float:
    """Last 20 ms frame louder than -40 dBFS: where the words end."""
    frame = rate // 50
    n = len(audio) // frame
    rms = np.sqrt((audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms) > -40)[0]
    return float((loud[-1] + 1) * frame / rate) if len(loud) else 0.0


def build_call(audio_dir: Path, repeats: int, out: Path) -> CallPlan:
    parts, utterances, t = [], [], 0.5
    parts.append(np.zeros(8000, np.float32))
    for i in range(repeats):
        for name in CLIPS:
            clip, rate = read_wav(audio_dir / name)
            mono = clip[:, 0]
            utterances.append(Utterance(t + speech_end(mono, rate), name == FINDING_WORD_CLIP and i == 0))
            parts += [mono, np.zeros(int(1.2 * rate), np.float32)]
            t += len(mono) / rate + 1.2
    audio = np.concatenate(parts)
    write_wav(out, audio)
    return CallPlan(out, utterances, len(audio) / 16_000)


async def run_call(ws_base: str, plan: CallPlan, call_id: str) -> float:
    started = time.time()
    await replay(
        plan.path,
        f"{ws_base}/bridge/twilio",
        bridge="twilio",
        speed=1.0,
        call_id=call_id,
        agent_id=f"bench-{call_id}",
        tail_silence_s=0.5,
    )
    return started


async def run_round(ws_base: str, http_base: str, plan: CallPlan, n: int) -> RoundResult:
    result = RoundResult(n)
    events: dict[str, list[tuple[float, dict]]] = {}
    async with httpx.AsyncClient(base_url=http_base) as http:
        before = (await http.get("/api/stats")).json()["asr"]
    call_ids = [f"bench-{n}-{i}-{int(time.time())}" for i in range(n)]
    async with websockets.connect(f"{ws_base}/ws/console", max_size=2**22) as console:
        all_ended = asyncio.Event()
        ended: set[str] = set()

        async def listen() -> None:
            async for message in console:
                event = json.loads(message)
                events.setdefault(event["call_id"], []).append((time.time(), event))
                if event["type"] == "call_ended" and event["call_id"] in call_ids:
                    ended.add(event["call_id"])
                    if len(ended) == len(call_ids):
                        all_ended.set()

        listener = asyncio.create_task(listen())
        t0 = time.time()
        starts = await asyncio.gather(*(run_call(ws_base, plan, cid) for cid in call_ids))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ended.wait(), 60)
        result.wall_s = time.time() - t0
        listener.cancel()
        if os.environ.get("BENCH_DEBUG"):  # the event timeline per call, seconds from the round's start
            for cid in call_ids:
                print(
                    [
                        (round(w - t0, 2), e["type"], e.get("t0"), e.get("t1"), e.get("text", "")[:12])
                        for w, e in events.get(cid, [])
                    ]
                )
    async with httpx.AsyncClient(base_url=http_base) as http:
        after = (await http.get("/api/stats")).json()["asr"]
    busy, audio = after["busy_s"] - before["busy_s"], after["audio_s"] - before["audio_s"]
    result.rtf = busy / audio if audio else 0.0
    result.load = busy / result.wall_s if result.wall_s else 0.0
    for cid, started in zip(call_ids, starts, strict=True):
        call_events = events.get(cid, [])
        finals = [(w, e) for w, e in call_events if e["type"] == "transcript" and e["final"]]
        findings = [(w, e) for w, e in call_events if e["type"] == "finding"]
        for utt in plan.utterances:
            spoken_at = started + utt.speech_end
            final = next((w for w, e in finals if e["t0"] <= utt.speech_end <= e["t1"] + 0.3), None)
            if final is None:
                result.missing_finals += 1
            else:
                result.final_latency.append(final - spoken_at)
            if utt.has_finding:
                hit = next((w for w, e in findings if e["t0"] <= utt.speech_end <= e["t1"] + 0.3), None)
                if hit is None:
                    result.missing_findings += 1
                else:
                    result.finding_latency.append(hit - spoken_at)
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def start_server(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CM_SERVER__PORT": str(port),
        "CM_ARCHIVE__PATH": str(tmp / "bench.sqlite3"),
        "CM_RULES__EXTRA_FILES": json.dumps([str(REPO / "scripts" / "bench_rules.yaml")]),
    }
    exe = Path(sys.executable).with_name("compliance-monitor")
    return subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_up(http_base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(480):
            try:
                if (await http.get(f"{http_base}/api/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError("server did not come up")


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    server = None
    if args.url:
        ws_base = args.url.rstrip("/")
    else:
        ws_base = f"ws://127.0.0.1:{args.port}"
        server = start_server(args.port, tmp)
    http_base = ws_base.replace("ws://", "http://").replace("wss://", "https://")
    try:
        await wait_up(http_base)
        plan = build_call(Path(args.audio_dir), args.repeats, tmp / "call.wav")
        print(f"call: {plan.duration:.1f}s, {len(plan.utterances)} utterances; real-time pace; Twilio bridge")
        print(
            f"{'N':>3} {'RTF':>6} {'load':>5} {'final p50':>9} {'p95':>6} {'finding p50':>11} {'p95':>6} {'missing':>7}"
        )
        realtime = []
        for n in args.calls:
            r = await run_round(ws_base, http_base, plan, n)
            ok = r.missing_finals == 0 and pct(r.final_latency, 95) <= args.max_p95 and r.load < 0.9
            if ok:
                realtime.append(n)
            print(
                f"{n:>3} {r.rtf:>6.3f} {r.load:>5.2f} {pct(r.final_latency, 50):>8.2f}s "
                f"{pct(r.final_latency, 95):>5.2f}s {pct(r.finding_latency, 50):>10.2f}s "
                f"{pct(r.finding_latency, 95):>5.2f}s {r.missing_finals + r.missing_findings:>7}"
                f"{'' if ok else '  (not real time)'}",
                flush=True,
            )
        best = max(realtime) if realtime else 0
        print(f"largest N that stayed real time: {best}" + (" (of those tried)" if best == max(args.calls) else ""))
        print(
            "RTF = model busy time / audio decoded; load = model busy time / wall time; latencies from the end "
            "of the spoken words to the event on the console websocket."
        )
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--url", help="ws://host:port of a running monitor (default: start one)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--repeats", type=int, default=3, help="times the two clips repeat in a call")
    parser.add_argument("--audio-dir", default=str(REPO.parent / "shared" / "audio"))
    parser.add_argument("--max-p95", type=float, default=3.0, help="p95 seconds to final still called real time")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
