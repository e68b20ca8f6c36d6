"""ASR accuracy and speed on real Mandarin recordings: CER by condition, decoding mode and setting.

Manifest (JSONL, paths relative to the manifest): ``{"audio", "reference", "kind", "source", "licence"}``, optionally
``"split"`` (dev / test: tune on dev only), ``"ci"`` (the CI subset), ``"t0"``, ``"t1"`` (seconds) and ``"channel"``
(0-based) to take one turn of a longer stereo file (default: the whole file, channels mixed). Conditions: ``clean``
(the file as is) and ``telephone`` (16 kHz → 8 kHz μ-law → 16 kHz, as a phone bridge delivers it). Modes:
``offline`` (the stock ``WhisperModel.transcribe`` of the whole clip: the baseline), ``whole`` (one decode with our
decoder), ``streaming`` (the live path's stages in-process, unpaced) and ``live`` (``live_eval``: a real server, a
real bridge, real-time pace). Prompts: ``none`` or ``domain`` (``initial_prompt`` = ``asr.prompt.DOMAIN_PROMPT``), to
weigh vocabulary gains against hallucination. Scoring: ``asr.scoring``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compliance_monitor.asr.decoder import DecodeRequest, WhisperDecoder
from compliance_monitor.asr.prompt import PROMPTS
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.asr.scoring import Clip, Scored, score
from compliance_monitor.asr.stream import SpeakerTranscriber
from compliance_monitor.audio.g711 import ulaw_decode, ulaw_encode
from compliance_monitor.audio.resample import float_to_pcm16, pcm16_to_float, resample
from compliance_monitor.audio.wavfile import read_audio
from compliance_monitor.config import AsrSettings, VadSettings
from compliance_monitor.messages import AudioChunk, Speaker, Transcript

KINDS = ("read", "conversational", "spontaneous", "telephone", "synthetic")


def telephone_band(audio: np.ndarray) -> np.ndarray:
    narrow = ulaw_decode(ulaw_encode(float_to_pcm16(resample(audio, 16_000, 8_000))))
    return resample(pcm16_to_float(narrow), 8_000, 16_000)


@dataclass(frozen=True)
class Variant:
    """One decoder setting under test: the finals' encoder window and the initial prompt (a name in ``PROMPTS``)."""

    window: int | None  # None: as served
    prompt: str
    settings: AsrSettings

    @property
    def name(self) -> str:
        return f"window={'served' if self.window is None else self.window}"


def make_variants(base: AsrSettings, windows: list[int] | None, prompts: list[str]) -> list[Variant]:
    """Windows × prompts: "served" = the configured ``initial_prompt``, "none" = no prompt, else ``PROMPTS``."""
    return [
        Variant(
            w,
            p,
            base.model_copy(
                update={
                    "final_encoder_window_frames": base.final_encoder_window_frames if w is None else w,
                    "initial_prompt": _prompt(base, p),
                }
            ),
        )
        for w in windows or [None]
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


def load_manifest(path: Path, split: str | None = None, ci_only: bool = False) -> list[Clip]:
    """The manifest's clips; ``split`` keeps rows of that ``"split"`` (dev / test), ``ci_only`` rows marked ``"ci"``."""
    clips = []
    files: dict[Path, tuple[np.ndarray, int]] = {}  # turns of one call share the file
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if (split and row.get("split") != split) or (ci_only and not row.get("ci")):
            continue
        kind = row.get("kind", "read")
        if kind not in KINDS:
            raise ValueError(f"{row['audio']}: kind {kind!r} is not one of {', '.join(KINDS)}")
        wav = path.parent / row["audio"]
        if wav not in files:
            files[wav] = read_audio(wav)
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
    window = decoder.settings.final_encoder_window_frames
    text = decoder.decode([DecodeRequest(audio, beam_size=beam, min_window=window)])[0].text
    return text, time.perf_counter() - started


async def decode_streaming(
    decoder: WhisperDecoder, audio: np.ndarray, settings: AsrSettings, vad: VadSettings | None = None
) -> tuple[str, float]:
    """The live path's stages in-process and unpaced (fast; ``live_eval`` goes through a real bridge)."""
    scheduler = AsrScheduler(settings, lambda: decoder)
    await scheduler.start()
    out: asyncio.Queue[Transcript | None] = asyncio.Queue()
    transcriber = SpeakerTranscriber("eval", Speaker.AGENT, scheduler, vad or VadSettings(), settings, out)
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
    clip: Clip,
    condition: str,
    audio: np.ndarray,
    variant: Variant,
    decoder: WhisperDecoder,
    beam: int,
    mode: str,
    vad: VadSettings | None = None,
) -> Scored:
    if mode == "whole":
        text, took = decode_whole(decoder, audio, beam)
    else:
        text, took = asyncio.run(
            decode_streaming(decoder, audio, variant.settings.model_copy(update={"beam_size": beam}), vad)
        )
    setting = f"{variant.name} beam={beam} prompt={variant.prompt}"
    return score(clip, condition, mode, text, setting, decode_s=[took])


def evaluate(
    clips: list[Clip],
    setups: list[tuple[Variant, WhisperDecoder]],
    beams: list[int],
    modes: list[str],
    conditions: list[str],
    vad: VadSettings | None = None,
) -> list[Scored]:
    """Every clip × condition × variant (window, prompt) × beam × mode, in that nesting."""
    rows = []
    for clip in clips:
        for condition in conditions:
            audio = condition_audio(clip, condition)
            for variant, decoder in setups:
                for beam in beams:
                    rows += [
                        run_one(clip, condition, audio, variant, decoder, beam, m, vad)
                        for m in ("whole", "streaming")
                        if m in modes
                    ]
    return rows


def condition_audio(clip: Clip, condition: str) -> np.ndarray:
    return clip.audio if condition == "clean" else telephone_band(clip.audio)
