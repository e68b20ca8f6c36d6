"""Unit tests for streaming Silero VAD and the speech segmenter (compliance_monitor.audio.vad).

Uses the real ONNX model bundled with faster-whisper and real AISHELL-1 speech.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from compliance_monitor.audio.vad import WINDOW, WINDOW_S, SegmentEvent, SpeechSegmenter, StreamingVad
from compliance_monitor.config import VadSettings
from tests.conftest import AISHELL, load_audio

pytestmark = pytest.mark.unit

RATE = 16_000
CHUNK = 320  # 20 ms, what the bridges deliver
UTTERANCE = "BAC009S0764W0121.wav"


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(RATE * seconds), dtype=np.float32)


def feed(segmenter: SpeechSegmenter, audio: np.ndarray, *, flush: bool = True) -> list[SegmentEvent]:
    events = [e for i in range(0, len(audio), CHUNK) for e in segmenter.push(audio[i : i + CHUNK])]
    if flush:
        events += list(segmenter.flush())
    return events


def segments(events: Iterable[SegmentEvent]) -> list[tuple[float, float]]:
    """Pair start/end events, checking that they alternate."""
    out, start = [], None
    for event in events:
        if event.kind == "start":
            assert start is None, "two starts without an end"
            start = event.t
        else:
            assert event.kind == "end"
            assert start is not None, "an end without a start"
            out.append((start, event.t))
            start = None
    assert start is None, "a start with no end"
    return out


def trimmed_speech(name: str) -> np.ndarray:
    """An AISHELL utterance without its leading/trailing silence (cut at VAD window edges)."""
    audio = load_audio(name)
    probs = StreamingVad().process(np.concatenate([audio, np.zeros((-len(audio)) % WINDOW, np.float32)]))
    speech = np.nonzero(probs > 0.5)[0]
    return audio[speech[0] * WINDOW : (speech[-1] + 1) * WINDOW]


class ScriptedVad:
    """Stands in for StreamingVad: one scripted probability per 512-sample window."""

    def __init__(self, probs: Iterable[float]) -> None:
        self._probs = list(probs)
        self._pending = 0

    def process(self, audio: np.ndarray) -> np.ndarray:
        self._pending += len(audio)
        n = min(self._pending // WINDOW, len(self._probs))
        self._pending -= n * WINDOW
        out, self._probs = self._probs[:n], self._probs[n:]
        return np.array(out, dtype=np.float32)


def scripted(probs: list[float], **settings: float) -> list[SegmentEvent]:
    seg = SpeechSegmenter(VadSettings(**settings))
    seg.vad = ScriptedVad(probs)  # type: ignore[assignment]
    return feed(seg, np.zeros(len(probs) * WINDOW, dtype=np.float32))


# --------------------------------------------------------------------------- StreamingVad


def test_streaming_vad_equals_batch_vad_exactly() -> None:
    speech = load_audio(UTTERANCE)
    audio = np.concatenate([speech, np.zeros((-len(speech)) % WINDOW + 4 * WINDOW, dtype=np.float32)])
    assert len(audio) % WINDOW == 0
    batch = np.asarray(get_vad_model()(audio.copy())).reshape(-1)  # the batch model writes into its input

    vad = StreamingVad()
    streamed = np.concatenate([vad.process(audio[i : i + CHUNK]) for i in range(0, len(audio), CHUNK)])

    assert len(streamed) == len(audio) // WINDOW == len(batch)
    np.testing.assert_array_equal(streamed, batch)
    assert streamed.max() > 0.9  # it is speech
    assert streamed[-4:].max() < 0.1  # and the padding is not


def test_streaming_vad_chunking_does_not_matter() -> None:
    audio = load_audio(UTTERANCE)[: 40 * WINDOW]
    one_go = StreamingVad().process(audio)
    vad = StreamingVad()
    odd = np.concatenate([vad.process(audio[i : i + 777]) for i in range(0, len(audio), 777)])
    np.testing.assert_array_equal(odd, one_go)


def test_streaming_vad_holds_partial_windows() -> None:
    vad = StreamingVad()
    assert len(vad.process(silence(0.02))) == 0  # 320 < 512 samples
    assert len(vad.process(silence(0.02))) == 1  # 640 samples: one window, 128 pending
    assert len(vad.process(np.zeros(WINDOW * 3 - 128, dtype=np.float32))) == 3


# --------------------------------------------------------------------------- SpeechSegmenter on real audio


@pytest.mark.parametrize("name", sorted(AISHELL))
def test_one_utterance_gives_one_segment(name: str) -> None:
    speech = load_audio(name)
    audio = np.concatenate([silence(1.0), speech, silence(1.5)])
    events = feed(SpeechSegmenter(VadSettings()), audio)
    assert [e.kind for e in events] == ["start", "end"]
    ((t0, t1),) = segments(events)
    assert 0.7 <= t0 <= 1.5
    assert 4.5 <= t1 <= 6.0
    assert t1 - t0 <= len(speech) / RATE + 0.5


@pytest.mark.parametrize(
    "make_audio",
    [
        pytest.param(lambda: silence(5.0), id="digital-silence"),
        pytest.param(
            lambda: (10 ** (-26 / 20) * np.random.default_rng(0).standard_normal(5 * RATE)).astype(np.float32),
            id="white-noise-26dBFS",
        ),
        pytest.param(
            lambda: (0.3 * np.sin(2 * np.pi * 50 * np.arange(5 * RATE) / RATE)).astype(np.float32),
            id="50Hz-hum",
        ),
    ],
)
def test_non_speech_gives_no_events(make_audio) -> None:  # type: ignore[no-untyped-def]
    seg = SpeechSegmenter(VadSettings())
    assert feed(seg, make_audio()) == []
    assert not seg.in_speech
    assert seg.now == pytest.approx(5 * RATE // WINDOW * WINDOW_S)


def test_long_speech_is_cut_at_max_segment() -> None:
    # AISHELL utterances trimmed of their own silences and butted together: 15+ s with no pause.
    speech = np.concatenate([trimmed_speech(name) for name in sorted(AISHELL) for _ in range(3)][:5])
    duration = len(speech) / RATE
    assert duration > 15
    events = feed(SpeechSegmenter(VadSettings(max_segment_s=6)), speech)
    segs = segments(events)
    assert len(segs) >= 3
    for (_, end), (start, _) in zip(segs, segs[1:], strict=False):
        assert start == pytest.approx(end)  # a cut: end followed immediately by a start
    for t0, t1 in segs:
        assert t1 - t0 <= 6.0 + WINDOW_S  # the cap is counted in whole 32 ms windows
        assert t1 > t0
    assert segs[-1][1] == pytest.approx(duration, abs=WINDOW_S)


def test_flush_closes_an_open_segment() -> None:
    seg = SpeechSegmenter(VadSettings())
    audio = np.concatenate([silence(0.5), trimmed_speech(UTTERANCE)])
    events = feed(seg, audio, flush=False)
    assert [e.kind for e in events] == ["start"]
    assert seg.in_speech
    tail = list(seg.flush())
    assert [e.kind for e in tail] == ["end"]
    assert tail[0].t == pytest.approx(seg.now)
    assert not seg.in_speech
    assert list(seg.flush()) == []


def test_segments_never_end_before_they_start_when_a_cut_lands_in_a_pause() -> None:
    # Speech, then silence: max_segment_s expires during the first few hundred ms of silence,
    # before min_silence_ms has passed. The forced cut must not open a new segment whose end
    # (speech end + pad, computed from the silence run carried over) lies before its start.
    speech = trimmed_speech(UTTERANCE)
    audio = np.concatenate([silence(0.5), speech, silence(2.0)])
    for max_segment_s in (3.4, 3.5, 3.6, 3.7):
        events = feed(SpeechSegmenter(VadSettings(max_segment_s=max_segment_s)), audio)
        for t0, t1 in segments(events):
            assert t1 >= t0, f"max_segment_s={max_segment_s}: segment ({t0:.3f}, {t1:.3f}) ends before it starts"


# --------------------------------------------------------------------------- SpeechSegmenter logic (scripted VAD)


def test_scripted_hysteresis_and_padding() -> None:
    # 10 windows of silence, 30 of speech, 5 uncertain (between neg_threshold and threshold), 30 silence.
    probs = [0.0] * 10 + [0.9] * 30 + [0.4] * 5 + [0.0] * 30
    events = scripted(probs)
    ((t0, t1),) = segments(events)
    assert t0 == pytest.approx(10 * WINDOW_S - 0.2)  # speech start minus speech_pad_ms
    # 0.4 is above neg_threshold (0.35): the uncertain windows count as speech.
    assert t1 == pytest.approx(45 * WINDOW_S + 0.2)


def test_scripted_short_blip_is_not_speech() -> None:
    min_speech = round(0.25 / WINDOW_S)
    assert scripted([0.0] * 10 + [0.9] * (min_speech - 1) + [0.0] * 40) == []
    assert len(segments(scripted([0.0] * 10 + [0.9] * min_speech + [0.0] * 40))) == 1


def test_scripted_short_pause_does_not_split() -> None:
    min_silence = round(0.5 / WINDOW_S)
    probs = [0.9] * 20 + [0.0] * (min_silence - 1) + [0.9] * 20 + [0.0] * 40
    assert len(segments(scripted(probs))) == 1


def test_scripted_cut_during_a_pause_keeps_segments_ordered() -> None:
    # Speech for 100 windows, then silence. max_segment_s = 105 windows, so the cap is hit
    # 5 windows into the silence (min_silence is 16 windows).
    probs = [0.9] * 100 + [0.0] * 60
    events = scripted(probs, max_segment_s=105 * WINDOW_S, speech_pad_ms=0)
    for t0, t1 in segments(events):
        assert t1 >= t0, f"segment {t0:.3f}-{t1:.3f} ends before it starts: {events}"


def test_scripted_cut_during_a_pause_opens_no_silent_segment() -> None:
    # Same script: the speaker has stopped; the cap must close the segment, not open a new one
    # that holds nothing but silence (whisper hallucinates text on silence).
    probs = [0.9] * 100 + [0.0] * 60
    events = scripted(probs, max_segment_s=105 * WINDOW_S, speech_pad_ms=0)
    assert [e.kind for e in events] == ["start", "end"], events


def test_scripted_onset_reaches_back_over_the_soft_first_syllable() -> None:
    # VAD is unsure (0.4) for 5 windows before it is sure: the segment starts where the speech began.
    probs = [0.0] * 20 + [0.4] * 5 + [0.9] * 30 + [0.0] * 30
    ((t0, _),) = segments(scripted(probs, speech_pad_ms=0))
    assert t0 == pytest.approx(20 * WINDOW_S)


def test_scripted_short_word_before_a_pause_opens_the_segment() -> None:
    # 喂 (4 windows: too short to start a segment alone), a 0.3 s pause, then the sentence.
    probs = [0.0] * 20 + [0.9] * 4 + [0.0] * 9 + [0.9] * 30 + [0.0] * 30
    ((t0, _),) = segments(scripted(probs, speech_pad_ms=0))
    assert t0 == pytest.approx(20 * WINDOW_S)
    # ... but not across a pause long enough to end a segment, nor beyond the look-back
    probs = [0.0] * 20 + [0.9] * 4 + [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    ((t0, _),) = segments(scripted(probs, speech_pad_ms=0))
    assert t0 == pytest.approx(44 * WINDOW_S)
    probs = [0.0] * 20 + [0.4] * 60 + [0.9] * 30 + [0.0] * 30
    ((t0, _),) = segments(scripted(probs, speech_pad_ms=0, onset_lookback_ms=320))
    assert t0 == pytest.approx(70 * WINDOW_S)


def test_scripted_long_turn_ends_at_a_short_pause() -> None:
    # 10 s of speech with a 0.26 s breath at 9 s: one segment ending at the breath, then the rest.
    probs = [0.9] * 281 + [0.0] * 8 + [0.9] * 30 + [0.0] * 30
    segs = segments(scripted(probs, speech_pad_ms=0, split_after_s=8.0, split_pause_ms=200))
    assert [round(t / WINDOW_S) for seg in segs for t in seg] == [0, 281, 289, 319]
    # before split_after_s the same breath does not split the turn
    probs = [0.9] * 100 + [0.0] * 8 + [0.9] * 30 + [0.0] * 30
    assert len(segments(scripted(probs, speech_pad_ms=0, split_after_s=8.0))) == 1


def test_scripted_hard_cap_cuts_at_the_quietest_moment() -> None:
    # 7 s of unbroken speech with one dip (0.55) at window 190; cap 6 s (188 windows): the cut lands on the dip.
    probs = [0.9] * 219
    probs[185] = 0.55
    probs += [0.0] * 30
    segs = segments(scripted(probs, speech_pad_ms=0, max_segment_s=6.0, cut_search_ms=1500, split_after_s=30))
    assert len(segs) == 2
    (a0, a1), (b0, b1) = segs
    assert a0 == 0.0 and a1 == b0 == pytest.approx(186 * WINDOW_S)
    assert b1 == pytest.approx(219 * WINDOW_S)
