"""FreeSWITCH mod_audio_fork bridge (/bridge/freeswitch) and ESL control, against a fake ESL server.

The fake speaks the inbound event-socket protocol (``auth/request`` → ``auth`` → ``command/reply`` →
``api …`` → ``api/response`` with Content-Length) and records every command.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from compliance_monitor.audio.resample import StreamResampler
from compliance_monitor.audio.wavfile import read_audio
from compliance_monitor.config import EslSettings
from compliance_monitor.ingest.base import CloseCode, ProtocolError
from compliance_monitor.ingest.freeswitch import SUBPROTOCOL, AudioForkParser
from compliance_monitor.messages import AudioChunk, CallStarted, Outcome, Speaker
from compliance_monitor.telephony.esl import EslClient
from tests.conftest import LiveServer, make_settings
from tests.fakes import FakeDecoder
from tests.wsclient import record_feed

SPEECH = Path(__file__).parent / "data" / "real_speech"


class FakeEsl:
    """An asyncio TCP server speaking ESL inbound; ``reply`` is what every ``api`` command answers."""

    def __init__(self, password: str = "ClueCon", reply: str = "+OK") -> None:
        self.password, self.reply = password, reply
        self.commands: list[str] = []
        self.got = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Content-Type: auth/request\n\n")
        authed = False
        try:
            while line := (await reader.readuntil(b"\n\n")).decode().strip():
                if line.startswith("auth "):
                    authed = line[5:] == self.password
                    text = "+OK accepted" if authed else "-ERR invalid"
                    writer.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())
                    if not authed:
                        break
                elif line.startswith("api ") and authed:
                    self.commands.append(line[4:])
                    self.got.set()
                    body = (self.reply + "\n").encode()
                    writer.write(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def esl() -> AsyncIterator[FakeEsl]:
    fake = FakeEsl()
    fake.server = await asyncio.start_server(fake._handle, "127.0.0.1", 0)
    yield fake
    fake.server.close()


# --------------------------------------------------------------------------- parser


def stereo_parser() -> tuple[AudioForkParser, CallStarted]:
    parser = AudioForkParser("stereo", "8k")
    meta = {
        "uuid": "fs-1",
        "agent_id": "A7",
        "agent_uuid": "fs-2",
        "debtor_tz": "Asia/Shanghai",
        "customer_number": "1",
    }
    (started,) = parser.feed_text(json.dumps(meta))
    assert isinstance(started, CallStarted)
    return parser, started


def test_metadata_frame_starts_a_two_speaker_call_and_stereo_splits_the_parties() -> None:
    parser, started = stereo_parser()
    assert (started.call_id, started.agent_id, started.speakers) == ("fs-1", "A7", (Speaker.AGENT, Speaker.CUSTOMER))
    assert started.metadata["debtor_tz"] == "Asia/Shanghai" and started.metadata["mix_type"] == "stereo"
    assert (parser.fs_uuid, parser.agent_uuid) == ("fs-1", "fs-2")
    left, right = np.full(800, 1000, "<i2"), np.full(800, -1000, "<i2")
    chunks = parser.feed_bytes(np.stack([left, right], 1).tobytes())
    by = {c.speaker: c.pcm for c in chunks if isinstance(c, AudioChunk)}
    assert by[Speaker.AGENT].mean() > 0 > by[Speaker.CUSTOMER].mean()


@pytest.mark.parametrize(
    ("first", "then", "code", "close"),
    [
        ("{}", None, "missing_call_id", CloseCode.POLICY_VIOLATION),
        ("not json", None, "malformed_json", CloseCode.INVALID_PAYLOAD),
        ('{"uuid": "u", "mix_type": "quad"}', None, "bad_mix_type", CloseCode.UNSUPPORTED_DATA),
        ('{"uuid": "u", "sample_rate": "44k"}', None, "unsupported_rate", CloseCode.UNSUPPORTED_DATA),
        ('{"uuid": "u"}', "text", "text_after_start", CloseCode.UNSUPPORTED_DATA),
        ('{"uuid": "u"}', b"\x00\x01\x02", "ragged_frame", CloseCode.INVALID_PAYLOAD),
        ('{"uuid": "u"}', b"\x00" * 2 * 8000 * 3, "frame_too_long", CloseCode.MESSAGE_TOO_BIG),
        (b"\x00\x00", None, "audio_before_start", CloseCode.POLICY_VIOLATION),
    ],
)
def test_malformed_input_gets_a_clear_close_code(
    first: str | bytes, then: str | bytes | None, code: str, close: int
) -> None:
    parser = AudioForkParser("stereo")
    with pytest.raises(ProtocolError) as caught:
        for message in (first, then):
            if message is not None:
                parser.feed_text(message) if isinstance(message, str) else parser.feed_bytes(message)
    assert caught.value.code.startswith(code.split("_")[0]) or caught.value.code == code, caught.value
    assert caught.value.close_code == close


# --------------------------------------------------------------------------- ESL


async def test_esl_client_kills_and_whispers_and_reports_refusals(esl: FakeEsl) -> None:
    client = EslClient(EslSettings(host="127.0.0.1", port=esl.port))
    assert (await client.kill("fs-1")).outcome is Outcome.DONE
    assert (await client.whisper("fs-2", "/sounds/warn.wav")).outcome is Outcome.DONE
    assert esl.commands == ["uuid_kill fs-1", "uuid_broadcast fs-2 /sounds/warn.wav aleg"]
    assert (await client.kill("bad uuid\napi shutdown")).outcome is Outcome.FAILED  # no injection
    esl.reply = "-ERR No such channel!"
    failed = await client.kill("fs-9")
    assert failed.outcome is Outcome.FAILED and "No such channel" in failed.detail
    wrong = await EslClient(EslSettings(host="127.0.0.1", port=esl.port, password="nope")).kill("fs-1")
    assert wrong.outcome is Outcome.FAILED and "auth" in wrong.detail
    assert (await EslClient(EslSettings()).kill("fs-1")).outcome is Outcome.FAILED  # no host configured


# --------------------------------------------------------------------------- websocket, end to end


def stereo_speech(agent_clip: str, customer_clip: str) -> bytes:
    """Two real recordings as mod_audio_fork stereo at 8 kHz: agent on channel 0, customer on 1."""
    legs = []
    for name in (agent_clip, customer_clip):
        audio, rate = read_audio(SPEECH / name)
        mono = audio[:, 0] if audio.ndim == 2 else audio
        legs.append(StreamResampler(rate, 8000).process(mono.astype(np.float32)))
    n = max(map(len, legs)) + 8000  # a second of silence after the longer one closes its utterance
    both = np.zeros((n, 2), np.float32)
    for ch, leg in enumerate(legs):
        both[: len(leg), ch] = leg
    return (np.clip(both, -1, 1) * 32767).astype("<i2").tobytes()


def fs_server(tmp: Path, esl_port: int, decoder: object = None) -> LiveServer:
    settings = make_settings(tmp, esl={"host": "127.0.0.1", "port": esl_port}, auth={"bridge_token": "fs-secret"})
    return LiveServer(settings, decoder)


@pytest.fixture
def fake_asr_server(tmp_path: Path, esl: FakeEsl) -> Iterator[LiveServer]:
    with fs_server(tmp_path, esl.port, FakeDecoder) as live:
        yield live


async def stream(url: str, metadata: dict, pcm: bytes, auth: dict[str, str]) -> websockets.ClientConnection:
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], additional_headers=auth)
    assert ws.subprotocol == SUBPROTOCOL
    await ws.send(json.dumps(metadata))
    step = 2 * 2 * 160  # 20 ms of stereo 8 kHz L16
    for i in range(0, len(pcm), step * 10):
        await ws.send(pcm[i : i + step * 10])
        await asyncio.sleep(0.01)
    return ws


async def test_upgrade_needs_the_bridge_token_basic_or_bearer(fake_asr_server: LiveServer) -> None:
    url = f"{fake_asr_server.ws}/bridge/freeswitch?mix=stereo&rate=8k"
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url, subprotocols=[SUBPROTOCOL])
    basic = {"Authorization": "Basic " + __import__("base64").b64encode(b"fs:fs-secret").decode()}
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], additional_headers=basic)
    await ws.send("text where metadata JSON belongs")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.INVALID_PAYLOAD


@pytest.mark.e2e
@pytest.mark.slow
async def test_real_mandarin_stereo_reaches_both_speakers_and_a_halt_kills_the_channel(
    tmp_path: Path, esl: FakeEsl
) -> None:
    pcm = stereo_speech("aishellsample_BAC009S0252W0100.flac", "wenet_BAC009S0724W0121.flac")
    metadata = {"uuid": "fs-call-1", "agent_id": "A-fs", "agent_uuid": "fs-agent-1", "debtor_tz": "Asia/Shanghai"}
    with fs_server(tmp_path, esl.port) as live:
        bearer = {"Authorization": "Bearer fs-secret"}
        async with record_feed(f"{live.ws}/ws/console") as feed:
            ws = await stream(f"{live.ws}/bridge/freeswitch?mix=stereo&rate=8k", metadata, pcm, bearer)
            await feed.wait_for(
                lambda ev: (
                    {e["speaker"] for e in ev if e["type"] == "transcript" and e.get("final")} == {"agent", "customer"}
                ),
                within_s=120,
            )
            # Auth is off but for bridges (only a bridge token is set): on loopback, a halt needs no login.
            async with httpx.AsyncClient() as http:
                r = await http.post(f"{live.http}/api/calls/fs-call-1/halt", json={"reason": "test halt"})
            assert r.status_code == 202, r.text
            assert r.json()["outcome"] == "done", r.json()
            await asyncio.wait_for(esl.got.wait(), 10)
            assert "uuid_kill fs-call-1" in esl.commands
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        texts = {e["speaker"]: e["text"] for e in feed.events if e["type"] == "transcript" and e.get("final")}
        assert texts["agent"] and texts["customer"], texts
