"""FreeSWITCH mod_audio_fork / mod_audio_stream (websocket subprotocol ``audio.drachtio.org``).

``uuid_audio_fork <uuid> start <wss-url> <mono|mixed|stereo> <8k|16k> [metadata]`` opens the socket and
sends the metadata string as the first (text) frame, then binary L16 little-endian audio: ``stereo``
interleaves the two parties (channel 0 the caller/A-leg, channel 1 the callee). mod_audio_fork does not
put the mix type or rate in that frame, so they come from the metadata JSON (``mix_type``,
``sample_rate``) or the URL query (``?mix=stereo&rate=8000``). Metadata fields (all optional but the id):
``call_id`` or ``uuid``; ``agent_id``; ``agent_uuid`` (the collector's leg, for whispering);
``customer_number``, ``debtor_id``, ``debtor_tz``; ``channel_map`` (stereo, default agent then customer);
``speaker`` (mono/mixed: which party the stream carries, default customer).

Parsing after the start is the PCM bridge's (ragged frames, oversize frames, text after the start).
"""

from __future__ import annotations

from typing import Any

from compliance_monitor.ingest.base import (
    DEFAULT_LIMITS,
    CloseCode,
    IngestMessage,
    ProtocolError,
    StreamLimits,
    parse_json_object,
)
from compliance_monitor.ingest.pcm import PcmStreamParser

SUBPROTOCOL = "audio.drachtio.org"
_MIX = {"mono": 1, "mixed": 1, "stereo": 2}
_RATES = {"8k": 8000, "16k": 16000, "8000": 8000, "16000": 16000}
_CALL_FIELDS = ("call_id", "uuid", "agent_id", "mix_type", "sample_rate", "channel_map", "speaker")


class AudioForkParser(PcmStreamParser):
    bridge = "freeswitch"

    def __init__(self, mix: str = "mono", rate: str | int = 8000, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.default_mix, self.default_rate = mix, str(rate)
        self.fs_uuid: str | None = None  # the forked channel: what uuid_kill ends
        self.agent_uuid: str | None = None  # the collector's leg: what a whisper plays into

    def feed_text(self, text: str) -> list[IngestMessage]:
        if self.call_id is not None:
            raise ProtocolError(
                "text_after_start",
                "mod_audio_fork sends only binary audio after the metadata",
                CloseCode.UNSUPPORTED_DATA,
            )
        # The shared parser's limits (depth, numbers, NaN, surrogates), around an object with no 'event'.
        meta = parse_json_object('{"event": "metadata", "m": ' + text + "}", self.limits)["m"]
        if not isinstance(meta, dict):
            raise ProtocolError("bad_metadata", "the first frame must be a JSON object", CloseCode.INVALID_PAYLOAD)
        mix = str(meta.get("mix_type", self.default_mix)).lower()
        rate = _RATES.get(str(meta.get("sample_rate", self.default_rate)).lower())
        if mix not in _MIX:
            raise ProtocolError(
                "bad_mix_type", f"mix_type {mix[:20]!r}: mono, mixed or stereo", CloseCode.UNSUPPORTED_DATA
            )
        if rate is None:
            raise ProtocolError("unsupported_rate", "sample_rate: 8k or 16k", CloseCode.UNSUPPORTED_DATA)
        call_id = meta.get("call_id") or meta.get("uuid")
        if call_id is None:
            raise ProtocolError("missing_call_id", "the metadata frame names no call_id or uuid")
        channels = _MIX[mix]
        channel_map = (
            meta.get("channel_map", ["agent", "customer"]) if channels == 2 else [meta.get("speaker", "customer")]
        )
        start: dict[str, Any] = {
            "event": "start",
            "call_id": call_id,
            "agent_id": meta.get("agent_id"),
            "sample_rate": rate,
            "channels": channels,
            "encoding": "s16le",
            "channel_map": channel_map,
            "metadata": {k: v for k, v in meta.items() if k not in _CALL_FIELDS} | {"mix_type": mix},
        }
        out = self._on_start(start)
        self.fs_uuid = str(meta.get("uuid") or call_id)
        agent_uuid = meta.get("agent_uuid")
        self.agent_uuid = str(agent_uuid) if agent_uuid else None
        return out
