"""What every bridge adapter produces, and how it fails.

Adapters are pure protocol parsers: bytes/text in, stage messages out. They hold no sockets, so
they are unit-tested without a server; the websocket endpoint owns the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted

IngestMessage = CallStarted | AudioChunk | CallEnded


class CloseCode:
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # unknown codec / encoding, binary where text is expected
    INVALID_PAYLOAD = 1007  # malformed JSON, bad base64, ragged PCM frame
    POLICY_VIOLATION = 1008  # protocol order, unknown event, sequence numbers, auth
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # server at its live-call limit


@dataclass
class ProtocolError(Exception):
    """Bad input from a bridge: logged, sent to the peer, and the connection closed with ``close_code``."""

    code: str
    message: str
    close_code: int = CloseCode.POLICY_VIOLATION

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def parse_json_object(text: str) -> dict[str, object]:
    """A bridge's text frame as a JSON object with a string ``event``, or a ProtocolError."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError("malformed_json", f"not JSON: {exc.msg} at {exc.pos}", CloseCode.INVALID_PAYLOAD) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise ProtocolError("malformed_message", "expected a JSON object with an 'event'", CloseCode.INVALID_PAYLOAD)
    return msg
