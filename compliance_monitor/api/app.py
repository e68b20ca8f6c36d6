"""``create_app(settings)``: the one FastAPI app — bridges, console feeds, REST and the UI pages."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from compliance_monitor.api import alerts, bridges, console, pbx, rest, screens, session
from compliance_monitor.api.auth import enforce
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.asr.decoder import WhisperDecoder
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.asr.weights import resolve_model
from compliance_monitor.bus.memory import InMemoryBus
from compliance_monitor.bus.redis_bus import RedisBus
from compliance_monitor.config import BusSettings, Settings
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.detect.model import load_model_detector
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry
from compliance_monitor.monitor import Monitor
from compliance_monitor.pipeline import Services
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.resources import ui_dir
from compliance_monitor.telephony.ari import AriApp, AriClient
from compliance_monitor.telephony.audiosocket import AudioSocketServer
from compliance_monitor.text.tokenise import Tokenizer

log = logging.getLogger(__name__)

DecoderFactory = Callable[[], WhisperDecoder]


def default_decoder_factory(settings: Settings) -> DecoderFactory:
    def build() -> WhisperDecoder:
        model_dir = resolve_model(settings.asr.model, settings.asr.cache_dir)
        return WhisperDecoder(str(model_dir), settings.asr)

    return build


def preflight(settings: Settings) -> None:
    """Fail fast, with a one-line reason, on what would stop the server starting: model, rules."""
    resolve_model(settings.asr.model, settings.asr.cache_dir)
    RuleSet(settings.rules)
    Tokenizer(settings.rules.dir / settings.rules.user_dict)


async def build_services(settings: Settings, decoder_factory: DecoderFactory | None = None) -> Services:
    # Fail fast on configuration (model, rules) before accepting any call.
    tokenizer = Tokenizer(settings.rules.dir / settings.rules.user_dict)
    rules = RuleSet(settings.rules)
    asr = AsrScheduler(settings.asr, decoder_factory or default_decoder_factory(settings))
    await asr.start()
    archive = Archive(settings.archive.path, tokenizer.cut_for_search)
    await archive.open()
    bus = build_bus(settings.bus)
    if isinstance(bus, RedisBus):
        await bus.start()  # raises RedisBusUnavailable (naming host:port) when Redis is unreachable
    log.info(
        "monitor ready: ASR on %s, %d rules, archive %s", asr.device, rules.engine.rule_count, settings.archive.path
    )
    model = (
        load_model_detector(
            settings.classifier.path,
            settings.classifier.threads,
            settings.classifier.labels,
            context=settings.classifier.context,
        )
        if settings.classifier.enabled
        else None
    )
    return Services(settings, asr, tokenizer, rules, PolicyEngine(settings.policy), archive, bus, model)


def build_bus(settings: BusSettings) -> InMemoryBus | RedisBus:
    if settings.backend == "redis":
        return RedisBus(
            settings.redis_url, settings.stream_prefix, settings.subscriber_queue_size, settings.replay_events_per_call
        )
    return InMemoryBus(settings.subscriber_queue_size, settings.replay_events_per_call)


def create_app(settings: Settings, decoder_factory: DecoderFactory | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, decoder_factory)
        if not settings.loopback and not (settings.auth.tokens or await services.archive.auth_configured()):
            await services.asr.aclose()
            await services.archive.aclose()
            raise RuntimeError(
                f"no users or tokens exist, so auth is off, but server.host is {settings.server.host!r} (not "
                "loopback): create an admin first (compliance-monitor users add NAME --role admin)"
            )
        app.state.monitor = Monitor(services)
        app.state.audiosocket_registry = AudioSocketRegistry(
            settings.audiosocket.registry_ttl_s, settings.audiosocket.registry_max
        )
        audiosocket = None
        if settings.audiosocket.enabled:
            audiosocket = AudioSocketServer(app.state.monitor, app.state.audiosocket_registry, settings)
            await audiosocket.start()
        app.state.audiosocket = audiosocket
        ari, ari_task = None, None
        if settings.ari.url and settings.ari.events:  # the Stasis application (telephony/ari.py)
            ari = AriApp(AriClient(settings.ari), app.state.monitor, app.state.audiosocket_registry)
            ari_task = asyncio.create_task(ari.run(), name="ari-events")
        app.state.ari = ari
        stop_watching = asyncio.Event()
        watcher = asyncio.create_task(services.rules.watch(stop_watching)) if settings.rules.watch else None
        try:
            yield
        finally:
            stop_watching.set()
            if watcher:
                await asyncio.gather(watcher, return_exceptions=True)
            if ari is not None and ari_task is not None:
                ari_task.cancel()
                await asyncio.gather(ari_task, return_exceptions=True)
                await ari.client.aclose()
            if audiosocket is not None:
                await audiosocket.aclose()
            await app.state.monitor.aclose()
            await services.asr.aclose()
            await services.bus.aclose()
            await services.archive.aclose()
            if services.model:
                services.model.close()

    app = FastAPI(title="Call compliance monitor", version="0.1.0", lifespan=lifespan)
    app.include_router(bridges.router)
    app.include_router(console.router)
    app.include_router(rest.router)
    app.include_router(pbx.router)
    app.include_router(session.router)
    app.include_router(screens.router)
    app.include_router(alerts.router)
    _mount_ui(app)
    return app


def _mount_ui(app: FastAPI) -> None:
    root = ui_dir()
    pages = {"/": "console.html", "/agent": "agent.html", "/search": "search.html", "/login": "login.html"}
    for route, page in pages.items():
        app.add_api_route(
            route, _page(root / page, route), methods=["GET"], include_in_schema=False, dependencies=[Depends(enforce)]
        )
    # Static assets (css, js) hold no data: public, like /login.
    app.mount("/ui", StaticFiles(directory=root), name="ui")


def _page(path: object, route: str) -> Callable[[Request], Response]:
    def serve(request: Request) -> Response:
        if route != "/login" and getattr(request.state, "principal", None) is None:
            return RedirectResponse(f"/login?next={quote(route)}", status_code=303)
        return FileResponse(path, media_type="text/html; charset=utf-8")  # type: ignore[arg-type]

    return serve


class RedactSecrets(logging.Filter):
    """Belt and braces for access logs: no credential travels in a URL any more, but a client may still send
    one; its value never reaches a log line."""

    _pattern = re.compile(r"((?:token|ticket|session|password)=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self._pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
