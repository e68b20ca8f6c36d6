"""The AudioSocket TCP server: each connection is a ``Transport`` and the ``CallControl`` of its channel.

Reads are cut into whole frames here (the parser sees one frame at a time); writes — the hang-up frame,
an error frame, the collector's warning tone — go through one lock, so a tone never interleaves with a
hang-up. Everything else (deadlines, the start, registering and always releasing the call) is
``serve_connection``'s, as for the websocket bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from compliance_monitor.api.auth import address_allowed
from compliance_monitor.config import Settings
from compliance_monitor.ingest.audiosocket import (
    HEADER_BYTES,
    KIND_ERROR,
    KIND_FOR_RATE,
    KIND_HANGUP,
    AudioSocketParser,
    AudioSocketRegistry,
    encode_frame,
    frame_length,
)
from compliance_monitor.ingest.base import CloseCode, ProtocolError, StreamLimits
from compliance_monitor.ingest.connection import Message, serve_connection
from compliance_monitor.messages import ControlResult, Outcome, Speaker
from compliance_monitor.monitor import Monitor
from compliance_monitor.telephony.tones import warning_tone

log = logging.getLogger(__name__)

FRAME_S = 0.02  # Asterisk plays what it is sent at once: we pace 20 ms frames in real time
WRITE_TIMEOUT_S = 5.0
# Our error frame's flag byte (Asterisk's own flags are 0x01/0x02/0x04): the monitor refused or lost the call.
ERROR_FLAG = {CloseCode.INTERNAL_ERROR: 0x80}
PEER_GONE = (ConnectionError, OSError, TimeoutError)


class AudioSocketConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: AudioSocketParser) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = parser
        self._write_lock = asyncio.Lock()  # one frame at a time: a hang-up never lands inside a frame
        self._play_lock = asyncio.Lock()  # one prompt at a time: two warnings play one after the other
        self.closed_with: int | None = None

    # ------------------------------------------------------------------ Transport

    async def receive(self) -> Message | None:
        """One whole frame; None on a clean end of stream between frames."""
        try:
            header = await self.reader.readexactly(HEADER_BYTES)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise ProtocolError("truncated_frame", "the stream ended inside a frame header") from None
        except PEER_GONE:
            return None
        try:
            payload = await self.reader.readexactly(frame_length(header))
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError(
                "truncated_frame", f"{len(exc.partial)} of {frame_length(header)} payload bytes before the stream ended"
            ) from None
        except PEER_GONE:
            return None
        return header + payload

    async def fail(self, error: ProtocolError) -> None:
        """An error frame, then close: the dialplan continues after ``AudioSocket()`` (see README)."""
        await self._write(encode_frame(KIND_ERROR, bytes([ERROR_FLAG.get(error.close_code, 0x40)])))
        await self.close(error.close_code, error.code)

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed_with is not None:
            return
        self.closed_with = code
        self.writer.close()
        with contextlib.suppress(*PEER_GONE):
            await asyncio.wait_for(self.writer.wait_closed(), WRITE_TIMEOUT_S)

    # ------------------------------------------------------------------ CallControl

    async def hangup(self, reason: str) -> ControlResult:
        if not await self._write(encode_frame(KIND_HANGUP)):
            return ControlResult(Outcome.FAILED, "the AudioSocket connection is gone")
        await self.close(CloseCode.NORMAL, "halted")
        return ControlResult(Outcome.DONE, "hang-up frame sent; the dialplan hangs up after AudioSocket()")

    async def warn_agent(self, prompt: str) -> ControlResult:
        if self.parser.speaker is not Speaker.AGENT:
            return ControlResult(
                Outcome.NOT_SUPPORTED, "this AudioSocket carries the customer's leg: a tone would reach the customer"
            )
        rate = self.parser.rate or 8000
        async with self._play_lock:
            played = await self.play(warning_tone(rate), rate)
        if not played:
            return ControlResult(Outcome.FAILED, "the AudioSocket connection is gone")
        return ControlResult(Outcome.DONE, f"warning tone played to the collector ({rate} Hz)")

    async def lost(self, reason: str) -> None:
        await self.fail(ProtocolError("monitoring_lost", reason, CloseCode.INTERNAL_ERROR))

    # ------------------------------------------------------------------ writing

    async def play(self, pcm: np.ndarray, rate: int) -> bool:
        """int16 PCM into the channel in 20 ms frames, paced in real time. False if the socket went away."""
        kind = KIND_FOR_RATE[rate]
        step = int(rate * FRAME_S)
        loop = asyncio.get_running_loop()
        due = loop.time()
        for start in range(0, len(pcm), step):
            frame = pcm[start : start + step]
            if len(frame) < step:
                frame = np.concatenate([frame, np.zeros(step - len(frame), np.int16)])
            if not await self._write(encode_frame(kind, frame.astype("<i2").tobytes())):
                return False
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - loop.time()))
        return True

    async def _write(self, data: bytes) -> bool:
        if self.closed_with is not None or self.writer.is_closing():
            return False
        async with self._write_lock:
            try:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
            except PEER_GONE:
                return False
        return True


class AudioSocketServer:
    """The TCP listener; started and stopped with the app (``serve``)."""

    def __init__(self, monitor: Monitor, registry: AudioSocketRegistry, settings: Settings) -> None:
        self.monitor = monitor
        self.registry = registry
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        s = self.settings.audiosocket
        self._server = await asyncio.start_server(self._handle, s.host, s.port)
        log.info("AudioSocket server on %s:%d", s.host, self.port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        s = self.settings
        peer = writer.get_extra_info("peername")
        if not address_allowed(peer[0] if peer else None, s.auth.pbx_addresses):
            # AudioSocket carries no credentials: only the PBX's own addresses may stream (issue 18).
            log.warning("AudioSocket: refused a connection from %s (not in auth.pbx_addresses)", peer)
            self.monitor.bridge_stats.connections += 1
            self.monitor.bridge_stats.rejected["not_pbx_address"] += 1
            writer.close()
            return
        self._connections.add(task)
        parser = AudioSocketParser(
            self.registry,
            Speaker(s.audiosocket.default_speaker),
            s.audiosocket.require_registration,
            StreamLimits.from_settings(s.ingest),
        )
        connection = AudioSocketConnection(reader, writer, parser)
        try:
            await serve_connection(self.monitor, connection, parser, connection)
        except asyncio.CancelledError:
            # Server shutdown (aclose). A top-level connection task: nothing else awaits it, and on 3.11 asyncio's
            # stream callback logs a cancelled handler as an error. The call itself is released by live_call.
            pass
        finally:
            self._connections.discard(task)
            with contextlib.suppress(*PEER_GONE):
                await connection.close(CloseCode.NORMAL)
