"""Asterisk AudioSocket: a TCP stream of frames, one socket per channel (one leg, one speaker).

Frame: a kind byte, a big-endian uint16 payload length, the payload. Asterisk sends ``0x01`` (the
16-byte UUID the dialplan gave ``AudioSocket()``) first, then ``0x10`` signed-linear 8 kHz audio
(320 bytes per 20 ms; ``0x11``-``0x18`` for the higher rates of Asterisk 20+ channel drivers),
``0x03`` DTMF (one ASCII digit), ``0x00`` hang-up and ``0xff`` error (a flag byte). Audio written
back in the same framing plays into the channel; a ``0x00`` from us ends ``AudioSocket()`` and the
dialplan then hangs up.

The UUID is all the metadata the socket carries: ``AudioSocketRegistry`` maps it to the call (agent,
which leg, customer number, debtor id and time zone), filled over REST by the dialplan (``CURL()``)
or an ARI application before the socket connects. Sockets registered with one call id and ``legs``
(e.g. agent and customer) are the legs of one monitored call, one speaker each. An unregistered UUID
is the call id itself, on ``audiosocket.default_speaker``'s leg (or refused with ``audiosocket.require_registration``).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compliance_monitor.audio.resample import StreamResampler, pcm16_to_float
from compliance_monitor.ingest.base import (
    DEFAULT_LIMITS,
    CloseCode,
    IngestMessage,
    ProtocolError,
    StreamLimits,
)
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted, Speaker

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_SLIN, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000, 0x17: 96000}
RATES[0x18] = 192000
KIND_FOR_RATE = {rate: kind for kind, rate in RATES.items()}
HEADER_BYTES = 3
# Asterisk's error flags (res_audiosocket): why the PBX side gave up on the channel.
PBX_ERRORS = {0x01: "caller_hangup", 0x02: "frame_forwarding", 0x04: "memory"}


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"an AudioSocket payload holds at most 65535 bytes, not {len(payload)}")
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def frame_length(header: bytes) -> int:
    return int.from_bytes(header[1:3], "big")


@dataclass(frozen=True)
class CallInfo:
    """What the PBX side registered for one AudioSocket UUID."""

    call_id: str | None = None  # default: the UUID
    agent_id: str | None = None
    speaker: Speaker = Speaker.CUSTOMER  # which leg this socket carries
    metadata: dict[str, Any] = field(default_factory=dict)  # customer_number, debtor_id, debtor_tz, ...
    legs: tuple[Speaker, ...] = ()  # every leg of the call, each on its own socket (default: this one only)


class AudioSocketRegistry:
    """UUID → call metadata, bounded in size and time: registrations never consumed do not pile up."""

    def __init__(self, ttl_s: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, CallInfo]] = OrderedDict()
        self._heard: set[str] = set()  # registered UUIDs whose socket has carried audio

    def register(self, key: str, info: CallInfo) -> None:
        self._expire()
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + self.ttl_s, info)
        while len(self._entries) > self.max_entries:
            self._heard.discard(self._entries.popitem(last=False)[0])

    def lookup(self, key: str) -> CallInfo | None:
        """Kept after the lookup: a socket that reconnects with the same UUID continues the same call."""
        self._expire()
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def forget(self, key: str) -> bool:
        self._heard.discard(key)
        return self._entries.pop(key, None) is not None

    def mark_heard(self, key: str) -> None:
        if key in self._entries:
            self._heard.add(key)

    def heard(self, key: str) -> bool:
        """Whether audio has arrived on the socket of this registration (the PBX side checks its taps so)."""
        return key in self._heard

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries and next(iter(self._entries.values()))[0] < now:
            self._heard.discard(self._entries.popitem(last=False)[0])


def normalise_uuid(text: str) -> str:
    """The canonical lower-case form, so the REST registration and the socket's bytes meet; ValueError if not."""
    return str(uuid.UUID(text))


class AudioSocketParser:
    """Whole frames in (the transport cuts the TCP stream), stage messages out."""

    bridge = "audiosocket"

    def __init__(
        self,
        registry: AudioSocketRegistry,
        default_speaker: Speaker = Speaker.CUSTOMER,
        require_registration: bool = False,
        limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        self.registry = registry
        self.default_speaker = default_speaker
        self.require_registration = require_registration
        self.limits = limits
        self.call_id: str | None = None
        self.uuid: str | None = None
        self.speaker = default_speaker
        self.rate: int | None = None  # of the audio the PBX sends; what we send back matches it
        self.ended = False
        self.gap_fill_s: dict[str, float] = {}
        self.dtmf: list[str] = []
        self._resampler: StreamResampler | None = None
        self._samples = 0  # received so far: the stream time of the next frame

    def feed_text(self, text: str) -> list[IngestMessage]:
        raise ProtocolError("text_frame", "AudioSocket is a binary protocol", CloseCode.UNSUPPORTED_DATA)

    def feed_bytes(self, data: bytes) -> list[IngestMessage]:
        if len(data) < HEADER_BYTES or frame_length(data) != len(data) - HEADER_BYTES:
            raise ProtocolError("bad_frame_length", "frame length does not match its header", CloseCode.INVALID_PAYLOAD)
        kind, payload = data[0], data[HEADER_BYTES:]
        if kind == KIND_UUID:
            return self._on_uuid(payload)
        if self.call_id is None:
            raise ProtocolError("audio_before_uuid", f"frame kind 0x{kind:02x} before the UUID")
        if kind in RATES:
            return self._on_audio(RATES[kind], payload)
        if kind == KIND_DTMF:
            return self._on_dtmf(payload)
        if kind == KIND_HANGUP:
            self.ended = True
            return [CallEnded(self.call_id, "hangup")]
        if kind == KIND_ERROR:
            self.ended = True
            flag = payload[0] if payload else 0
            return [CallEnded(self.call_id, f"pbx_error:{PBX_ERRORS.get(flag, f'0x{flag:02x}')}")]
        raise ProtocolError("unknown_kind", f"unknown frame kind 0x{kind:02x}", CloseCode.UNSUPPORTED_DATA)

    def _on_uuid(self, payload: bytes) -> list[IngestMessage]:
        if self.call_id is not None:
            raise ProtocolError("duplicate_start", "a second UUID on the same socket")
        if len(payload) != 16:
            raise ProtocolError("bad_uuid", f"a UUID is 16 bytes, not {len(payload)}", CloseCode.INVALID_PAYLOAD)
        key = str(uuid.UUID(bytes=payload))
        info = self.registry.lookup(key)
        if info is None and self.require_registration:
            raise ProtocolError("unregistered_uuid", f"no call registered for {key}")
        info = info or CallInfo(speaker=self.default_speaker)
        self.uuid, self.call_id, self.speaker = key, info.call_id or key, info.speaker
        metadata = {**info.metadata, "audiosocket_uuid": key, "leg": info.speaker.value}
        legs = tuple(dict.fromkeys((*info.legs, info.speaker)))
        return [CallStarted(self.call_id, info.agent_id, self.bridge, legs, metadata, leg=info.speaker)]

    def _on_audio(self, rate: int, payload: bytes) -> list[IngestMessage]:
        assert self.call_id is not None
        if self.rate is None:
            self.rate, self._resampler = rate, StreamResampler(rate)
            if self.uuid is not None:
                self.registry.mark_heard(self.uuid)
        elif rate != self.rate:
            raise ProtocolError("rate_changed", f"audio at {rate} Hz after {self.rate} Hz", CloseCode.UNSUPPORTED_DATA)
        if len(payload) % 2:
            raise ProtocolError("ragged_frame", "odd number of bytes in 16-bit audio", CloseCode.INVALID_PAYLOAD)
        if len(payload) > 2 * rate * self.limits.max_frame_s:
            raise ProtocolError("frame_too_long", f"{len(payload)} bytes in one frame", CloseCode.MESSAGE_TOO_BIG)
        assert self._resampler is not None
        samples = np.frombuffer(payload, "<i2")
        t = self._samples / rate
        self._samples += len(samples)
        audio = self._resampler.process(pcm16_to_float(samples))
        return [AudioChunk(self.call_id, self.speaker, audio, t)] if len(audio) else []

    def _on_dtmf(self, payload: bytes) -> list[IngestMessage]:
        if len(payload) != 1:
            raise ProtocolError("bad_dtmf", f"a DTMF frame is 1 byte, not {len(payload)}", CloseCode.INVALID_PAYLOAD)
        if len(self.dtmf) < 100:
            self.dtmf.append(chr(payload[0]))
        return []
