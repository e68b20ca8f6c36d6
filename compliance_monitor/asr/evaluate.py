"""ASR accuracy and speed on real Mandarin recordings: CER by condition, decoding mode and setting.

Manifest (JSONL, paths relative to the manifest): ``{"audio", "reference", "kind": "read"|"conversational",
"source", "licence"}``. Conditions: ``clean`` (the file as is) and ``telephone`` (16 kHz → 8 kHz μ-law →
16 kHz, as every bridge delivers it). Modes: ``whole`` (one decode of the clip) and ``streaming`` (the live
path: 20 ms chunks → VAD → partials and finals, finals joined). CER is computed after the normalisation every
report uses: 繁→简, full/half width, numerals as digits, punctuation and spaces dropped.
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
    hypothesis: str
    cer: float
    audio_s: float
    decode_s: float

    @property
    def rtf(self) -> float:
        return self.decode_s / self.audio_s if self.audio_s else 0.0


def load_manifest(path: Path) -> list[Clip]:
    clips = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        audio, rate = read_wav(path.parent / row["audio"])
        mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
        clips.append(
            Clip(
                Path(row["audio"]).stem,
                resample(mono, rate, 16_000),
                row["reference"],
                row.get("kind", "read"),
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


def evaluate(
    clips: list[Clip],
    decoders: dict[str, WhisperDecoder],
    settings: dict[str, AsrSettings],
    beams: list[int],
    modes: list[str],
    conditions: list[str],
) -> list[Row]:
    rows = []
    for clip in clips:
        for condition in conditions:
            audio = clip.audio if condition == "clean" else telephone_band(clip.audio)
            for name, decoder in decoders.items():
                for beam in beams:
                    setting = f"{name} beam={beam}"
                    if "whole" in modes:
                        text, took = decode_whole(decoder, audio, beam)
                        rows.append(
                            Row(
                                clip.name,
                                clip.kind,
                                condition,
                                "whole",
                                setting,
                                text,
                                cer(text, clip.reference),
                                len(audio) / 16_000,
                                took,
                            )
                        )
                    if "streaming" in modes:
                        s = settings[name].model_copy(update={"beam_size": beam})
                        text, took = asyncio.run(decode_streaming(decoder, audio, s))
                        rows.append(
                            Row(
                                clip.name,
                                clip.kind,
                                condition,
                                "streaming",
                                setting,
                                text,
                                cer(text, clip.reference),
                                len(audio) / 16_000,
                                took,
                            )
                        )
    return rows


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.condition, r.mode, r.setting), []).append(r)
    return [
        {
            "kind": k[0],
            "condition": k[1],
            "mode": k[2],
            "setting": k[3],
            "clips": len(g),
            "cer": round(sum(r.cer for r in g) / len(g), 3),
            "rtf": round(sum(r.rtf for r in g) / len(g), 3),
        }
        for k, g in sorted(groups.items())
    ]


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'clip':<20} {'cond':<9} {'mode':<9} {'setting':<26} {'CER':>6} {'RTF':>6}  hypothesis"]
    for r in rows:
        lines.append(
            f"{r.clip:<20} {r.condition:<9} {r.mode:<9} {r.setting:<26} {r.cer:>6.3f} {r.rtf:>6.3f}  {r.hypothesis}"
        )
    lines += ["", f"{'kind':<15} {'cond':<9} {'mode':<9} {'setting':<26} {'clips':>5} {'CER':>6} {'RTF':>6}"]
    for s in summarise(rows):
        lines.append(
            f"{s['kind']:<15} {s['condition']:<9} {s['mode']:<9} {s['setting']:<26} {s['clips']:>5} "
            f"{s['cer']:>6.3f} {s['rtf']:>6.3f}"
        )
    return "\n".join(lines)
