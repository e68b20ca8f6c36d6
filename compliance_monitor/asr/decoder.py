"""Whisper decoding of short speech segments, batched, with the hallucination guards.

We call CTranslate2's ``generate`` directly instead of ``WhisperModel.transcribe``: our segments are
already cut by VAD (≤ 15 s), so the 30 s sliding-window machinery is not needed, we can batch
segments from several calls into one ``generate``, and we can shorten the encoder window (the
biggest CPU lever measured here: 3–4× faster on short segments). Everything here is blocking and
runs in the ASR worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, replace

import numpy as np

from compliance_monitor.asr.prompt import echoes_prompt, inside_prompt, prompt_words
from compliance_monitor.config import AsrSettings

log = logging.getLogger(__name__)

FULL_WINDOW = 3000  # mel frames = 30 s
FRAMES_PER_SECOND = 100
HOP = 160  # samples per mel frame at 16 kHz
TOKENS_PER_SECOND = 12
MIN_NEW_TOKENS = 16
# Mandarin runs 3-5 characters a second; under 1 a second over 1.5 s of speech means whisper stopped early.
MIN_CHARS_PER_S = 1.0
MIN_TRUNCATION_CHECK_S = 1.5
# A single prompt word as the whole output is only believed when the audio looked like speech.
PROMPT_ECHO_NO_SPEECH = 0.3


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    audio: np.ndarray  # float32, 16 kHz
    beam_size: int
    prompt_text: str | None = None  # previous final of the same speaker, for context
    fallback: bool = True  # a final: retried (and rescued) when the guards reject it; partials are not
    min_window: int | None = None  # encoder window floor in mel frames; None: asr.encoder_window_frames, 0: 30 s

    @property
    def max_new_tokens(self) -> int:
        """Mandarin runs ~5 syllables/s; cap tokens by duration so a hallucination cannot run on."""
        return int(MIN_NEW_TOKENS + TOKENS_PER_SECOND * len(self.audio) / 16_000)


@dataclass(frozen=True, slots=True)
class DecodeResult:
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    rejected: str | None  # why the text was discarded (silence, repetition, low confidence, prompt echo)
    hypothesis: str = ""  # what the model said, kept even when the guards discard it (logs, rescue)
    retries: tuple[str, ...] = ()  # how the one re-decode differed: "full_window", "no_prompt", "no_context"
    rescued: str | None = None  # a rejected final kept anyway: "low_confidence" (best hypothesis of two decodes)
    window: int = FULL_WINDOW  # encoder window it was decoded in (mel frames)


RETRY_ON = frozenset({"repetition", "low_confidence", "prompt_echo"})
# Kept as the best hypothesis when both decodes fall short on confidence alone: speech VAD found and whisper
# read, just unsure. Silence (no_speech), loops (repetition) and prompt read-back are never kept.
RESCUABLE = frozenset({"low_confidence"})


def _truncated(result: DecodeResult, request: DecodeRequest) -> bool:
    """A final far shorter than its audio: whisper ended early (one character for 2.5 s of speech)."""
    seconds = len(request.audio) / 16_000
    return (
        result.rejected is None and seconds >= MIN_TRUNCATION_CHECK_S and len(result.text) < seconds * MIN_CHARS_PER_S
    )


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / max(1, len(zlib.compress(raw)))


def pick_device(setting: str) -> tuple[str, str]:
    """('cuda', 'float16') when a GPU is visible and allowed, else ('cpu', 'int8')."""
    import ctranslate2

    if setting in {"auto", "cuda"} and ctranslate2.get_cuda_device_count() > 0:
        return "cuda", "float16"
    if setting == "cuda":
        raise RuntimeError("CM_ASR__DEVICE=cuda but CTranslate2 sees no CUDA device")
    return "cpu", "int8"


class WhisperDecoder:
    def __init__(self, model_dir: str, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.settings = settings
        self._prompt_words = prompt_words(settings.initial_prompt)
        self.device, default_compute = pick_device(settings.device)
        compute_type = default_compute if settings.compute_type == "default" else settings.compute_type
        started = time.perf_counter()
        self.model = WhisperModel(
            model_dir,
            device=self.device,
            compute_type=compute_type,
            cpu_threads=settings.cpu_threads,
            local_files_only=True,
        )
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=settings.language,
        )
        self._suppress = list(self.tokenizer.non_speech_tokens) + [
            self.tokenizer.transcribe,
            self.tokenizer.translate,
            self.tokenizer.sot,
            self.tokenizer.sot_prev,
            self.tokenizer.sot_lm,
            self.tokenizer.no_speech,
        ]
        self._suppress = sorted(set(self._suppress))
        log.info(
            "loaded Whisper from %s on %s/%s in %.1fs",
            model_dir,
            self.device,
            compute_type,
            time.perf_counter() - started,
        )

    # ------------------------------------------------------------------ batching

    def _window(self, frames: int, floor: int | None = None) -> int:
        floor = self.settings.encoder_window_frames if floor is None else floor
        if floor <= 0:
            return FULL_WINDOW
        # Leave ~1 s of padding after the speech: whisper needs to "see" the end to stop.
        wanted = -(-(frames + FRAMES_PER_SECOND) // 100) * 100
        return min(FULL_WINDOW, max(floor, wanted))

    def _mel(self, audio: np.ndarray, window: int) -> np.ndarray:
        """Log-mel frames of the audio followed by digital silence up to ``window`` frames, as stock whisper pads
        (zero-valued mel frames are not silence to the model: they read as a quiet hiss, and cost accuracy)."""
        audio = audio[: window * HOP]
        padded = np.concatenate([audio, np.zeros(window * HOP - len(audio), np.float32)])
        return self.model.feature_extractor(padded)[:, :window]

    def _features(self, audios: list[np.ndarray], window: int | None = None) -> np.ndarray:
        window = window or max(self._window(len(a) // HOP) for a in audios)
        return np.stack([self._mel(a, window) for a in audios]).astype(np.float32)

    def _prompt(self, prompt_text: str | None, with_domain_prompt: bool = True) -> list[int]:
        prompt: list[int] = []
        domain = self.settings.initial_prompt if with_domain_prompt else None
        context = " ".join(t for t in (domain, prompt_text) if t)
        if context:
            tokens = self.tokenizer.encode(" " + context.strip())[-(self.model.max_length // 2 - 1) :]
            prompt = [self.tokenizer.sot_prev, *tokens]
        return [*prompt, *self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]

    def decode(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        """Decode a batch (beam search at temperature 0), then one retry for each final the guards rejected."""
        if not requests:
            return []
        import ctranslate2

        # CTranslate2 runs one beam size per call, and a batch shares one window: group by both.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.beam_size, self._window(len(r.audio) // HOP, r.min_window)), []).append(i)
        results: list[DecodeResult | None] = [None] * len(requests)
        for (beam, window), idx in sorted(groups.items()):
            features = ctranslate2.StorageView.from_array(self._features([requests[i].audio for i in idx], window))
            for i, res in zip(idx, self._generate(features, [requests[i] for i in idx], beam), strict=True):
                results[i] = replace(res, window=window)
        for i, res in enumerate(results):
            assert res is not None
            request = requests[i]
            if request.fallback and (res.rejected in RETRY_ON or _truncated(res, request)):
                results[i] = self._retry(request, res)
        return [r for r in results if r is not None]

    def _retry(self, request: DecodeRequest, first: DecodeResult) -> DecodeResult:
        """One more decode of a final the first pass got wrong: the stock 30 s window, no prompt, no context.

        With a short window whisper-base sometimes stops after one character (身份证后四位是… → 采) or loses
        confidence; the same audio in the 30 s window it was trained on decodes fine (measured on the dev calls'
        turns). On real conversational speech a domain prompt is sometimes read back instead of the speech
        (电:贷款逾期、欠款、): the retry goes without it. One retry at most, so a final costs at most two decodes
        (stock whisper's ladder of temperature re-decodes took a 5 s segment to 4.3 s on this machine).
        """
        import ctranslate2

        retries = tuple(
            name
            for name, differs in (
                ("full_window", first.window < FULL_WINDOW),
                ("no_prompt", bool(self.settings.initial_prompt)),
                ("no_context", bool(request.prompt_text)),
            )
            if differs
        )
        if not retries:  # the first decode was already the plain one: nothing else to try
            return _rescue(first, None, ())
        bare = replace(request, prompt_text=None)
        features = ctranslate2.StorageView.from_array(self._features([request.audio], FULL_WINDOW))
        retry = self._generate(features, [bare], request.beam_size, with_domain_prompt=False)[0]
        retry = replace(retry, window=FULL_WINDOW)
        if retry.rejected is None and (first.rejected is not None or len(retry.text) > len(first.text)):
            return replace(retry, retries=retries)
        if first.rejected is None:
            return replace(first, retries=retries)
        return _rescue(first, retry, retries)

    def _generate(
        self,
        features: object,
        requests: list[DecodeRequest],
        beam: int,
        *,
        with_domain_prompt: bool = True,
    ) -> list[DecodeResult]:
        prompts = [self._prompt(r.prompt_text, with_domain_prompt) for r in requests]
        max_length = max(len(p) + r.max_new_tokens for p, r in zip(prompts, requests, strict=True))
        outputs = self.model.model.generate(
            features,
            prompts,
            length_penalty=1.0,
            max_length=min(self.model.max_length, max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            beam_size=beam,
            patience=1.0,
        )
        return [self._judge(out, with_domain_prompt) for out in outputs]

    def _judge(self, out: object, with_domain_prompt: bool = True) -> DecodeResult:
        tokens = out.sequences_ids[0]  # type: ignore[attr-defined]
        score = out.scores[0]  # type: ignore[attr-defined]
        no_speech = float(out.no_speech_prob)  # type: ignore[attr-defined]
        avg_logprob = score * len(tokens) / (len(tokens) + 1)
        text = self.tokenizer.decode(tokens).strip()
        ratio = compression_ratio(text)
        s = self.settings
        rejected = None
        if no_speech > s.no_speech_threshold and avg_logprob < s.log_prob_threshold:
            rejected = "no_speech"
        elif ratio > s.compression_ratio_threshold:
            rejected = "repetition"
        elif avg_logprob < s.log_prob_threshold:
            rejected = "low_confidence"
        elif not text:
            rejected = "empty"
        elif with_domain_prompt and self._echoes(text, no_speech):
            rejected = "prompt_echo"  # 法院、法院 or 银行卡 on noise: the domain prompt read back
        return DecodeResult(text if rejected is None else "", avg_logprob, no_speech, ratio, rejected, text)

    def _echoes(self, text: str, no_speech: float) -> bool:
        """The prompt read back: a stretch of it verbatim, or nothing but its words. A false alarm costs one
        re-decode without the prompt (``_retry``), not the words."""
        if inside_prompt(text, self.settings.initial_prompt):
            return True
        echoed = echoes_prompt(text, self._prompt_words)
        return bool(echoed) and (echoed > 1 or no_speech > PROMPT_ECHO_NO_SPEECH)

    def warm_up(self) -> None:
        """One decode of silence so the first real call does not pay for lazy initialisation."""
        self.decode([DecodeRequest(np.zeros(16_000, dtype=np.float32), beam_size=1)])


def _rescue(first: DecodeResult, retry: DecodeResult | None, retries: tuple[str, ...]) -> DecodeResult:
    """The guards rejected every decode. Keep the most confident hypothesis if confidence was all they lacked and
    the last decode too heard words (as stock whisper keeps its last reading once its fallbacks run out); when it
    calls the audio silence, a loop or the prompt read back, nothing is kept."""
    last = retry or first
    usable = [r for r in (first, retry) if r is not None and r.rejected in RESCUABLE and r.hypothesis]
    if last.rejected not in RESCUABLE or not usable:
        return replace(first, retries=retries)
    best = max(usable, key=lambda r: r.avg_logprob)
    return replace(best, text=best.hypothesis, rejected=None, retries=retries, rescued=best.rejected)
