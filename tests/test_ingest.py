"""Unit tests for the bridge protocol parsers (compliance_monitor.ingest.twilio / .pcm), no server."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from compliance_monitor.audio.g711 import ulaw_encode
from compliance_monitor.ingest.base import CloseCode, ProtocolError
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted, Speaker

pytestmark = pytest.mark.unit

CALL_SID = "CA0123456789abcdef0123456789abcdef"
STREAM_SID = "MZ0123456789abcdef0123456789abcdef"
FRAME = 160  # 20 ms of μ-law at 8 kHz


# --------------------------------------------------------------------------- Twilio helpers


def tone(n: int, freq: float, rate: int = 8000, amp: int = 8000, offset: int = 0) -> np.ndarray:
    t = (np.arange(n) + offset) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def ulaw_payload(pcm: np.ndarray) -> str:
    return base64.b64encode(ulaw_encode(pcm)).decode()


def twilio_start(
    seq: int = 1, tracks: list[str] | None = None, params: dict[str, Any] | None = None, **fmt: Any
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": STREAM_SID,
            "start": {
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "accountSid": "AC123",
                "tracks": tracks if tracks is not None else ["inbound", "outbound"],
                "customParameters": params if params is not None else {"agent_id": "agent-7"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt},
            },
        }
    )


def twilio_media(seq: int, track: str, chunk: int, timestamp_ms: int, pcm: np.ndarray, **extra: Any) -> str:
    media = {"track": track, "chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": ulaw_payload(pcm)}
    media.update(extra)
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": STREAM_SID, "media": media})


def twilio_event(event: str, seq: int | None = None, **body: Any) -> str:
    msg: dict[str, Any] = {"event": event, "streamSid": STREAM_SID, **body}
    if seq is not None:
        msg["sequenceNumber"] = str(seq)
    return json.dumps(msg)


def started_twilio(**kwargs: Any) -> TwilioStreamParser:
    parser = TwilioStreamParser()
    parser.feed_text(twilio_event("connected", protocol="Call", version="1.0.0"))
    parser.feed_text(twilio_start(**kwargs))
    return parser


def protocol_error(fn: Any, *args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------- Twilio: the happy path


def test_twilio_full_call() -> None:
    parser = TwilioStreamParser()
    out: list[Any] = []
    out += parser.feed_text(twilio_event("connected", protocol="Call", version="1.0.0"))
    out += parser.feed_text(twilio_start(seq=1, params={"agent_id": "agent-7", "agent_track": "outbound"}))
    n_frames = 25
    inbound = tone(FRAME * n_frames, 300)
    outbound = tone(FRAME * n_frames, 700)
    seq = 2
    for i in range(n_frames):
        for track, pcm in (("inbound", inbound), ("outbound", outbound)):
            out += parser.feed_text(twilio_media(seq, track, i + 1, 20 * i, pcm[i * FRAME : (i + 1) * FRAME]))
            seq += 1
        if i == 10:
            out += parser.feed_text(twilio_event("mark", seq, mark={"name": "greeting-done"}))
            out += parser.feed_text(twilio_event("dtmf", seq + 1, dtmf={"track": "inbound_track", "digit": "5"}))
            seq += 2
    out += parser.feed_text(twilio_event("stop", seq, stop={"accountSid": "AC123", "callSid": CALL_SID}))

    started, *chunks, ended = out
    assert isinstance(started, CallStarted)
    assert started.call_id == CALL_SID
    assert started.agent_id == "agent-7"
    assert started.bridge == "twilio"
    assert started.speakers == (Speaker.CUSTOMER, Speaker.AGENT)
    assert started.metadata["stream_sid"] == STREAM_SID
    assert started.metadata["tracks"] == ["inbound", "outbound"]

    assert isinstance(ended, CallEnded)
    assert ended.call_id == CALL_SID
    assert parser.ended
    assert parser.marks == ["greeting-done"]
    assert parser.dtmf == ["5"]

    assert all(isinstance(c, AudioChunk) and c.call_id == CALL_SID for c in chunks)
    assert len(chunks) == 2 * n_frames
    by_speaker = {sp: [c for c in chunks if c.speaker is sp] for sp in Speaker}
    for speaker_chunks in by_speaker.values():
        assert len(speaker_chunks) == n_frames
        assert [c.t for c in speaker_chunks] == pytest.approx([0.02 * i for i in range(n_frames)])
        assert all(c.pcm.dtype == np.float32 for c in speaker_chunks)
        lengths = [len(c.pcm) for c in speaker_chunks]
        assert all(n == 2 * FRAME for n in lengths[1:])  # 160 μ-law samples → 320 at 16 kHz
        delay = 2 * FRAME - lengths[0]
        assert 0 < delay < 40  # the resampler holds back ~1.4 ms on the first chunk only
        assert sum(lengths) == 2 * FRAME * n_frames - delay

    # The right audio went to the right speaker: compare the dominant frequency.
    for speaker, freq in ((Speaker.CUSTOMER, 300), (Speaker.AGENT, 700)):
        audio = np.concatenate([c.pcm for c in by_speaker[speaker]])
        spectrum = np.abs(np.fft.rfft(audio))
        assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(freq, abs=5)
        assert 0.2 < np.abs(audio).max() < 0.3  # amplitude 8000 / 32768


def test_twilio_agent_track_inbound_flips_speakers() -> None:
    parser = TwilioStreamParser()
    (started,) = parser.feed_text(twilio_start(params={"agent_id": "a1", "agent_track": "inbound"}))
    assert started.speakers == (Speaker.AGENT, Speaker.CUSTOMER)
    (chunk,) = parser.feed_text(twilio_media(2, "inbound", 1, 0, tone(FRAME, 300)))
    assert chunk.speaker is Speaker.AGENT
    (chunk,) = parser.feed_text(twilio_media(3, "outbound", 1, 0, tone(FRAME, 300)))
    assert chunk.speaker is Speaker.CUSTOMER


def test_twilio_defaults_single_inbound_track_and_no_agent_id() -> None:
    parser = TwilioStreamParser()
    (started,) = parser.feed_text(twilio_start(tracks=[], params={}))
    assert started.agent_id is None
    assert started.speakers == (Speaker.CUSTOMER,)  # only inbound; the agent side is not streamed


def test_twilio_timestamp_sets_chunk_time_and_keeps_gaps() -> None:
    parser = started_twilio()
    (a,) = parser.feed_text(twilio_media(2, "inbound", 1, 0, tone(FRAME, 300)))
    (b,) = parser.feed_text(twilio_media(3, "inbound", 2, 1500, tone(FRAME, 300)))  # 1.5 s later
    assert (a.t, b.t) == (0.0, 1.5)


def test_twilio_without_timestamp_counts_samples() -> None:
    parser = started_twilio()
    frame = {"track": "outbound", "payload": ulaw_payload(tone(FRAME, 300))}
    times = [parser.feed_text(json.dumps({"event": "media", "media": frame}))[0].t for _ in range(3)]
    assert times == pytest.approx([0.0, 0.02, 0.04])


def test_twilio_alaw_encoding() -> None:
    parser = started_twilio(encoding="audio/x-alaw")
    payload = base64.b64encode(bytes([0xD5] * FRAME)).decode()  # A-law +8
    (chunk,) = parser.feed_text(twilio_event("media", 2, media={"track": "inbound", "payload": payload}))
    assert np.allclose(chunk.pcm[50:], 8 / 32768, atol=1e-5)


# --------------------------------------------------------------------------- Twilio: errors


def test_twilio_malformed_json() -> None:
    err = protocol_error(TwilioStreamParser().feed_text, '{"event": "start", ')
    assert err.code == "malformed_json"
    assert err.close_code == CloseCode.INVALID_PAYLOAD == 1007


@pytest.mark.parametrize("text", ['["start"]', '"start"', "42", "null", '{"no_event": 1}', '{"event": 5}'])
def test_twilio_non_object_json(text: str) -> None:
    err = protocol_error(TwilioStreamParser().feed_text, text)
    assert err.close_code == CloseCode.INVALID_PAYLOAD


def test_twilio_unknown_event() -> None:
    err = protocol_error(started_twilio().feed_text, twilio_event("clear", 2))
    assert err.code == "unknown_event"
    assert err.close_code == CloseCode.POLICY_VIOLATION == 1008


def test_twilio_media_before_start() -> None:
    err = protocol_error(TwilioStreamParser().feed_text, twilio_media(1, "inbound", 1, 0, tone(FRAME, 300)))
    assert err.code == "media_before_start"
    assert err.close_code == CloseCode.POLICY_VIOLATION


def test_twilio_stop_before_start() -> None:
    err = protocol_error(TwilioStreamParser().feed_text, twilio_event("stop", 1))
    assert err.code == "stop_before_start"
    assert err.close_code == CloseCode.POLICY_VIOLATION


def test_twilio_duplicate_start() -> None:
    err = protocol_error(started_twilio().feed_text, twilio_start(seq=2))
    assert err.code == "duplicate_start"
    assert err.close_code == CloseCode.POLICY_VIOLATION


@pytest.mark.parametrize("payload", ["not base64!!", "AAA", "////\n"])
def test_twilio_bad_base64(payload: str) -> None:
    msg = twilio_event("media", 2, media={"track": "inbound", "payload": payload})
    err = protocol_error(started_twilio().feed_text, msg)
    assert err.code == "bad_base64"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


def test_twilio_missing_payload() -> None:
    err = protocol_error(started_twilio().feed_text, twilio_event("media", 2, media={"track": "inbound"}))
    assert err.close_code == CloseCode.INVALID_PAYLOAD


def test_twilio_unknown_track() -> None:
    parser = started_twilio(tracks=["inbound"])
    err = protocol_error(parser.feed_text, twilio_media(2, "outbound", 1, 0, tone(FRAME, 300)))
    assert err.code == "unknown_track"
    assert err.close_code == CloseCode.POLICY_VIOLATION


@pytest.mark.parametrize(("seq", "code"), [(2, "duplicate_sequence"), (1, "out_of_order_sequence")])
def test_twilio_duplicate_or_out_of_order_sequence(seq: int, code: str) -> None:
    parser = started_twilio()  # start was sequenceNumber 1
    parser.feed_text(twilio_media(2, "inbound", 1, 0, tone(FRAME, 300)))
    err = protocol_error(parser.feed_text, twilio_media(seq, "inbound", 2, 20, tone(FRAME, 300)))
    assert err.code == code
    assert err.close_code == CloseCode.POLICY_VIOLATION


def test_twilio_sequence_gap() -> None:
    parser = TwilioStreamParser(max_sequence_gap=10)
    parser.feed_text(twilio_start(seq=1))
    parser.feed_text(twilio_media(11, "inbound", 1, 0, tone(FRAME, 300)))  # a gap of exactly 10 is fine
    err = protocol_error(parser.feed_text, twilio_media(22, "inbound", 2, 20, tone(FRAME, 300)))
    assert err.code == "sequence_gap"
    assert err.close_code == CloseCode.POLICY_VIOLATION


@pytest.mark.parametrize("seq", ["abc", "", None, [1]])
def test_twilio_non_numeric_sequence_number(seq: Any) -> None:
    msg = json.dumps({"event": "media", "sequenceNumber": seq, "media": {"track": "inbound", "payload": ""}})
    err = protocol_error(started_twilio().feed_text, msg)
    assert err.code == "bad_sequence"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize("chunk", [1, 2])
def test_twilio_out_of_order_chunk(chunk: int) -> None:
    parser = started_twilio()
    parser.feed_text(twilio_media(2, "inbound", 2, 20, tone(FRAME, 300)))
    parser.feed_text(twilio_media(3, "outbound", 1, 0, tone(FRAME, 300)))  # chunks count per track
    err = protocol_error(parser.feed_text, twilio_media(4, "inbound", chunk, 40, tone(FRAME, 300)))
    assert err.code == "out_of_order_chunk"
    assert err.close_code == CloseCode.POLICY_VIOLATION


@pytest.mark.parametrize("encoding", ["audio/l16", "audio/opus", "pcm"])
def test_twilio_unsupported_encoding(encoding: str) -> None:
    err = protocol_error(TwilioStreamParser().feed_text, twilio_start(encoding=encoding))
    assert err.code == "unsupported_encoding"
    assert err.close_code == CloseCode.UNSUPPORTED_DATA == 1003


def test_twilio_unsupported_rate() -> None:
    err = protocol_error(TwilioStreamParser().feed_text, twilio_start(sampleRate=44100))
    assert err.close_code == CloseCode.UNSUPPORTED_DATA


@pytest.mark.parametrize(
    ("tracks", "params"),
    [(["inbound", "both"], {}), (["inbound"], {"agent_track": "agent"})],
)
def test_twilio_bad_tracks(tracks: list[str], params: dict[str, str]) -> None:
    err = protocol_error(TwilioStreamParser().feed_text, twilio_start(tracks=tracks, params=params))
    assert err.code == "bad_tracks"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


def test_twilio_binary_frame() -> None:
    err = protocol_error(started_twilio().feed_bytes, b"\x00\x01")
    assert err.code == "binary_frame"
    assert err.close_code == CloseCode.UNSUPPORTED_DATA


def bad_media(**fields: Any) -> str:
    media = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": ulaw_payload(tone(FRAME, 300))}
    return twilio_event("media", 2, media={**media, **fields})


def test_twilio_non_numeric_chunk() -> None:
    err = protocol_error(started_twilio().feed_text, bad_media(chunk="x"))
    assert err.code == "bad_chunk"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(bad_media(timestamp="soon"), id="non-numeric-timestamp"),
        pytest.param(bad_media(timestamp=None), id="null-timestamp"),
        pytest.param(bad_media(track=None), id="null-track"),
        pytest.param(twilio_event("media", 2, media="inbound"), id="media-not-an-object"),
    ],
)
def test_twilio_bad_media_fields_are_protocol_errors(text: str) -> None:
    # Garbage from the bridge must close the socket with a protocol error, not escape as a
    # ValueError/TypeError (which the websocket endpoint turns into a 1011 server error).
    err = protocol_error(started_twilio().feed_text, text)
    assert err.close_code in (CloseCode.INVALID_PAYLOAD, CloseCode.UNSUPPORTED_DATA, CloseCode.POLICY_VIOLATION)


@pytest.mark.parametrize(
    "start",
    [
        pytest.param({"callSid": "CA1", "mediaFormat": {"sampleRate": "fast"}}, id="non-numeric-sampleRate"),
        pytest.param({"callSid": "CA1", "mediaFormat": "audio/x-mulaw"}, id="mediaFormat-not-an-object"),
        pytest.param({"callSid": "CA1", "tracks": 5}, id="tracks-not-a-list"),
        pytest.param({"callSid": "CA1", "tracks": [["inbound"]]}, id="tracks-nested-list"),
        pytest.param({"callSid": "CA1", "customParameters": ["agent_id"]}, id="customParameters-not-an-object"),
        pytest.param({}, id="no-callSid-or-streamSid"),
    ],
)
def test_twilio_bad_start_fields_are_protocol_errors(start: dict[str, Any]) -> None:
    err = protocol_error(TwilioStreamParser().feed_text, json.dumps({"event": "start", "start": start}))
    assert err.close_code in (CloseCode.INVALID_PAYLOAD, CloseCode.UNSUPPORTED_DATA)


# --------------------------------------------------------------------------- raw PCM


def pcm_start(**fields: Any) -> str:
    return json.dumps({"event": "start", "call_id": "c1", "agent_id": "a7", **fields})


def started_pcm(**fields: Any) -> PcmStreamParser:
    parser = PcmStreamParser()
    parser.feed_text(pcm_start(**fields))
    return parser


def test_pcm_mono_s16le_8k() -> None:
    parser = PcmStreamParser()
    (started,) = parser.feed_text(pcm_start(sample_rate=8000, channels=1, metadata={"queue": "M1"}))
    assert isinstance(started, CallStarted)
    assert (started.call_id, started.agent_id, started.bridge) == ("c1", "a7", "pcm")
    assert started.speakers == (Speaker.AGENT,)
    assert started.metadata == {"queue": "M1", "encoding": "s16le", "sample_rate": 8000}

    pcm = tone(FRAME * 10, 500)
    chunks = [c for i in range(10) for c in parser.feed_bytes(pcm[i * FRAME : (i + 1) * FRAME].tobytes())]
    assert all(c.speaker is Speaker.AGENT for c in chunks)
    assert [c.t for c in chunks] == pytest.approx([0.02 * i for i in range(10)])
    total = sum(len(c.pcm) for c in chunks)
    assert 2 * len(pcm) - 40 < total < 2 * len(pcm)
    (ended,) = parser.feed_text(json.dumps({"event": "stop", "reason": "hangup"}))
    assert isinstance(ended, CallEnded)
    assert (ended.call_id, ended.reason) == ("c1", "hangup")
    assert parser.ended


def test_pcm_mono_16k_passes_samples_through() -> None:
    parser = started_pcm(sample_rate=16000)
    pcm = np.array([0, 16384, -16384, 32767, -32768], dtype=np.int16)
    (chunk,) = parser.feed_bytes(pcm.tobytes())
    np.testing.assert_array_equal(chunk.pcm, pcm.astype(np.float32) / 32768)


def test_pcm_stereo_split_into_agent_and_customer() -> None:
    parser = started_pcm(sample_rate=16000, channels=2)
    left = np.arange(0, 640, 2, dtype=np.int16)
    right = -np.arange(0, 640, 2, dtype=np.int16) - 1
    frame = np.stack([left, right], axis=1).reshape(-1)  # interleaved L R L R
    agent, customer = parser.feed_bytes(frame.tobytes())
    assert (agent.speaker, customer.speaker) == (Speaker.AGENT, Speaker.CUSTOMER)
    np.testing.assert_array_equal(agent.pcm, left / 32768)
    np.testing.assert_array_equal(customer.pcm, right / 32768)
    assert agent.t == customer.t == 0.0


def test_pcm_custom_channel_map() -> None:
    parser = PcmStreamParser()
    (started,) = parser.feed_text(pcm_start(sample_rate=16000, channels=2, channel_map=["customer", "agent"]))
    assert started.speakers == (Speaker.CUSTOMER, Speaker.AGENT)
    frame = np.array([100, -100] * 160, dtype=np.int16)
    first, second = parser.feed_bytes(frame.tobytes())
    assert (first.speaker, second.speaker) == (Speaker.CUSTOMER, Speaker.AGENT)
    assert np.all(first.pcm > 0) and np.all(second.pcm < 0)


def test_pcm_stereo_8k_resampled_per_channel() -> None:
    parser = started_pcm(sample_rate=8000, channels=2)
    left, right = tone(FRAME * 20, 400), tone(FRAME * 20, 1200)
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    chunks = [c for i in range(20) for c in parser.feed_bytes(interleaved[i * 320 : (i + 1) * 320].tobytes())]
    for speaker, freq in ((Speaker.AGENT, 400), (Speaker.CUSTOMER, 1200)):
        audio = np.concatenate([c.pcm for c in chunks if c.speaker is speaker])
        assert np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio) == pytest.approx(freq, abs=5)


def test_pcm_mulaw_encoding() -> None:
    parser = started_pcm(sample_rate=16000, encoding="mulaw")
    (chunk,) = parser.feed_bytes(bytes([0xFF, 0x80, 0x00, 0x7E]))
    np.testing.assert_array_equal(chunk.pcm * 32768, [0, 32124, -32124, -8])


def test_pcm_alaw_encoding() -> None:
    parser = started_pcm(sample_rate=16000, encoding="alaw")
    (chunk,) = parser.feed_bytes(bytes([0xD5, 0x55]))
    np.testing.assert_array_equal(chunk.pcm * 32768, [8, -8])


def test_pcm_time_advances_by_samples_over_rate() -> None:
    parser = started_pcm(sample_rate=16000, channels=2)
    times = []
    for n in (320, 160, 800, 16000):
        chunks = parser.feed_bytes(np.zeros(2 * n, dtype=np.int16).tobytes())
        times.append(chunks[0].t)
    assert times == pytest.approx([0.0, 0.02, 0.03, 0.08])


def test_pcm_audio_before_start() -> None:
    err = protocol_error(PcmStreamParser().feed_bytes, b"\x00\x00")
    assert err.code == "audio_before_start"
    assert err.close_code == CloseCode.POLICY_VIOLATION


@pytest.mark.parametrize(("fields", "size"), [({"channels": 1}, 3), ({"channels": 2}, 6), ({"channels": 2}, 2)])
def test_pcm_ragged_frame(fields: dict[str, int], size: int) -> None:
    err = protocol_error(started_pcm(**fields).feed_bytes, bytes(size))
    assert err.code == "ragged_frame"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


def test_pcm_ragged_frame_mulaw_stereo() -> None:
    err = protocol_error(started_pcm(encoding="mulaw", channels=2).feed_bytes, bytes(3))
    assert err.close_code == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize(
    ("fields", "code", "close_code"),
    [
        ({"encoding": "opus"}, "unsupported_encoding", CloseCode.UNSUPPORTED_DATA),
        ({"encoding": "f32le"}, "unsupported_encoding", CloseCode.UNSUPPORTED_DATA),
        ({"sample_rate": 11025}, "unsupported_rate", CloseCode.UNSUPPORTED_DATA),
        ({"sample_rate": "16000"}, "unsupported_rate", CloseCode.UNSUPPORTED_DATA),
        ({"sample_rate": 0}, "unsupported_rate", CloseCode.UNSUPPORTED_DATA),
        ({"channels": 3}, "bad_channels", CloseCode.UNSUPPORTED_DATA),
        ({"channels": 0}, "bad_channels", CloseCode.UNSUPPORTED_DATA),
        ({"channels": 2, "channel_map": ["agent", "agent"]}, "bad_channel_map", CloseCode.INVALID_PAYLOAD),
        ({"channels": 2, "channel_map": ["agent"]}, "bad_channel_map", CloseCode.INVALID_PAYLOAD),
        ({"channels": 1, "channel_map": ["agent", "customer"]}, "bad_channel_map", CloseCode.INVALID_PAYLOAD),
        ({"channels": 2, "channel_map": ["agent", "debtor"]}, "bad_channel_map", CloseCode.INVALID_PAYLOAD),
        ({"channels": 2, "channel_map": None}, "bad_channel_map", CloseCode.INVALID_PAYLOAD),
        ({"call_id": ""}, "bad_call_id", CloseCode.INVALID_PAYLOAD),
        ({"call_id": 42}, "bad_call_id", CloseCode.INVALID_PAYLOAD),
        ({"call_id": "x" * 129}, "bad_call_id", CloseCode.INVALID_PAYLOAD),
    ],
)
def test_pcm_bad_start(fields: dict[str, Any], code: str, close_code: int) -> None:
    parser = PcmStreamParser()
    err = protocol_error(parser.feed_text, pcm_start(**fields))
    assert (err.code, err.close_code) == (code, close_code)
    assert parser.call_id is None  # nothing half-started


def test_pcm_missing_call_id() -> None:
    err = protocol_error(PcmStreamParser().feed_text, json.dumps({"event": "start"}))
    assert err.code == "bad_call_id"


@pytest.mark.parametrize("rate", [[16000], {"hz": 16000}])
def test_pcm_unhashable_sample_rate_is_a_protocol_error(rate: Any) -> None:
    err = protocol_error(PcmStreamParser().feed_text, pcm_start(sample_rate=rate))
    assert err.close_code == CloseCode.UNSUPPORTED_DATA


@pytest.mark.parametrize("event", ["media", "mark", "halt"])
def test_pcm_unknown_event(event: str) -> None:
    err = protocol_error(started_pcm().feed_text, json.dumps({"event": event}))
    assert err.code == "unknown_event"
    assert err.close_code == CloseCode.POLICY_VIOLATION


def test_pcm_duplicate_start() -> None:
    err = protocol_error(started_pcm().feed_text, pcm_start())
    assert err.code == "duplicate_start"
    assert err.close_code == CloseCode.POLICY_VIOLATION


def test_pcm_stop_before_start() -> None:
    err = protocol_error(PcmStreamParser().feed_text, json.dumps({"event": "stop"}))
    assert err.code == "stop_before_start"


def test_pcm_malformed_json() -> None:
    err = protocol_error(PcmStreamParser().feed_text, "start c1")
    assert err.code == "malformed_json"
    assert err.close_code == CloseCode.INVALID_PAYLOAD


# --------------------------------------------------------------------------- limits (issue 20)


def test_twilio_timestamp_hole_counts_as_at_most_the_fill_cap() -> None:
    parser = started_twilio()
    times = [
        parser.feed_text(twilio_media(2 + i, "inbound", 1 + i, 60_000 * i, tone(FRAME, 300)))[0].t for i in range(4)
    ]
    # 60 s holes: each counts as 5 s after the 20 ms frame before it, so no frame brings a minute of silence
    assert times == pytest.approx([0.0, 5.02, 10.04, 15.06])
    assert parser.gap_fill_s["inbound"] == pytest.approx(15.0)


def test_twilio_too_many_holes_close_the_stream() -> None:
    parser = started_twilio()
    with pytest.raises(ProtocolError) as info:
        for i in range(20):
            parser.feed_text(twilio_media(2 + i, "inbound", 1 + i, 60_000 * i, tone(FRAME, 300)))
    assert (info.value.code, info.value.close_code) == ("timestamp_gaps", CloseCode.POLICY_VIOLATION)
    assert parser.gap_fill_s["inbound"] <= 60


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"event": "start", "x": ' + "[" * 9 + "]" * 9 + "}", "json_too_deep"),
        ('{"event": "start", "x": ' + "9" * 25 + "}", "number_too_long"),
        ('{"event": "start", "x": 1e400}', "number_out_of_range"),
        ('{"event": "start", "x": NaN}', "number_out_of_range"),
        ('{"event": "stop", "reason": "\\ud800"}', "lone_surrogate"),
    ],
)
def test_json_limits_are_checked_before_or_while_parsing(text: str, code: str) -> None:
    for parser in (TwilioStreamParser(), PcmStreamParser()):
        err = protocol_error(parser.feed_text, text)
        assert (err.code, err.close_code) == (code, CloseCode.INVALID_PAYLOAD)


def test_a_paired_surrogate_escape_is_fine() -> None:
    (started,) = PcmStreamParser().feed_text(pcm_start(metadata={"queue": "\U0001f600"}))  # json.dumps: \ud83d\ude00
    assert started.metadata["queue"] == "\U0001f600"


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": "queue=1"},
        {"metadata": {"custom_parameters": "debtor=1"}},
        {"metadata": {"custom_parameters": {"deep": {"x": 1}}}},
        {"metadata": {f"k{i}": i for i in range(40)}},
        {"agent_id": {"name": "a"}},
        {"agent_id": "a\n7"},
        {"call_id": "c\x00"},
    ],
)
def test_pcm_start_fields_are_validated_before_any_call_exists(fields: dict[str, Any]) -> None:
    parser = PcmStreamParser()
    err = protocol_error(parser.feed_text, pcm_start(**fields))
    assert err.close_code == CloseCode.INVALID_PAYLOAD
    assert parser.call_id is None


def test_pcm_frame_longer_than_the_limit_is_too_big() -> None:
    err = protocol_error(started_pcm(sample_rate=8000).feed_bytes, bytes(2 * 8000 + 2))
    assert (err.code, err.close_code) == ("frame_too_long", CloseCode.MESSAGE_TOO_BIG)


@pytest.mark.parametrize("event", ['{"event": "dtmf", "dtmf": "5"}', '{"event": "mark", "mark": 5}'])
def test_twilio_dtmf_and_mark_must_be_objects(event: str) -> None:
    assert protocol_error(started_twilio().feed_text, event).close_code == CloseCode.INVALID_PAYLOAD


def test_twilio_stereo_or_repeated_tracks_are_refused() -> None:
    assert protocol_error(TwilioStreamParser().feed_text, twilio_start(channels=2)).code == "bad_channels"
    assert protocol_error(TwilioStreamParser().feed_text, twilio_start(tracks=["inbound"] * 2)).code == "bad_tracks"
