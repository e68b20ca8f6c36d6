"""Raw PCM websocket: one JSON ``start`` text frame, then binary audio frames, then ``stop``.

Start message::

    {"event": "start", "call_id": "c1", "agent_id": "a7", "sample_rate": 8000, "channels": 2,
     "encoding": "s16le" | "mulaw" | "alaw", "channel_map": ["agent", "customer"], "metadata": {}}

Binary frames are interleaved samples (frame size a multiple of channels × sample width). The
server may send ``{"event": "halt", "reason": ...}`` to ask the bridge to hang up,
``{"event": "warn_agent", "prompt": ...}`` to play a prompt only the collector hears, and
``{"event": "error", "code": ..., "message": ...}`` before closing on bad input, or with code
``monitoring_lost`` (close 1011) when the monitor can no longer follow the call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
    check_reason,
    parse_json_object,
)
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted, Speaker

_WIDTH = {"s16le": 2, "mulaw": 1, "alaw": 1}
_RATES = {8000, 16000, 24000, 44100, 48000}


class PcmStreamParser:
    bridge = "pcm"

    def __init__(self, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.call_id: str | None = None
        self.channels = 1
        self.encoding = "s16le"
        self.rate = 16000
        self.channel_map: list[Speaker] = []
        self._resamplers: list[StreamResampler] = []
        self._frames_seen = 0
        self.gap_fill_s: dict[str, float] = {}  # none: stream time is the sample count
        self.ended = False

    def feed_text(self, text: str) -> list[IngestMessage]:
        msg = parse_json_object(text, self.limits)
        event = msg.get("event")
        if event == "start":
            return self._on_start(msg)
        if event == "stop":
            if self.call_id is None:
                raise ProtocolError("stop_before_start", "'stop' before 'start'")
            self.ended = True
            return [CallEnded(self.call_id, check_reason(msg.get("reason"), "stop"))]
        raise ProtocolError("unknown_event", f"unknown event {event!r}")

    def _on_start(self, msg: dict[str, Any]) -> list[IngestMessage]:
        if self.call_id is not None:
            raise ProtocolError("duplicate_start", "a second 'start' on the same stream")
        call_id = check_call_id(msg.get("call_id"))
        encoding = msg.get("encoding", "s16le")
        if not isinstance(encoding, str) or encoding.lower() not in _WIDTH:
            raise ProtocolError(
                "unsupported_encoding",
                f"encoding {str(encoding)[:40]!r}; use one of {sorted(_WIDTH)}",
                CloseCode.UNSUPPORTED_DATA,
            )
        encoding = encoding.lower()
        rate, channels = msg.get("sample_rate", 16000), msg.get("channels", 1)
        if not isinstance(rate, int) or rate not in _RATES:
            raise ProtocolError(
                "unsupported_rate", f"sample_rate {rate!r}; use one of {sorted(_RATES)}", CloseCode.UNSUPPORTED_DATA
            )
        if not isinstance(channels, int) or channels not in (1, 2):
            raise ProtocolError("bad_channels", f"channels {channels!r}: 1 or 2", CloseCode.UNSUPPORTED_DATA)
        default_map = ["agent", "customer"][:channels] if channels == 2 else ["agent"]
        raw_map = msg.get("channel_map", default_map)
        try:
            if not isinstance(raw_map, list):
                raise TypeError(raw_map)
            channel_map = [Speaker(s) for s in raw_map]
        except (TypeError, ValueError):
            raise ProtocolError(
                "bad_channel_map", f"channel_map {str(raw_map)[:80]}", CloseCode.INVALID_PAYLOAD
            ) from None
        if len(channel_map) != channels or len(set(channel_map)) != channels:
            raise ProtocolError("bad_channel_map", "one distinct speaker per channel", CloseCode.INVALID_PAYLOAD)
        agent_id = check_agent_id(msg.get("agent_id"))
        metadata = check_metadata(msg.get("metadata"))
        self.call_id, self.encoding, self.rate, self.channels = call_id, encoding, int(rate), int(channels)
        self.channel_map = channel_map
        self._resamplers = [StreamResampler(self.rate) for _ in channel_map]
        return [
            CallStarted(
                call_id,
                agent_id,
                self.bridge,
                tuple(channel_map),
                {**metadata, "encoding": encoding, "sample_rate": self.rate},
            )
        ]

    def feed_bytes(self, data: bytes) -> list[IngestMessage]:
        if self.call_id is None:
            raise ProtocolError("audio_before_start", "binary audio before the JSON 'start'")
        frame = _WIDTH[self.encoding] * self.channels
        if len(data) > frame * self.rate * self.limits.max_frame_s:
            raise ProtocolError(
                "frame_too_long",
                f"{len(data) // frame / self.rate:.2f} s of audio in one frame (at most {self.limits.max_frame_s:g})",
                CloseCode.MESSAGE_TOO_BIG,
            )
        if len(data) % frame:
            raise ProtocolError(
                "ragged_frame",
                f"{len(data)} bytes is not a multiple of {frame} ({self.channels} ch × {_WIDTH[self.encoding]} B)",
                CloseCode.INVALID_PAYLOAD,
            )
        if self.encoding == "s16le":
            samples = np.frombuffer(data, dtype="<i2")
        else:
            samples = (ulaw_decode if self.encoding == "mulaw" else alaw_decode)(data)
        samples = samples.reshape(-1, self.channels)
        t = self._frames_seen / self.rate
        self._frames_seen += len(samples)
        out: list[IngestMessage] = []
        for ch, speaker in enumerate(self.channel_map):
            audio = self._resamplers[ch].process(pcm16_to_float(samples[:, ch]))
            if len(audio):
                out.append(AudioChunk(self.call_id, speaker, audio, t))
        return out
