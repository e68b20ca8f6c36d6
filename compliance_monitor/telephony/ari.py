"""Asterisk ARI (REST over httpx): per-leg ``spy=in`` snoops into AudioSocket externalMedia, halting and whispering.

What a bridged collector↔customer call needs from ARI:

- ``attach_leg``: ``POST /channels/{leg}/snoop?spy=in&app=…`` (that party's voice only), ``POST
  /channels/externalMedia?encapsulation=audiosocket&transport=tcp&format=slin&data=<uuid>`` towards our AudioSocket
  server, and a mixing bridge joining the two; the UUID is registered first (``AudioSocketRegistry``) with the
  call id and which party the leg is, so the socket arrives tagged.
- ``AriControl.hangup``: ``DELETE /channels/{id}`` on both legs (a leg already gone, 404, counts as ended).
- ``AriControl.warn_agent``: a ``whisper=out`` snoop on the agent's leg, ``POST /channels/{snoop}/play`` of
  ``ari.warn_media``, and the snoop deleted after ``ari.warn_s`` (a ``tone:`` playback repeats until then).

Left (see the report of issue 17): the events websocket (StasisStart / StasisEnd) and joining both legs'
sockets into one monitored call — ``Monitor.live_call`` takes one connection per call id today.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from compliance_monitor.config import AriSettings
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry, CallInfo
from compliance_monitor.messages import ControlResult, Outcome, Speaker


class AriClient:
    def __init__(self, settings: AriSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.url is None:
            raise ValueError("ari.url is not set")
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            auth=(settings.user, settings.password.get_secret_value()),
            timeout=settings.timeout_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **params: str) -> dict[str, Any]:
        response = await self.http.request(method, path, params=params)
        response.raise_for_status()
        return response.json() if response.content else {}

    async def snoop(self, channel: str, *, spy: str = "none", whisper: str = "none") -> str:
        body = await self._call("POST", f"/channels/{channel}/snoop", app=self.settings.app, spy=spy, whisper=whisper)
        return str(body["id"])

    async def external_media(self, audiosocket_uuid: str) -> str:
        body = await self._call(
            "POST",
            "/channels/externalMedia",
            app=self.settings.app,
            external_host=self.settings.audiosocket_host,
            encapsulation="audiosocket",
            transport="tcp",
            format="slin",
            data=audiosocket_uuid,
        )
        return str(body["id"])

    async def bridge(self, *channels: str) -> str:
        body = await self._call("POST", "/bridges", type="mixing")
        await self._call("POST", f"/bridges/{body['id']}/addChannel", channel=",".join(channels))
        return str(body["id"])

    async def hangup(self, channel: str) -> bool:
        """True when the channel is gone (ended now, or already: 404)."""
        try:
            await self._call("DELETE", f"/channels/{channel}")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return True
            raise
        return True

    async def play(self, channel: str, media: str) -> str:
        body = await self._call("POST", f"/channels/{channel}/play", media=media)
        return str(body.get("id", ""))


@dataclass
class Leg:
    channel: str
    speaker: Speaker
    audiosocket_uuid: str
    snoop: str
    media: str
    bridge: str


async def attach_leg(
    client: AriClient, registry: AudioSocketRegistry, channel: str, speaker: Speaker, info: CallInfo
) -> Leg:
    """One party of the call: its snoop's audio arrives at our AudioSocket server, tagged ``speaker``."""
    key = str(uuid.uuid4())
    legs = info.legs or (Speaker.AGENT, Speaker.CUSTOMER)  # both parties' sockets join one monitored call
    registry.register(key, CallInfo(info.call_id, info.agent_id, speaker, info.metadata, legs))
    snoop = await client.snoop(channel, spy="in")
    media = await client.external_media(key)
    return Leg(channel, speaker, key, snoop, media, await client.bridge(snoop, media))


class AriControl:
    """``CallControl`` for a call whose legs are ARI channels."""

    def __init__(self, client: AriClient, agent_channel: str, customer_channel: str) -> None:
        self.client = client
        self.agent_channel, self.customer_channel = agent_channel, customer_channel

    async def hangup(self, reason: str) -> ControlResult:
        try:
            for channel in (self.customer_channel, self.agent_channel):
                await self.client.hangup(channel)
        except httpx.HTTPError as exc:
            return ControlResult(Outcome.FAILED, f"ARI: {exc}"[:300])
        return ControlResult(Outcome.DONE, "both legs deleted over ARI")

    async def warn_agent(self, prompt: str) -> ControlResult:
        s = self.client.settings
        try:
            snoop = await self.client.snoop(self.agent_channel, whisper="out")
        except httpx.HTTPError as exc:
            return ControlResult(Outcome.FAILED, f"ARI snoop: {exc}"[:300])
        try:
            await self.client.play(snoop, s.warn_media)
            await asyncio.sleep(s.warn_s)
        except httpx.HTTPError as exc:
            return ControlResult(Outcome.FAILED, f"ARI play: {exc}"[:300])
        finally:
            with contextlib.suppress(httpx.HTTPError):  # the whisper snoop ends with the agent's channel anyway
                await self.client.hangup(snoop)
        return ControlResult(Outcome.DONE, f"{s.warn_media} whispered to {self.agent_channel}")

    async def lost(self, reason: str) -> None:
        pass  # the legs are the PBX's: losing the monitor does not end the call
