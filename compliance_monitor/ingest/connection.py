"""One bridge connection, whatever carries it: deadlines, size limits, error closes and counters.

A bridge endpoint supplies a ``Transport`` (websocket today; a TCP stream for AudioSocket) and a protocol
parser, and calls ``serve_connection``. The phases:

1. until ``ingest.start_timeout_s``: messages go to the parser until it yields a valid ``CallStarted``;
   nothing is registered before that, so a bad start costs nothing;
2. ``Monitor.live_call``: the call is claimed and archived, and released on every way out;
3. each message, within ``ingest.idle_timeout_s`` of the last, is size-checked, parsed, and its audio
   pushed (backpressure) — or counted as dropped once the call's input has ended.

Client input never raises past here: every ``ProtocolError`` becomes a close code with a reason, a
one-line warning and a counter (``BridgeStats.rejected``). Anything else is our bug: logged with its
traceback and closed with 1011, and the call is still released.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from compliance_monitor.ingest.base import BridgeStats, CloseCode, IngestMessage, ProtocolError
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted

if TYPE_CHECKING:
    from compliance_monitor.config import IngestSettings
    from compliance_monitor.monitor import CallLeg, Monitor
    from compliance_monitor.pipeline import CallControl

log = logging.getLogger(__name__)

Message = str | bytes


class Transport(Protocol):
    async def receive(self) -> Message | None:
        """The next message, or None once the peer has gone."""
        ...

    async def fail(self, error: ProtocolError) -> None:
        """Tell the peer what was wrong (where the protocol can) and close with ``error.close_code``."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Close if still open."""
        ...


class Parser(Protocol):
    bridge: str
    call_id: str | None
    ended: bool
    gap_fill_s: dict[str, float]  # silence inserted for timestamp holes, per track

    def feed_text(self, text: str) -> list[IngestMessage]: ...

    def feed_bytes(self, data: bytes) -> list[IngestMessage]: ...


async def serve_connection(monitor: Monitor, transport: Transport, parser: Parser, control: CallControl) -> None:
    stats = monitor.bridge_stats
    stats.connections += 1
    try:
        await _serve(monitor, transport, parser, control)
    except ProtocolError as error:
        stats.reject(error)
        stats.close_codes[error.close_code] += 1
        log.warning("bridge %s call %s: %s", parser.bridge, parser.call_id or "-", error)
        await transport.fail(error)
    except Exception:
        stats.rejected["internal_error"] += 1
        stats.close_codes[CloseCode.INTERNAL_ERROR] += 1
        log.exception("bridge %s call %s: internal error", parser.bridge, parser.call_id or "-")
        await transport.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        stats.gap_fill_s += sum(parser.gap_fill_s.values())


async def _serve(monitor: Monitor, transport: Transport, parser: Parser, control: CallControl) -> None:
    settings, stats = monitor.services.settings.ingest, monitor.bridge_stats
    opened = await _until_start(transport, parser, settings, stats)
    if opened is None:
        return  # the peer left before starting a call: nothing to clean up
    started, backlog = opened
    async with monitor.live_call(started, control) as session:
        await _deliver(session, backlog, stats)
        while not parser.ended:
            message = await _receive(transport, settings.idle_timeout_s, "idle_timeout")
            if message is None:
                return  # dropped without a stop: live_call waits for a reconnect
            await _deliver(session, _feed(parser, message, settings, stats), stats)
    stats.close_codes[CloseCode.NORMAL] += 1
    await transport.close(CloseCode.NORMAL)


async def _until_start(
    transport: Transport, parser: Parser, settings: IngestSettings, stats: BridgeStats
) -> tuple[CallStarted, list[IngestMessage]] | None:
    """Feed messages until a valid start, within the start deadline; the rest of that message's output too."""
    try:
        async with asyncio.timeout(settings.start_timeout_s):
            while True:
                message = await transport.receive()
                if message is None:
                    return None
                items = _feed(parser, message, settings, stats)
                for i, item in enumerate(items):
                    if isinstance(item, CallStarted):
                        return item, items[i + 1 :]
    except TimeoutError:
        raise ProtocolError("start_timeout", f"no valid 'start' within {settings.start_timeout_s:g} s") from None


async def _receive(transport: Transport, within_s: float, code: str) -> Message | None:
    try:
        async with asyncio.timeout(within_s):
            return await transport.receive()
    except TimeoutError:
        raise ProtocolError(code, f"nothing received for {within_s:g} s") from None


def _feed(parser: Parser, message: Message, settings: IngestSettings, stats: BridgeStats) -> list[IngestMessage]:
    size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8", "surrogatepass"))
    stats.messages += 1
    stats.bytes_in += size
    if size > settings.max_message_bytes:
        raise ProtocolError(
            "message_too_big", f"{size} bytes > {settings.max_message_bytes}", CloseCode.MESSAGE_TOO_BIG
        )
    return parser.feed_text(message) if isinstance(message, str) else parser.feed_bytes(message)


async def _deliver(session: CallLeg, items: list[IngestMessage], stats: BridgeStats) -> None:
    for item in items:
        if isinstance(item, AudioChunk):
            if session.input_ended:  # halted, or the pipeline failed: nothing would read it
                stats.frames_dropped += 1
            else:
                await session.push(item)
        elif isinstance(item, CallEnded):
            session.end_input(item.reason)
        else:  # parsers refuse a second start themselves; this guards a new bridge that does not
            raise ProtocolError("duplicate_start", "a second 'start' on the same connection")
