"""ARI REST requests of the Asterisk bridge, against a recording fake of Asterisk's ARI (httpx MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from compliance_monitor.config import AriSettings
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry, CallInfo
from compliance_monitor.messages import Outcome, Speaker
from compliance_monitor.telephony.ari import AriClient, AriControl, attach_leg

pytestmark = pytest.mark.unit


class FakeAri:
    def __init__(self, gone: set[str] | None = None, fail: set[str] | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.gone, self.fail = gone or set(), fail or set()
        self.n = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/ari")
        params = dict(request.url.params)
        self.requests.append((request.method, path, params))
        assert request.headers["authorization"].startswith("Basic ")
        if path in self.fail:
            return httpx.Response(500, json={"message": "boom"})
        if request.method == "DELETE":
            return httpx.Response(404 if path.rsplit("/", 1)[1] in self.gone else 204)
        self.n += 1
        return httpx.Response(200, json={"id": f"obj-{self.n}"})


def client(fake: FakeAri, **settings: object) -> AriClient:
    s = AriSettings(url="http://pbx:8088/ari", password="pw", warn_s=0.01, **settings)  # type: ignore[arg-type]
    return AriClient(s, httpx.MockTransport(fake))


async def test_a_leg_is_snooped_spy_in_into_audiosocket_external_media_registered_with_its_party() -> None:
    fake, registry = FakeAri(), AudioSocketRegistry()
    ari = client(fake, audiosocket_host="10.0.0.5:9092")
    leg = await attach_leg(ari, registry, "chan-agent", Speaker.AGENT, CallInfo("call-1", "A7", metadata={"x": 1}))
    method, path, params = fake.requests[0]
    assert (method, path, params["spy"], params["app"]) == (
        "POST",
        "/channels/chan-agent/snoop",
        "in",
        "compliance-monitor",
    )
    _, path, params = fake.requests[1]
    assert path == "/channels/externalMedia"
    assert params == {
        "app": "compliance-monitor",
        "external_host": "10.0.0.5:9092",
        "encapsulation": "audiosocket",
        "transport": "tcp",
        "format": "slin",
        "data": leg.audiosocket_uuid,
    }
    assert [r[1] for r in fake.requests[2:]] == ["/bridges", f"/bridges/{leg.bridge}/addChannel"]
    assert fake.requests[3][2]["channel"] == f"{leg.snoop},{leg.media}"
    info = registry.lookup(leg.audiosocket_uuid)
    assert info is not None and (info.call_id, info.agent_id, info.speaker) == ("call-1", "A7", Speaker.AGENT)
    await ari.aclose()


async def test_halt_deletes_both_legs_and_a_leg_already_gone_counts_as_ended() -> None:
    fake = FakeAri(gone={"chan-cust"})
    result = await AriControl(client(fake), "chan-agent", "chan-cust").hangup("halt")
    assert result.outcome is Outcome.DONE
    assert [(m, p) for m, p, _ in fake.requests] == [
        ("DELETE", "/channels/chan-cust"),
        ("DELETE", "/channels/chan-agent"),
    ]
    failing = FakeAri(fail={"/channels/chan-agent"})
    assert (await AriControl(client(failing), "chan-agent", "chan-cust").hangup("halt")).outcome is Outcome.FAILED


async def test_warn_whispers_to_the_agent_leg_only_and_removes_the_snoop() -> None:
    fake = FakeAri()
    result = await AriControl(client(fake), "chan-agent", "chan-cust").warn_agent("stop threatening")
    assert result.outcome is Outcome.DONE, result
    (m1, p1, q1), (m2, p2, q2), (m3, p3, _) = fake.requests
    assert (m1, p1, q1["whisper"], q1["spy"]) == ("POST", "/channels/chan-agent/snoop", "out", "none")
    assert (m2, p2, q2["media"]) == ("POST", "/channels/obj-1/play", "tone:1000/300,0/200")
    assert (m3, p3) == ("DELETE", "/channels/obj-1")
    assert not any("chan-cust" in p for _, p, _ in fake.requests)
    json.dumps(fake.requests)  # plain data
