"""Twilio: a halt ends the call through the REST API (a real local HTTP server stands in for Twilio and records
the request), and media-stream upgrades must carry a valid X-Twilio-Signature once an auth token is set."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from compliance_monitor.audio.g711 import ulaw_encode
from compliance_monitor.config import TwilioSettings
from compliance_monitor.messages import Outcome
from compliance_monitor.telephony.twilio_api import TwilioApi
from tests.conftest import LiveServer, free_port, make_settings
from tests.fakes import FakeDecoder
from tests.test_live_call import TONE
from tests.wsclient import record_feed

pytestmark = pytest.mark.unit

SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "tw-auth-token"


class FakeTwilio:
    """Twilio's REST API on 127.0.0.1: records each request and answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                fake.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("authorization"),
                        "content_type": self.headers.get("content-type"),
                        "form": parse_qs(body),
                    }
                )
                payload = json.dumps({"sid": self.path.rsplit("/", 1)[-1][:-5], "status": "completed"}).encode()
                self.send_response(fake.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTwilio:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def settings_for(url: str, **extra: Any) -> TwilioSettings:
    return TwilioSettings(account_sid=SID, auth_token=TOKEN, api_base_url=url, timeout_s=2, **extra)


def expected_auth() -> str:
    return "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()


# --------------------------------------------------------------------------- the REST call


async def test_complete_call_posts_status_completed_with_basic_auth(twilio: FakeTwilio) -> None:
    result = await TwilioApi(settings_for(twilio.url)).complete_call("CA42")
    assert result.outcome is Outcome.DONE
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Calls/CA42.json"
    assert request["auth"] == expected_auth()
    assert request["content_type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {"Status": ["completed"]}


async def test_a_refused_request_is_a_failed_outcome(twilio: FakeTwilio) -> None:
    twilio.status = 404
    result = await TwilioApi(settings_for(twilio.url)).complete_call("CA-gone")
    assert result.outcome is Outcome.FAILED and "404" in result.detail


async def test_an_unreachable_api_is_a_failed_outcome() -> None:
    result = await TwilioApi(settings_for(f"http://127.0.0.1:{free_port()}")).complete_call("CA1")
    assert result.outcome is Outcome.FAILED and "unreachable" in result.detail


async def test_without_credentials_a_halt_is_not_supported() -> None:
    result = await TwilioApi(TwilioSettings()).complete_call("CA1")
    assert result.outcome is Outcome.NOT_SUPPORTED and "CM_TWILIO__ACCOUNT_SID" in result.detail


# --------------------------------------------------------------------------- through the running server


def twilio_messages(call_sid: str, frames: int) -> list[str]:
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {"callSid": call_sid, "streamSid": "MZ1", "accountSid": SID, "tracks": ["inbound", "outbound"]},
    }
    payload = base64.b64encode(ulaw_encode(TONE)).decode()
    media = [
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(i + 2),
                "media": {"track": "outbound", "timestamp": str(20 * i), "chunk": str(i + 1), "payload": payload},
            }
        )
        for i in range(frames)
    ]
    return [json.dumps(start), *media]


def signed(url: str, token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, {})}


@pytest.fixture
def server(tmp_path: Path, twilio: FakeTwilio) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path, twilio={"account_sid": SID, "auth_token": TOKEN, "api_base_url": twilio.url, "timeout_s": 2}
    )
    with LiveServer(settings, FakeDecoder) as live:
        yield live


async def test_a_supervisor_halt_ends_the_twilio_call(server: LiveServer, twilio: FakeTwilio) -> None:
    url = f"{server.ws}/bridge/twilio?agent=a7"
    async with record_feed(f"{server.ws}/ws/console") as console:
        async with websockets.connect(url, additional_headers=signed(url)) as stream:
            for message in twilio_messages("CA-halt", 10):
                await stream.send(message)
            await console.wait_for(lambda ev: any(e["type"] == "call_started" for e in ev), 10)
            async with httpx.AsyncClient() as client:
                answer = await client.post(f"{server.http}/api/calls/CA-halt/halt", json={"reason": "threat"})
            assert answer.json() == {"call_id": "CA-halt", "status": "halted", "outcome": "done"}
            await asyncio.wait_for(stream.wait_closed(), 5)  # the stream is closed once the call is over
        events = await console.wait_call_ended("CA-halt", 15)
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Calls/CA-halt.json"
    assert request["auth"] == expected_auth() and request["form"] == {"Status": ["completed"]}
    outcomes = [e for e in events if e["type"] == "action_outcome"]
    assert [(e["action"], e["outcome"]) for e in outcomes] == [("halt_call", "done")]
    assert [e["reason"] for e in events if e["type"] == "call_ended"] == ["halted"]
    async with httpx.AsyncClient() as client:
        call = (await client.get(f"{server.http}/api/calls/CA-halt")).json()
    assert [(a["action"], a["outcome"]) for a in call["actions"]] == [("halt_call", "done")]


async def test_a_failed_twilio_halt_keeps_the_call_monitored(server: LiveServer, twilio: FakeTwilio) -> None:
    twilio.status = 500
    url = f"{server.ws}/bridge/twilio"
    async with websockets.connect(url, additional_headers=signed(url)) as stream:
        for message in twilio_messages("CA-fail", 5):
            await stream.send(message)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{server.http}/api/calls/CA-fail/halt", json={"reason": "threat"})
            assert answer.json()["outcome"] == "failed"
            live = (await client.get(f"{server.http}/api/calls?status=live")).json()["calls"]
        assert [c["call_id"] for c in live] == ["CA-fail"]  # still live, still listened to
        await stream.send(json.dumps({"event": "stop", "sequenceNumber": "99"}))


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        ("valid", True),
        ("wrong_token", False),
        ("other_url", False),
        ("missing", False),
    ],
)
async def test_twilio_upgrades_need_a_valid_signature(server: LiveServer, headers: str, accepted: bool) -> None:
    url = f"{server.ws}/bridge/twilio?tenant=t1"
    sign = {
        "valid": signed(url),
        "wrong_token": signed(url, "not-the-token"),
        "other_url": signed(f"{server.ws}/bridge/twilio?tenant=t2"),
        "missing": {},
    }[headers]
    if accepted:
        async with websockets.connect(url, additional_headers=sign) as stream:
            for message in twilio_messages(f"CA-sig-{headers}", 2):
                await stream.send(message)
            await stream.send(json.dumps({"event": "stop", "sequenceNumber": "99"}))
            await asyncio.wait_for(stream.wait_closed(), 5)
            assert stream.close_code == 1000
        return
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers=sign):
            pass
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{server.http}/api/stats")).json()["bridges"]
    assert stats["rejected"].get("bad_signature") == 1


def test_the_signed_url_is_the_one_twilio_called() -> None:
    from starlette.websockets import WebSocket

    from compliance_monitor.api.bridges import twilio_url

    scope = {
        "type": "websocket",
        "scheme": "ws",
        "path": "/bridge/twilio",
        "query_string": b"a=1",
        "server": ("10.0.0.5", 8000),
        "headers": [(b"host", b"monitor.example.com"), (b"x-forwarded-proto", b"https")],
    }
    ws = WebSocket(scope, receive=None, send=None)  # type: ignore[arg-type]
    assert twilio_url(ws, None) == "wss://monitor.example.com/bridge/twilio?a=1"  # TLS ended at the proxy
    assert twilio_url(ws, "wss://cm.example.com/tw") == "wss://cm.example.com/tw?a=1"
