"""Asterisk ARI (REST over httpx): per-leg ``spy=in`` snoops into AudioSocket externalMedia, halting and whispering.

What a bridged collector↔customer call needs from ARI:

- ``attach_leg``: ``POST /channels/{leg}/snoop?spy=in&app=…`` (that party's voice only), ``POST
  /channels/externalMedia?encapsulation=audiosocket&transport=tcp&format=slin&data=<uuid>`` towards our AudioSocket
  server, and a mixing bridge joining the two; the UUID is registered first (``AudioSocketRegistry``) with the
  call id and which party the leg is, so the socket arrives tagged.
- ``AriControl.hangup``: ``DELETE /channels/{id}`` on both legs (a leg already gone, 404, counts as ended).
- ``AriControl.warn_agent``: a ``whisper=out`` snoop on the agent's leg, ``POST /channels/{snoop}/play`` of
  ``ari.warn_media``, and the snoop deleted after ``ari.warn_s`` (a ``tone:`` playback repeats until then).

``AriApp`` is the Stasis application on the events websocket (``/ari/events?app=…``, HTTP Basic): a customer
channel entering ``Stasis(app,<agent endpoint>[,<agent id>])`` gets its collector dialled into the app, both legs
are snooped into the monitor as ONE call (call id: the customer's channel id), and only then answered and bridged;
its halts and warnings go through ARI. A leg leaving Stasis (hang-up) ends the other leg and the monitored call
(``far_end_hangup:<party>``). A tap whose socket carries no audio ``ari.tap_check_s`` after bridging is rebuilt (new
snoop and bridge, same socket) up to ``ari.tap_rebuilds`` times, then reported to supervisors as a party not heard.
The websocket reconnects with a doubling backoff.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import websockets

from compliance_monitor.config import AriSettings
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry, CallInfo
from compliance_monitor.messages import ControlResult, Outcome, Speaker

if TYPE_CHECKING:
    from compliance_monitor.monitor import Monitor

log = logging.getLogger(__name__)
# Channels our requests create (snoops, externalMedia): they enter the app too, and are no customer's call.
OWN_CHANNELS = ("Snoop/", "AudioSocket/", "UnicastRTP/", "WebSocket/")
ADD_CHANNEL_RETRY_S = (0.05, 0.5)  # first and longest wait between addChannel tries (doubling)
AGENT_ARG = "cm-agent-leg"  # appArgs of the collector's channel we originate: "cm-agent-leg,<customer channel>"


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
        bridge = str((await self._call("POST", "/bridges", type="mixing"))["id"])
        try:
            await self._add_channels(bridge, ",".join(channels))
        except BaseException:
            with contextlib.suppress(httpx.HTTPError):
                await self.delete_bridge(bridge)
            raise
        return bridge

    async def _add_channels(self, bridge: str, channels: str) -> None:
        """A channel we just created (snoop, externalMedia) enters the app a moment after the REST answer; until
        then addChannel answers 422 'not in Stasis application' (seen against Asterisk 22 under load): retry,
        doubling the wait, for up to ``ari.join_within_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.join_within_s
        delay, longest = ADD_CHANNEL_RETRY_S
        while True:
            try:
                await self._call("POST", f"/bridges/{bridge}/addChannel", channel=channels)
                return
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 422 or loop.time() + delay > deadline:
                    raise
                log.info("ARI: %s not in the app yet; adding to bridge %s again in %.2f s", channels, bridge, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

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

    async def originate(self, endpoint: str, app_args: str) -> str:
        """A new channel to ``endpoint`` that enters our Stasis app (StasisStart) once it answers."""
        body = await self._call("POST", "/channels", endpoint=endpoint, app=self.settings.app, appArgs=app_args)
        return str(body["id"])

    async def answer(self, channel: str) -> None:
        await self._call("POST", f"/channels/{channel}/answer")

    async def delete_bridge(self, bridge: str) -> None:
        with contextlib.suppress(httpx.HTTPStatusError):  # 404: already gone
            await self._call("DELETE", f"/bridges/{bridge}")

    def events_url(self) -> str:
        base = self.settings.url or ""
        scheme, rest = base.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/events?app={self.settings.app}"

    def basic_auth(self) -> str:
        pair = f"{self.settings.user}:{self.settings.password.get_secret_value()}"
        return "Basic " + base64.b64encode(pair.encode()).decode()


@dataclass
class Leg:
    channel: str
    speaker: Speaker
    audiosocket_uuid: str
    snoop: str
    media: str
    bridge: str


Joined = Callable[..., Awaitable[None]]  # (bridge, *channels): until Asterisk says they are in it


async def _no_wait(bridge: str, *channels: str) -> None:
    return None


async def attach_leg(
    client: AriClient,
    registry: AudioSocketRegistry,
    channel: str,
    speaker: Speaker,
    info: CallInfo,
    joined: Joined = _no_wait,
) -> Leg:
    """One party of the call: its snoop's audio arrives at our AudioSocket server, tagged ``speaker``. Returns once
    ``joined`` says the snoop and its externalMedia channel are in their bridge."""
    key = str(uuid.uuid4())
    legs = info.legs or (Speaker.AGENT, Speaker.CUSTOMER)  # both parties' sockets join one monitored call
    registry.register(key, CallInfo(info.call_id, info.agent_id, speaker, info.metadata, legs))
    created: list[str] = []
    try:
        created.append(await client.snoop(channel, spy="in"))
        created.append(await client.external_media(key))
        bridge = await client.bridge(*created)
        await joined(bridge, *created)
        return Leg(channel, speaker, key, *created, bridge)
    except BaseException:  # a half-made tap would open a silent leg: take it down
        registry.forget(key)
        for made in created:
            with contextlib.suppress(httpx.HTTPError):
                await client.hangup(made)
        raise


async def rebuild_tap(client: AriClient, leg: Leg, joined: Joined = _no_wait) -> Leg:
    """A new snoop and bridge for a tap that carries no audio; its externalMedia channel (our socket) stays.

    Adding the media channel to the new bridge moves it out of the old one, so the socket sees no gap."""
    snoop = await client.snoop(leg.channel, spy="in")
    try:
        bridge = await client.bridge(snoop, leg.media)
        await joined(bridge, snoop, leg.media)
    except BaseException:
        with contextlib.suppress(httpx.HTTPError):
            await client.hangup(snoop)
        raise
    with contextlib.suppress(httpx.HTTPError):
        await client.hangup(leg.snoop)
        await client.delete_bridge(leg.bridge)
    return dataclasses.replace(leg, snoop=snoop, bridge=bridge)


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


@dataclass
class AriCall:
    """One customer ↔ collector call our Stasis application bridged."""

    call_id: str
    customer: str
    agent_endpoint: str
    agent_id: str | None
    metadata: dict[str, Any]
    agent: str | None = None
    bridge: str | None = None
    legs: list[Leg] = field(default_factory=list)
    ended: bool = False
    watch: asyncio.Task[None] | None = None  # checks that each tap carries audio


class AriApp:
    """The Stasis application: bridges each customer with the collector it dials, and has both legs monitored."""

    def __init__(
        self,
        client: AriClient,
        monitor: Monitor,
        registry: AudioSocketRegistry,
        connect: Callable[..., Any] = websockets.connect,
    ) -> None:
        self.client, self.monitor, self.registry = client, monitor, registry
        self._connect = connect
        self.calls: dict[str, AriCall] = {}  # by channel id, customer's and collector's
        self.connects = 0  # successful websocket connections (reconnects included)
        # Call set-ups run beside the event reader: it keeps reading (and answering pings) while REST calls wait.
        self._setups: set[asyncio.Task[None]] = set()
        # (bridge, channel) -> set once Asterisk reports the channel in the bridge: addChannel only queues the join,
        # and a snoop requested while a join was still queued left its tap silent and the channel wedged (Asterisk 22).
        self._joins: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def run(self) -> None:
        """Until cancelled: the events websocket, reconnected with a doubling backoff."""
        try:
            await self._run()
        finally:
            for task in self._setups:
                task.cancel()
            for call in self.calls.values():
                if call.watch is not None:
                    call.watch.cancel()

    async def drain(self) -> None:
        """Wait for the call set-ups under way."""
        while self._setups:
            await asyncio.wait(set(self._setups))

    async def _run(self) -> None:
        s = self.client.settings
        wait = s.reconnect_min_s
        while True:
            try:
                async with self._connect(
                    self.client.events_url(), additional_headers={"Authorization": self.client.basic_auth()}
                ) as ws:
                    self.connects += 1
                    wait = s.reconnect_min_s
                    log.info("ARI: events websocket connected (app %s)", s.app)
                    async for message in ws:
                        await self.handle(json.loads(message))
            except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as exc:
                log.warning("ARI: events websocket lost (%s); reconnecting in %.1f s", exc, wait)
            except Exception:  # our bug: logged, and the application goes on rather than leave calls unbridged
                log.exception("ARI: events handling failed; reconnecting in %.1f s", wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, s.reconnect_max_s)

    async def handle(self, event: dict[str, Any]) -> None:
        """One event. A StasisStart's set-up runs in its own task; a failure is logged, never ends the application."""
        kind, channel = event.get("type"), (event.get("channel") or {})
        if kind == "StasisStart":
            task = asyncio.create_task(self._set_up(channel, [str(a) for a in event.get("args") or []]))
            self._setups.add(task)
            task.add_done_callback(self._setups.discard)
        elif kind == "ChannelEnteredBridge":
            joined = self._join((event.get("bridge") or {}).get("id", ""), str(channel.get("id", "")))
            if not joined.done():
                joined.set_result(None)
        elif kind == "ChannelLeftBridge":
            self._joins.pop(((event.get("bridge") or {}).get("id", ""), str(channel.get("id", ""))), None)
        elif kind in ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"):
            await self._gone(str(channel.get("id", "")))

    def _join(self, bridge: str, channel: str) -> asyncio.Future[None]:
        key = (bridge, channel)
        if key not in self._joins:
            self._joins[key] = asyncio.get_running_loop().create_future()
        return self._joins[key]

    async def joined(self, bridge: str, *channels: str) -> None:
        """Until Asterisk reports each channel in the bridge (or ``ari.join_within_s``: then on, with a warning)."""
        waits = [self._join(bridge, channel) for channel in channels]
        try:
            async with asyncio.timeout(self.client.settings.join_within_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning(
                "ARI: %s not reported in bridge %s within %g s", channels, bridge, self.client.settings.join_within_s
            )
        finally:
            for channel in channels:
                self._joins.pop((bridge, channel), None)

    async def _set_up(self, channel: dict[str, Any], args: list[str]) -> None:
        try:
            await self._stasis_start(channel, args)
        except (httpx.HTTPError, KeyError) as exc:
            log.error("ARI: StasisStart of channel %s: %s: %r", channel.get("id"), type(exc).__name__, exc)
            await self._gone(str(channel.get("id", "")), "monitor_setup_failed")

    async def _stasis_start(self, channel: dict[str, Any], args: list[str]) -> None:
        if not args or str(channel.get("name", "")).startswith(OWN_CHANNELS):
            return  # our own snoop and externalMedia channels enter the app too (externalMedia with its data as arg)
        if args[0] == AGENT_ARG:
            call = self.calls.get(args[1]) if len(args) > 1 else None
            if call is not None and not call.ended:
                await self._bridge(call, str(channel["id"]))
            return
        customer = str(channel["id"])
        number = (channel.get("caller") or {}).get("number")
        call = AriCall(
            call_id=customer,
            customer=customer,
            agent_endpoint=args[0],
            agent_id=args[1] if len(args) > 1 and args[1] else None,
            metadata={"customer_number": number} if number else {},
        )
        self.calls[customer] = call
        call.agent = await self.client.originate(call.agent_endpoint, f"{AGENT_ARG},{customer}")
        self.calls[call.agent] = call

    async def _bridge(self, call: AriCall, agent: str) -> None:
        """The collector answered: tap each party into the monitor as one call, then answer and bridge them.

        Tapped first, so the monitor hears the call from its first word. Each step waits for Asterisk's events to
        say the last one is done (``joined``): under load, a snoop requested while the previous step's bridge join
        was still queued left that tap silent and wedged the channel (Asterisk 22.10, 1 in 43 loaded test calls)."""
        call.agent = agent
        self.calls[agent] = call
        self.monitor.expect_call(call.call_id, AriControl(self.client, agent, call.customer))
        info = CallInfo(call.call_id, call.agent_id, metadata=call.metadata)
        for channel, speaker in ((agent, Speaker.AGENT), (call.customer, Speaker.CUSTOMER)):
            try:
                call.legs.append(await attach_leg(self.client, self.registry, channel, speaker, info, self.joined))
            except httpx.HTTPError as exc:  # the parties will talk anyway: the supervisor is told who is not heard
                why = f"ari_snoop_failed:{type(exc).__name__}"
                log.error("ARI: call %s: the %s leg is NOT monitored: %r", call.call_id, speaker, exc)
                self.monitor.leg_unmonitored(call.call_id, speaker, why)
        if not call.legs:
            self.monitor.call_unmonitored(call.call_id, call.agent_id, "ari_snoop_failed")
        if not call.ended:
            await self.client.answer(call.customer)
            call.bridge = await self.client.bridge(call.customer, agent)
            await self.joined(call.bridge, call.customer, agent)
        if call.ended:  # a party hung up while we were setting up: what we added goes too
            await self._release(call, call.legs)
            return
        log.info("ARI: call %s bridged (collector %s); %d of 2 legs monitored", call.call_id, agent, len(call.legs))
        if call.legs:
            call.watch = asyncio.create_task(self._watch_taps(call), name=f"ari-taps-{call.call_id}")

    async def _watch_taps(self, call: AriCall) -> None:
        """A tap whose socket has carried no audio ``tap_check_s`` after bridging is rebuilt (a new snoop and bridge),
        up to ``tap_rebuilds`` times; one still silent then is reported to supervisors as not heard."""
        s = self.client.settings
        for attempt in range(s.tap_rebuilds + 1):
            await asyncio.sleep(s.tap_check_s)
            silent = [leg for leg in call.legs if not self.registry.heard(leg.audiosocket_uuid)]
            if call.ended or not silent:
                return
            for leg in silent:
                if attempt == s.tap_rebuilds:
                    why = f"tap_silent:{s.tap_check_s * (attempt + 1):g}s"
                    log.error("ARI: call %s: the %s tap still carries no audio", call.call_id, leg.speaker)
                    self.monitor.leg_unmonitored(call.call_id, leg.speaker, why)
                    continue
                log.warning("ARI: call %s: the %s tap carries no audio; rebuilding it", call.call_id, leg.speaker)
                try:
                    call.legs[call.legs.index(leg)] = await rebuild_tap(self.client, leg, self.joined)
                except httpx.HTTPError as exc:
                    log.error("ARI: call %s: rebuilding the %s tap failed: %r", call.call_id, leg.speaker, exc)

    async def _gone(self, channel: str, reason: str | None = None) -> None:
        """A party left: the other leg, the snoops' media and the bridges go too, and the monitored call ends."""
        call = self.calls.get(channel)
        if call is None or call.ended:
            return
        call.ended = True
        if call.watch is not None:
            call.watch.cancel()
        party = "agent" if channel == call.agent else "customer"
        self.monitor.end_call(call.call_id, reason or f"far_end_hangup:{party}")
        self.monitor.forget_call(call.call_id)
        for key in (call.customer, call.agent):
            if key is not None:
                self.calls.pop(key, None)
        for other in (call.customer, call.agent):
            if other and other != channel:
                with contextlib.suppress(httpx.HTTPError):
                    await self.client.hangup(other)
        if call.bridge is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.client.delete_bridge(call.bridge)
        await self._release(call, list(call.legs))
        log.info("ARI: call %s ended: the %s hung up", call.call_id, party)

    async def _release(self, call: AriCall, legs: list[Leg]) -> None:
        """The snoops' externalMedia channels and bridges of ``legs`` (snoops end with their parties)."""
        for leg in legs:
            call.legs.remove(leg)
            self.registry.forget(leg.audiosocket_uuid)
            with contextlib.suppress(httpx.HTTPError):
                await self.client.hangup(leg.media)
                await self.client.delete_bridge(leg.bridge)
