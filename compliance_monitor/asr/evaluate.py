"""ASR accuracy and speed on real Mandarin recordings: CER by condition, decoding mode and setting.

Manifest (JSONL, paths relative to the manifest): ``{"audio", "reference", "kind": "read"|"conversational"|
"synthetic", "source", "licence"}``, optionally ``"t0"``, ``"t1"`` (seconds) and ``"channel"`` (0-based) to take one
turn of a longer stereo file (default: the whole file, channels mixed). Conditions: ``clean`` (the file as is)
and ``telephone`` (16 kHz → 8 kHz μ-law → 16 kHz, as every bridge delivers it). Modes: ``whole`` (one decode of
the clip) and ``streaming`` (the live path: 20 ms chunks → VAD → partials and finals, finals joined). CER is
computed after the normalisation every report uses: 繁→简, full/half width, numerals as digits, punctuation and
spaces dropped. Prompts: ``none`` or ``domain`` (``initial_prompt`` = ``asr.prompt.DOMAIN_PROMPT``), to weigh
vocabulary gains against hallucination.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compliance_monitor.asr.decoder import DecodeRequest, WhisperDecoder
from compliance_monitor.asr.prompt import PROMPTS
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.asr.stream import SpeakerTranscriber
from compliance_monitor.audio.g711 import ulaw_decode, ulaw_encode
from compliance_monitor.audio.resample import float_to_pcm16, pcm16_to_float, resample
from compliance_monitor.audio.wavfile import read_wav
from compliance_monitor.config import AsrSettings, VadSettings
from compliance_monitor.messages import AudioChunk, Speaker, Transcript
from compliance_monitor.text.normalise import numerals_to_digits, to_half_width, to_simplified

_DROP = re.compile(r"[\W_]+")
_AS_HANZI = str.maketrans("0123456789", "零一二三四五六七八九")
KINDS = ("read", "conversational", "synthetic")


def normalise_for_cer(text: str) -> str:
    """One canonical form for both sides: whisper writes 一二线 as 12線 or 1-2线, 六千三百二十 as 6320."""
    return _DROP.sub("", numerals_to_digits(to_half_width(to_simplified(text)))).translate(_AS_HANZI)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(hypothesis: str, reference: str) -> float:
    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    return edit_distance(hyp, ref) / max(1, len(ref))


def telephone_band(audio: np.ndarray) -> np.ndarray:
    narrow = ulaw_decode(ulaw_encode(float_to_pcm16(resample(audio, 16_000, 8_000))))
    return resample(pcm16_to_float(narrow), 8_000, 16_000)


@dataclass(frozen=True)
class Clip:
    name: str
    audio: np.ndarray  # 16 kHz mono float32
    reference: str
    kind: str
    source: str


@dataclass(frozen=True)
class Row:
    clip: str
    kind: str
    condition: str
    mode: str
    setting: str
    prompt: str
    hypothesis: str
    cer: float
    audio_s: float
    decode_s: float

    @property
    def rtf(self) -> float:
        return self.decode_s / self.audio_s if self.audio_s else 0.0


@dataclass(frozen=True)
class Variant:
    """One decoder setting under test: encoder window and initial prompt (a name in ``PROMPTS``)."""

    window: int
    prompt: str
    settings: AsrSettings

    @property
    def name(self) -> str:
        return f"window={self.window}"


def make_variants(base: AsrSettings, windows: list[int], prompts: list[str]) -> list[Variant]:
    """Windows × prompts: "served" = the configured ``initial_prompt``, "none" = no prompt, else ``PROMPTS``."""
    return [
        Variant(w, p, base.model_copy(update={"encoder_window_frames": w, "initial_prompt": _prompt(base, p)}))
        for w in windows
        for p in prompts
    ]


def _prompt(base: AsrSettings, name: str) -> str | None:
    return base.initial_prompt if name == "served" else PROMPTS[name]


def cut_turn(audio: np.ndarray, rate: int, row: dict[str, Any]) -> np.ndarray:
    """The channel (default: all mixed) and span ``[t0, t1]`` seconds (default: all) a manifest row names."""
    channel = row.get("channel")
    if channel is None:
        mono = audio.mean(axis=1)
    elif 0 <= channel < audio.shape[1]:
        mono = audio[:, channel]
    else:
        raise ValueError(f"{row['audio']}: no channel {channel} in a {audio.shape[1]}-channel file")
    start = round(float(row.get("t0", 0.0)) * rate)
    end = round(float(row["t1"]) * rate) if "t1" in row else len(mono)
    if not 0 <= start < end <= len(mono):
        raise ValueError(f"{row['audio']}: turn {start / rate:.2f}-{end / rate:.2f} s outside the file")
    return mono[start:end]


def clip_name(row: dict[str, Any]) -> str:
    stem = Path(row["audio"]).stem
    return f"{stem}@{float(row['t0']):.2f}" if "t0" in row else stem


def load_manifest(path: Path) -> list[Clip]:
    clips = []
    files: dict[Path, tuple[np.ndarray, int]] = {}  # turns of one call share the file
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        kind = row.get("kind", "read")
        if kind not in KINDS:
            raise ValueError(f"{row['audio']}: kind {kind!r} is not one of {', '.join(KINDS)}")
        wav = path.parent / row["audio"]
        if wav not in files:
            files[wav] = read_wav(wav)
        audio, rate = files[wav]
        clips.append(
            Clip(
                clip_name(row),
                resample(cut_turn(audio, rate, row), rate, 16_000),
                row["reference"],
                kind,
                row.get("source", ""),
            )
        )
    return clips


def decode_whole(decoder: WhisperDecoder, audio: np.ndarray, beam: int) -> tuple[str, float]:
    started = time.perf_counter()
    text = decoder.decode([DecodeRequest(audio, beam_size=beam)])[0].text
    return text, time.perf_counter() - started


async def decode_streaming(decoder: WhisperDecoder, audio: np.ndarray, settings: AsrSettings) -> tuple[str, float]:
    """The live path with a scheduler of its own: chunks of 20 ms, VAD, partials, finals."""
    scheduler = AsrScheduler(settings, lambda: decoder)
    await scheduler.start()
    out: asyncio.Queue[Transcript | None] = asyncio.Queue()
    transcriber = SpeakerTranscriber("eval", Speaker.AGENT, scheduler, VadSettings(), settings, out)
    padded = np.concatenate([audio, np.zeros(16_000, np.float32)])
    for i in range(0, len(padded), 320):
        await transcriber.push([AudioChunk("eval", Speaker.AGENT, padded[i : i + 320], i / 16_000)])
    await transcriber.finish()
    await scheduler.aclose()
    finals = []
    while not out.empty():
        item = out.get_nowait()
        if item is not None and item.final:
            finals.append(item.text)
    return "".join(finals), scheduler.stats.busy_s


def run_one(
    clip: Clip, condition: str, audio: np.ndarray, variant: Variant, decoder: WhisperDecoder, beam: int, mode: str
) -> Row:
    if mode == "whole":
        text, took = decode_whole(decoder, audio, beam)
    else:
        text, took = asyncio.run(
            decode_streaming(decoder, audio, variant.settings.model_copy(update={"beam_size": beam}))
        )
    setting = f"{variant.name} beam={beam}"
    return Row(
        clip.name,
        clip.kind,
        condition,
        mode,
        setting,
        variant.prompt,
        text,
        cer(text, clip.reference),
        len(audio) / 16_000,
        took,
    )


def evaluate(
    clips: list[Clip],
    setups: list[tuple[Variant, WhisperDecoder]],
    beams: list[int],
    modes: list[str],
    conditions: list[str],
) -> list[Row]:
    """Every clip × condition × variant (window, prompt) × beam × mode, in that nesting."""
    rows = []
    for clip in clips:
        for condition in conditions:
            audio = clip.audio if condition == "clean" else telephone_band(clip.audio)
            for variant, decoder in setups:
                for beam in beams:
                    rows += [
                        run_one(clip, condition, audio, variant, decoder, beam, m)
                        for m in ("whole", "streaming")
                        if m in modes
                    ]
    return rows


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.condition, r.mode, r.setting, r.prompt), []).append(r)
    return [
        {
            "kind": k[0],
            "condition": k[1],
            "mode": k[2],
            "setting": k[3],
            "prompt": k[4],
            "clips": len(g),
            "cer": round(sum(r.cer for r in g) / len(g), 3),
            "rtf": round(sum(r.rtf for r in g) / len(g), 3),
        }
        for k, g in sorted(groups.items())
    ]


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'clip':<20} {'cond':<9} {'mode':<9} {'setting':<26} {'prompt':<7} {'CER':>6} {'RTF':>6}  hypothesis"]
    for r in rows:
        lines.append(
            f"{r.clip:<20} {r.condition:<9} {r.mode:<9} {r.setting:<26} {r.prompt:<7} {r.cer:>6.3f} {r.rtf:>6.3f}  "
            f"{r.hypothesis}"
        )
    lines += [
        "",
        f"{'kind':<15} {'cond':<9} {'mode':<9} {'setting':<26} {'prompt':<7} {'clips':>5} {'CER':>6} {'RTF':>6}",
    ]
    for s in summarise(rows):
        lines.append(
            f"{s['kind']:<15} {s['condition']:<9} {s['mode']:<9} {s['setting']:<26} {s['prompt']:<7} {s['clips']:>5} "
            f"{s['cer']:>6.3f} {s['rtf']:>6.3f}"
        )
    return "\n".join(lines)
