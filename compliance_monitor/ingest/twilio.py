"""Twilio Media Streams (and Telnyx-style) websocket protocol.

Events: ``connected``, ``start`` (streamSid, callSid, tracks, customParameters, mediaFormat),
``media`` (base64 μ-law 8 kHz, ``track`` inbound/outbound, ``timestamp`` ms since stream start,
``chunk``), ``dtmf``, ``mark``, ``stop``. With ``<Start><Stream track="both_tracks">`` both parties
arrive interleaved and are told apart by ``media.track``; each track becomes its own speaker.
Which track is the collector: ``customParameters.agent_track`` (default ``outbound``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from compliance_monitor.audio.g711 import alaw_decode, ulaw_decode
from compliance_monitor.audio.resample import StreamResampler, pcm16_to_float
from compliance_monitor.ingest.base import (
    DEFAULT_LIMITS,
    CloseCode,
    IngestMessage,
    ProtocolError,
    StreamLimits,
    check_agent_id,
    check_call_id,
    check_metadata,
    check_scalar,
    parse_json_object,
)
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted, Speaker

_DECODERS = {
    "audio/x-mulaw": ulaw_decode,
    "audio/pcmu": ulaw_decode,
    "audio/x-alaw": alaw_decode,
    "audio/pcma": alaw_decode,
}
_TRACKS = {"inbound", "outbound"}
_EVENTS = {"connected", "start", "media", "dtmf", "mark", "stop"}


class TwilioStreamParser:
    bridge = "twilio"

    def __init__(self, max_sequence_gap: int = 500, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        self.max_sequence_gap = max_sequence_gap
        self.limits = limits
        self.call_id: str | None = None
        self.stream_sid: str | None = None
        self.speakers: dict[str, Speaker] = {}
        self._decode = ulaw_decode
        self._rate = 8000
        self._resamplers: dict[str, StreamResampler] = {}
        self._last_seq: int | None = None
        self._last_chunk: dict[str, int] = {}
        # Stream time per track: where the next frame is expected, and how much of Twilio's timeline was cut
        # (holes longer than limits.max_gap_fill_s count as that long, so no frame brings seconds of silence).
        self._next_t: dict[str, float] = {}
        self._cut_s: dict[str, float] = {}
        self.gap_fill_s: dict[str, float] = {}
        self.ended = False
        self.marks: list[str] = []  # the first 100 of each: kept for the telephony side, bounded
        self.dtmf: list[str] = []

    def feed_text(self, text: str) -> list[IngestMessage]:
        msg = parse_json_object(text, self.limits)
        event = msg["event"]
        if event not in _EVENTS:
            raise ProtocolError("unknown_event", f"unknown event {event!r}")
        self._check_sequence(msg)
        return getattr(self, f"_on_{event}")(msg)

    def feed_bytes(self, data: bytes) -> list[IngestMessage]:
        raise ProtocolError(
            "binary_frame", "Twilio media streams send JSON text frames only", CloseCode.UNSUPPORTED_DATA
        )

    # ------------------------------------------------------------------ events

    def _on_connected(self, msg: dict[str, Any]) -> list[IngestMessage]:
        return []

    def _on_start(self, msg: dict[str, Any]) -> list[IngestMessage]:
        if self.call_id is not None:
            raise ProtocolError("duplicate_start", "a second 'start' on the same stream")
        start = _field(msg, "start", dict)
        stream_sid = start.get("streamSid") or msg.get("streamSid")
        self.stream_sid = check_call_id(stream_sid, "streamSid") if stream_sid else ""
        call_sid = start.get("callSid") or self.stream_sid
        if not call_sid:
            raise ProtocolError(
                "missing_call_sid", "'start' has neither callSid nor streamSid", CloseCode.INVALID_PAYLOAD
            )
        call_id = check_call_id(call_sid, "callSid")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise ProtocolError("bad_media_format", "mediaFormat must be an object", CloseCode.INVALID_PAYLOAD)
        encoding = fmt.get("encoding", "audio/x-mulaw")
        if not isinstance(encoding, str) or encoding.lower() not in _DECODERS:
            raise ProtocolError(
                "unsupported_encoding",
                f"media encoding {str(encoding)[:40]!r} is not supported (use one of {sorted(_DECODERS)})",
                CloseCode.UNSUPPORTED_DATA,
            )
        rate = _number(fmt.get("sampleRate", 8000), "sampleRate")
        if rate not in (8000, 16000):
            raise ProtocolError("unsupported_rate", f"sampleRate {rate:g}", CloseCode.UNSUPPORTED_DATA)
        if _number(fmt.get("channels", 1), "channels") != 1:
            raise ProtocolError("bad_channels", "a media stream track is mono", CloseCode.UNSUPPORTED_DATA)
        params = check_metadata(start.get("customParameters"), "customParameters", nested=False)
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise ProtocolError("bad_tracks", "tracks must be a list of track names", CloseCode.INVALID_PAYLOAD)
        agent_track = params.get("agent_track", "outbound")
        if agent_track not in _TRACKS or not set(tracks) <= _TRACKS or len(set(tracks)) != len(tracks):
            raise ProtocolError(
                "bad_tracks", f"tracks {tracks} / agent_track {agent_track!r}", CloseCode.INVALID_PAYLOAD
            )
        agent_id = check_agent_id(params.get("agent_id"))
        self.call_id, self._decode, self._rate = call_id, _DECODERS[encoding.lower()], int(rate)
        self.speakers = {t: Speaker.AGENT if t == agent_track else Speaker.CUSTOMER for t in tracks}
        self._resamplers = {t: StreamResampler(self._rate) for t in tracks}
        metadata = {
            "stream_sid": self.stream_sid,
            "tracks": tracks,
            "custom_parameters": params,
            "account_sid": check_scalar(start.get("accountSid"), "accountSid"),
        }
        return [CallStarted(call_id, agent_id, self.bridge, tuple(self.speakers.values()), metadata)]

    def _on_media(self, msg: dict[str, Any]) -> list[IngestMessage]:
        if self.call_id is None:
            raise ProtocolError("media_before_start", "'media' before 'start'")
        media = _field(msg, "media", dict)
        track = str(media.get("track", "inbound"))
        if track not in self.speakers:
            raise ProtocolError("unknown_track", f"track {track!r} was not announced in 'start'")
        try:
            payload = base64.b64decode(_field(media, "payload", str), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(
                "bad_base64", f"media payload is not base64: {exc}", CloseCode.INVALID_PAYLOAD
            ) from None
        if len(payload) > self._rate * self.limits.max_frame_s:
            raise ProtocolError("frame_too_long", f"{len(payload)} samples in one frame", CloseCode.MESSAGE_TOO_BIG)
        self._check_chunk(track, media)
        pcm = pcm16_to_float(self._decode(payload))
        t = self._stream_time(track, media, len(pcm))
        audio = self._resamplers[track].process(pcm)
        return [AudioChunk(self.call_id, self.speakers[track], audio, t)] if len(audio) else []

    def _stream_time(self, track: str, media: dict[str, Any], samples: int) -> float:
        """Twilio's per-track timestamp (ms) when present, so lost frames keep their length, within limits."""
        expected = self._next_t.get(track, 0.0)
        if "timestamp" in media:
            t = _number(media["timestamp"], "timestamp") / 1000.0 - self._cut_s.get(track, 0.0)
        else:
            t = expected
        hole = t - expected
        if hole > self.limits.max_gap_fill_s:
            # Count a long hole as max_gap_fill_s: downstream fills holes with silence for VAD.
            self._cut_s[track] = self._cut_s.get(track, 0.0) + hole - self.limits.max_gap_fill_s
            t, hole = expected + self.limits.max_gap_fill_s, self.limits.max_gap_fill_s
        if hole > 0:
            filled = self.gap_fill_s.get(track, 0.0) + hole
            if filled > self.limits.max_gap_total_s:
                raise ProtocolError(
                    "timestamp_gaps", f"track {track}: over {self.limits.max_gap_total_s:g} s of holes in the stream"
                )
            self.gap_fill_s[track] = filled
        self._next_t[track] = max(t, expected) + samples / self._rate
        return t

    def _on_dtmf(self, msg: dict[str, Any]) -> list[IngestMessage]:
        digit = _short_str(_field(msg, "dtmf", dict).get("digit", ""), "dtmf.digit")
        if len(self.dtmf) < 100:
            self.dtmf.append(digit)
        return []

    def _on_mark(self, msg: dict[str, Any]) -> list[IngestMessage]:
        name = _short_str(_field(msg, "mark", dict).get("name", ""), "mark.name")
        if len(self.marks) < 100:
            self.marks.append(name)
        return []

    def _on_stop(self, msg: dict[str, Any]) -> list[IngestMessage]:
        if self.call_id is None:
            raise ProtocolError("stop_before_start", "'stop' before 'start'")
        self.ended = True
        return [CallEnded(self.call_id, "stop")]

    # ------------------------------------------------------------------ ordering

    def _check_sequence(self, msg: dict[str, Any]) -> None:
        if "sequenceNumber" not in msg:
            return
        try:
            seq = _int(msg["sequenceNumber"])
        except (TypeError, ValueError):
            raise ProtocolError(
                "bad_sequence", f"sequenceNumber {msg['sequenceNumber']!r} is not a number", CloseCode.INVALID_PAYLOAD
            ) from None
        last = self._last_seq
        if last is not None and seq <= last:
            kind = "duplicate_sequence" if seq == last else "out_of_order_sequence"
            raise ProtocolError(kind, f"sequenceNumber {seq} after {last}")
        if last is not None and seq - last > self.max_sequence_gap:
            raise ProtocolError("sequence_gap", f"sequenceNumber jumped from {last} to {seq}")
        self._last_seq = seq

    def _check_chunk(self, track: str, media: dict[str, Any]) -> None:
        if "chunk" not in media:
            return
        try:
            chunk = _int(media["chunk"])
        except (TypeError, ValueError):
            raise ProtocolError("bad_chunk", f"chunk {media['chunk']!r}", CloseCode.INVALID_PAYLOAD) from None
        last = self._last_chunk.get(track)
        if last is not None and chunk <= last:
            raise ProtocolError("out_of_order_chunk", f"{track} chunk {chunk} after {last}")
        self._last_chunk[track] = chunk


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise ProtocolError("missing_field", f"'{name}' missing or not a {kind.__name__}", CloseCode.INVALID_PAYLOAD)
    return value


def _number(value: object, name: str) -> float:
    """A numeric field (Twilio sends numbers as strings); anything else is bad input, not a crash."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProtocolError("bad_number", f"{name} {value!r} is not a number", CloseCode.INVALID_PAYLOAD) from None
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise ProtocolError("bad_number", f"{name} {value!r} is out of range", CloseCode.INVALID_PAYLOAD)
    return number


def _int(value: object) -> int:
    """A counter Twilio sends as a string: at most 18 digits (int() of 5,000 digits raises, slowly)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > 18:
        raise ValueError(value)
    return int(value)


def _short_str(value: object, name: str) -> str:
    if not isinstance(value, str | int) or len(str(value)) > 64:
        raise ProtocolError("bad_field", f"{name} must be a short string", CloseCode.INVALID_PAYLOAD)
    return str(value)
