"""What every bridge adapter produces, how it fails, and the checks every bridge's input goes through.

Adapters are pure protocol parsers: bytes/text in, stage messages out. They hold no sockets, so
they are unit-tested without a server; the connection loop (``ingest/connection.py``) owns the
transport. A new bridge (ARI, FreeSWITCH, ...) reuses ``parse_json_object`` and the
``check_*`` helpers below, so its ``CallStarted`` is valid before any call is registered.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted

if TYPE_CHECKING:
    from compliance_monitor.config import IngestSettings

IngestMessage = CallStarted | AudioChunk | CallEnded


class CloseCode:
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # unknown codec / encoding, binary where text is expected
    INVALID_PAYLOAD = 1007  # malformed JSON, bad base64, ragged PCM frame, values out of range
    POLICY_VIOLATION = 1008  # protocol order, unknown event, sequence numbers, auth, deadlines, duplicate call
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # a bug on our side, never the client's input
    TRY_AGAIN_LATER = 1013  # server at its live-call limit


@dataclass
class ProtocolError(Exception):
    """Bad input from a bridge: logged, sent to the peer, and the connection closed with ``close_code``."""

    code: str
    message: str
    close_code: int = CloseCode.POLICY_VIOLATION

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class StreamLimits:
    """Bounds on what one bridge connection may make the server do (built from ``IngestSettings``)."""

    max_json_depth: int = 8  # the deepest real message (PCM metadata.custom_parameters) is 3
    max_number_chars: int = 24  # digits of a JSON number: int('9' * 5000) costs and then raises
    max_frame_s: float = 1.0  # audio in one message: bounds the per-speaker queue (chunks × this)
    max_gap_fill_s: float = 5.0  # a timestamp hole counts as at most this much silence
    max_gap_total_s: float = 60.0  # holes per track per call before the stream is refused

    @classmethod
    def from_settings(cls, s: IngestSettings) -> StreamLimits:
        return cls(s.max_json_depth, s.max_number_chars, s.max_frame_s, s.max_gap_fill_s, s.max_gap_total_s)


DEFAULT_LIMITS = StreamLimits()


# --------------------------------------------------------------------------- JSON


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(text: str) -> int:
    """Deepest bracket nesting outside strings; vectorised, so a 256 KB message costs microseconds."""
    if not (text.count("[") + text.count("{")):
        return 0
    raw = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "surrogatepass"), np.uint8)
    step = np.isin(raw, _OPEN).astype(np.int32) - np.isin(raw, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def _invalid(code: str, message: str) -> ProtocolError:
    return ProtocolError(code, message, CloseCode.INVALID_PAYLOAD)


def parse_json_object(text: str, limits: StreamLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A bridge's text frame as a JSON object with a string ``event``, or a ProtocolError.

    Limits are checked before or while parsing, so no input reaches a RecursionError (deep nesting),
    a ValueError (a 5,000-digit integer), an infinite float (``1e400``), NaN, or a lone surrogate
    (``"\\ud800"``, which SQLite and every UTF-8 writer later refuse).
    """
    if (text.count("[") + text.count("{") > limits.max_json_depth) and json_depth(text) > limits.max_json_depth:
        raise _invalid("json_too_deep", f"nesting deeper than {limits.max_json_depth}")
    try:
        msg = json.loads(
            text,
            parse_int=lambda s: _int(s, limits),
            parse_float=lambda s: _float(s, limits),
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise _invalid("malformed_json", f"not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:  # belt and braces: the depth check above should have caught it
        raise _invalid("json_too_deep", "nesting too deep") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise _invalid("malformed_message", "expected a JSON object with an 'event'")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(msg, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid("lone_surrogate", "a string holds an unpaired UTF-16 surrogate") from None
    return msg


def _int(text: str, limits: StreamLimits) -> int:
    if len(text) > limits.max_number_chars:
        raise _invalid("number_too_long", f"a number of {len(text)} digits")
    return int(text)


def _float(text: str, limits: StreamLimits) -> float:
    value = float(text) if len(text) <= limits.max_number_chars else float("inf")
    if value in (float("inf"), float("-inf")):
        raise _invalid("number_out_of_range", f"{text[:32]} is not a finite number")
    return value


def _constant(name: str) -> float:
    raise _invalid("number_out_of_range", f"{name} is not a JSON number")


# --------------------------------------------------------------------------- start fields

_MAX_ID = 128
_MAX_VALUE = 512
_MAX_KEYS = 32
_OBJECT_FIELDS = {"custom_parameters"}  # read as objects downstream (debtor_id, debtor_tz)


def check_call_id(value: object, name: str = "call_id") -> str:
    """A call id: a non-empty printable string of at most 128 characters."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID or not value.isprintable():
        raise _invalid("bad_call_id", f"{name} must be a printable string of 1-{_MAX_ID} characters")
    return value


def check_agent_id(value: object) -> str | None:
    """The collector's id as the bridge names it, or None; numbers are accepted (PBX extensions)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid("bad_agent_id", "agent_id must be a string")
    text = str(value)
    if len(text) > _MAX_ID or not text.isprintable():
        raise _invalid("bad_agent_id", f"agent_id must be printable, at most {_MAX_ID} characters")
    return text


def check_scalar(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= _MAX_VALUE:
        return value
    raise _invalid("bad_metadata", f"{where}: values must be numbers or strings of at most {_MAX_VALUE} characters")


def check_metadata(value: object, name: str = "metadata", nested: bool = True) -> dict[str, Any]:
    """Call metadata: an object of at most 32 scalar fields, one level of objects (``custom_parameters``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid("bad_metadata", f"{name} must be an object")
    if len(value) > _MAX_KEYS:
        raise _invalid("bad_metadata", f"{name} has more than {_MAX_KEYS} fields")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if len(key) > 64:
            raise _invalid("bad_metadata", f"{name}: a field name longer than 64 characters")
        if isinstance(item, dict) and nested:
            out[key] = check_metadata(item, f"{name}.{key}", nested=False)
        elif key in _OBJECT_FIELDS and nested:
            raise _invalid("bad_metadata", f"{name}.{key} must be an object")
        else:
            out[key] = check_scalar(item, f"{name}.{key}")
    return out


def check_reason(value: object, default: str) -> str:
    """A hang-up reason from the bridge: short printable text (it lands in the archive)."""
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 64 or not value.isprintable():
        raise _invalid("bad_reason", "reason must be printable text of at most 64 characters")
    return value or default


# --------------------------------------------------------------------------- counters


@dataclass
class BridgeStats:
    """What the bridges saw, for ``/api/stats`` and ``/metrics``: one instance per monitor."""

    connections: int = 0
    calls_started: int = 0
    calls_resumed: int = 0  # a reconnect that continued a live call
    rejected: Counter[str] = field(default_factory=Counter)  # connections closed on bad input, by error code
    close_codes: Counter[int] = field(default_factory=Counter)
    messages: int = 0
    bytes_in: int = 0
    frames_dropped: int = 0  # audio chunks nothing would read (after hang-up, halt or failure)
    gap_fill_s: float = 0.0  # silence inserted for timestamp holes
    calls_without_audio: int = 0
    calls_without_speech: int = 0
    calls_unmonitored: int = 0  # calls the monitor stopped following while they went on (monitoring_lost)

    def reject(self, error: ProtocolError) -> None:
        self.rejected[error.code] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "calls_started": self.calls_started,
            "calls_resumed": self.calls_resumed,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "close_codes": {str(k): v for k, v in sorted(self.close_codes.items())},
            "messages": self.messages,
            "bytes_in": self.bytes_in,
            "frames_dropped": self.frames_dropped,
            "gap_fill_s": round(self.gap_fill_s, 3),
            "calls_without_audio": self.calls_without_audio,
            "calls_without_speech": self.calls_without_speech,
            "calls_unmonitored": self.calls_unmonitored,
        }
