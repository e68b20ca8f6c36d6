"""The compliance-monitor command line: serve the monitor, stream calls into it, check and measure detection."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compliance_monitor.asr.prompt import PROMPTS
from compliance_monitor.config import ServerSettings, Settings, load_settings
from compliance_monitor.resources import assets_dir

log = logging.getLogger("compliance_monitor")

if TYPE_CHECKING:
    from compliance_monitor.ingest.replay import ReplayResult

DEMO_CALL = "demo_call.wav"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    server: dict[str, object] = {}
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None):
        server["port"] = args.port
    if server:
        overrides["server"] = server
    return load_settings(args.config, **overrides)


async def _serve(settings: Settings, until: asyncio.Future[None] | None = None, *, quiet: bool = False) -> None:
    import uvicorn

    from compliance_monitor.api.app import create_app, preflight

    preflight(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning" if quiet else settings.server.log_level,
        access_log=not quiet,
        ws_max_size=4 * 1024 * 1024,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    if until is not None:
        await asyncio.wait({serving, until}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
    await serving


async def _wait_until_up(settings: Settings, within_s: float = 120.0) -> None:
    import httpx

    url = f"http://{settings.server.host}:{settings.server.port}/api/health"
    async with httpx.AsyncClient() as client:
        for _ in range(int(within_s / 0.25)):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"the monitor did not come up at {url} within {within_s:.0f}s")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(_serve(settings))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    result, findings = asyncio.run(_replay(args))
    print(
        json.dumps(
            {
                "call_id": result.call_id,
                "audio_s": round(result.audio_s, 2),
                "frames_sent": result.frames_sent,
                "close_code": result.closed_code,
                "findings": findings,
                "server_messages": result.server_messages,
            },
            ensure_ascii=False,
        )
    )
    return 0


async def _replay(args: argparse.Namespace) -> tuple[ReplayResult, int | None]:
    """Stream the file and, unless --no-findings, print the call's findings and actions from the console feed
    as they come; returns the replay result and the number of findings (None when the feed was not read)."""
    import uuid

    from compliance_monitor.ingest.replay import console_url, describe_event, replay, watch_call

    url = args.url or _default_url(args.bridge)
    call_id = args.call_id or f"CA{uuid.uuid4().hex}"
    findings = 0

    def show(event: dict[str, object]) -> None:
        nonlocal findings
        findings += event["type"] == "finding"
        print(describe_event(event), flush=True)

    watcher: asyncio.Task[int | None] | None = None
    if not args.no_findings:
        connected = asyncio.Event()
        feed = console_url(url)
        watcher = asyncio.create_task(
            watch_call(feed, call_id, show, token=args.console_token or args.token, connected=connected)
        )
        waiting = asyncio.create_task(connected.wait())
        done, _ = await asyncio.wait({watcher, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if watcher in done or not connected.is_set():
            reason = watcher.exception() if watcher.done() and not watcher.cancelled() else "no answer"
            print(f"note: cannot read findings from {feed} ({reason}); streaming without them", file=sys.stderr)
            watcher.cancel()
            watcher = None
    result = await replay(
        Path(args.file),
        url,
        bridge=args.bridge,
        speed=0.0 if args.fast else args.speed,
        call_id=call_id,
        agent_id=args.agent_id,
        token=args.token,
    )
    if watcher is None:
        return result, None
    try:  # the last segments are still being transcribed when the audio ends
        closed = await asyncio.wait_for(watcher, timeout=args.wait)
        if closed is not None:
            print(f"note: the console feed closed ({closed}) before the call ended", file=sys.stderr)
    except TimeoutError:
        print(f"note: no call_ended within {args.wait:.0f}s of the audio's end; findings so far shown", file=sys.stderr)
    return result, findings


def cmd_mic(args: argparse.Namespace) -> int:
    from compliance_monitor.ingest.mic import stream_microphone

    stats = asyncio.run(
        stream_microphone(
            args.url or _default_url("pcm"),
            device=args.device,
            call_id=args.call_id,
            agent_id=args.agent_id,
            seconds=args.seconds,
        )
    )
    print(json.dumps({"frames_sent": stats.frames_sent, "frames_dropped": stats.frames_dropped}))
    return 0


def _default_url(bridge: str, host: str = "127.0.0.1", port: int = 8000) -> str:
    return f"ws://{host}:{port}/bridge/{bridge}"


def _without_pbx(settings: Settings) -> Settings:
    """demo and eval-calls replay over websockets: no AudioSocket listener to clash with a running monitor's."""
    return settings.model_copy(update={"audiosocket": settings.audiosocket.model_copy(update={"enabled": False})})


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _without_pbx(_settings(args))
    try:
        return asyncio.run(_demo(settings, args))
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stops the server, then re-raises the signal it caught
        print("\n  demo stopped.", flush=True)
        return 0


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(_serve(settings, stop))
    up = asyncio.create_task(_wait_until_up(settings))
    await asyncio.wait({server, up}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():  # stopped (Ctrl-C) or failed before it answered
        up.cancel()
        server.result()  # a failure is raised here
        return 0
    up.result()
    base = f"http://{settings.server.host}:{settings.server.port}"
    print(
        f"\n  Supervisor console:  {base}/\n  Collector panel:     {base}/agent?agent_id=A1001\n"
        f"  Auditor search:      {base}/search\n  (Ctrl-C stops the demo)\n",
        flush=True,
    )
    streaming = asyncio.create_task(_stream_demo_calls(settings, args))
    try:
        # Ctrl-C is caught by uvicorn, which shuts the server down: that, not an error from the next
        # connection attempt, is how the demo learns it should end.
        await asyncio.wait({server, streaming}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
            server.result()
            print("\n  demo stopped.", flush=True)
            return 0
        streaming.result()
    finally:
        if not stop.done():
            stop.set_result(None)
        await asyncio.gather(server, return_exceptions=True)
    return 0


async def _stream_demo_calls(settings: Settings, args: argparse.Namespace) -> None:
    from compliance_monitor.ingest.replay import replay

    call_file = Path(args.file) if args.file else assets_dir() / DEMO_CALL
    url = _default_url(args.bridge, settings.server.host, settings.server.port)
    round_no = 0
    while True:
        round_no += 1
        print(f"  streaming demo call {round_no} ({call_file.name}) over the {args.bridge} bridge...", flush=True)
        await replay(
            call_file,
            url,
            bridge=args.bridge,
            speed=args.speed,
            call_id=f"demo-{round_no}",
            agent_id="A1001",
            tail_silence_s=1.0,
        )
        if args.once:
            await asyncio.sleep(args.linger)
            return
        await asyncio.sleep(5)


def cmd_rules_check(args: argparse.Namespace) -> int:
    from compliance_monitor.detect.evaluate import check_examples
    from compliance_monitor.detect.rulepack import RulePackError, load_pack
    from compliance_monitor.detect.rules import RuleEngine
    from compliance_monitor.text.tokenise import Tokenizer

    settings = _settings(args)
    tokenizer = Tokenizer(settings.rules.dir / settings.rules.user_dict)
    status = 0
    for path in map(Path, args.files):
        try:
            pack = load_pack(path)
        except RulePackError as exc:
            print("\n".join(exc.errors))
            status = 1
            continue
        failures = check_examples(pack, RuleEngine([pack]), tokenizer)
        n_examples = sum(len(r.examples.positive) + len(r.examples.negative) for r in pack.rules)
        for f in failures:
            expect = "should fire but did not" if f.kind == "positive" else "fired but should not"
            print(f"{path}: {f.rule_id}: {f.kind} example {expect}: {f.text}")
        print(f"{path}: {len(pack.rules)} rules, {n_examples} examples, {len(failures)} failing")
        status = status or (1 if failures else 0)
    return status


def cmd_rules_eval(args: argparse.Namespace) -> int:
    from compliance_monitor.detect.engine import pack_files
    from compliance_monitor.detect.evaluate import evaluate, format_report, load_dataset
    from compliance_monitor.detect.rules import RuleEngine
    from compliance_monitor.text.tokenise import Tokenizer

    settings = _settings(args)
    files = [Path(p) for p in args.pack] if args.pack else pack_files(settings.rules)
    report = evaluate(
        load_dataset(Path(args.dataset)),
        RuleEngine.from_files(files, regime=args.regime or settings.rules.regime),
        Tokenizer(settings.rules.dir / settings.rules.user_dict),
        categories=args.categories.split(",") if args.categories else None,
    )
    print(
        json.dumps(report.as_dict(), ensure_ascii=False, indent=1)
        if args.json
        else format_report(report, show_errors=args.errors)
    )
    return 0


def cmd_classifier_eval(args: argparse.Namespace) -> int:
    from compliance_monitor.detect import classifier_eval as ce
    from compliance_monitor.detect.classifier import ClassifierNotFound, UtteranceClassifier
    from compliance_monitor.detect.engine import pack_files
    from compliance_monitor.detect.evaluate import load_dataset
    from compliance_monitor.detect.rules import RuleEngine
    from compliance_monitor.text.tokenise import Tokenizer

    settings = _settings(args)
    try:
        classifier = UtteranceClassifier.load(
            args.model or settings.classifier.path, threads=settings.classifier.threads
        )
    except ClassifierNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = load_dataset(Path(args.dataset))
    engine = RuleEngine.from_files(pack_files(settings.rules))
    tokenizer = Tokenizer(settings.rules.dir / settings.rules.user_dict)
    context = settings.classifier.context if args.context is None else args.context
    preds = ce.predictions(
        data, engine, tokenizer, classifier, settings.classifier.labels, segments=args.segments, context=context
    )
    table = ce.report(preds, data)
    print(json.dumps(ce.as_dict(table), indent=1) if args.json else ce.format_report(table, len(data)))
    return 0


def cmd_eval_calls(args: argparse.Namespace) -> int:
    from compliance_monitor.evalcalls import format_summary, summarise

    summary = summarise(asyncio.run(_eval_calls(args)))
    print(json.dumps(summary, ensure_ascii=False, indent=1) if args.json else format_summary(summary))
    return 0


async def _eval_calls(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from compliance_monitor.evalcalls import run_eval

    manifest = Path(args.manifest)
    if args.url:
        return await run_eval(
            manifest,
            args.url.rstrip("/"),
            bridge=args.bridge,
            concurrency=args.concurrency,
            speed=args.speed,
            only=args.call,
        )
    settings = _without_pbx(_settings(args)).model_copy(update={"server": ServerSettings(port=_free_port())})
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(_serve(settings, stop, quiet=True))  # stdout is the report
    try:
        await _wait_until_up(settings)
        return await run_eval(
            manifest,
            f"ws://127.0.0.1:{settings.server.port}",
            bridge=args.bridge,
            concurrency=args.concurrency,
            speed=args.speed,
            only=args.call,
        )
    finally:
        stop.set_result(None)
        await server


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cmd_asr_eval(args: argparse.Namespace) -> int:
    from compliance_monitor.asr.evaluate import load_manifest
    from compliance_monitor.asr.scoring import format_report, pooled

    settings = _settings(args)
    clips = load_manifest(Path(args.manifest), args.split, args.ci)
    if not clips:
        print(f"no clips in {args.manifest} (split={args.split}, ci={args.ci})", file=sys.stderr)
        return 2
    rows = _asr_in_process(args, settings, clips)
    if "live" in args.mode:
        rows += asyncio.run(_asr_live(args, settings, clips))
    if args.json:
        report = {"rows": [r.__dict__ | {"cer": r.cer, "lost": r.lost} for r in rows], "summary": pooled(rows)}
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(format_report(rows))
    return 0


def _asr_in_process(args: argparse.Namespace, settings: Settings, clips: list) -> list:  # type: ignore[type-arg]
    """offline (stock transcribe), whole and streaming: decoders of our own, no server."""
    from compliance_monitor.asr.decoder import WhisperDecoder
    from compliance_monitor.asr.evaluate import condition_audio, evaluate, make_variants
    from compliance_monitor.asr.live_eval import offline_decode
    from compliance_monitor.asr.weights import resolve_model

    if not {"offline", "whole", "streaming"} & set(args.mode):
        return []
    model_dir = str(resolve_model(settings.asr.model, settings.asr.cache_dir))
    setups = [(v, WhisperDecoder(model_dir, v.settings)) for v in make_variants(settings.asr, args.window, args.prompt)]
    for _, decoder in setups:
        decoder.warm_up()
    rows = evaluate(clips, setups, args.beam, args.mode, args.condition, settings.vad)
    if "offline" in args.mode:
        model = setups[0][1].model
        rows += [
            offline_decode(model, clip, condition_audio(clip, cond), cond, beam)
            for clip in clips
            for cond in args.condition
            for beam in args.beam
        ]
    return rows


async def _asr_live(args: argparse.Namespace, settings: Settings, clips: list) -> list:  # type: ignore[type-arg]
    """Each clip as a call over a real bridge into a monitor: the one at --url, or one started here."""
    from compliance_monitor.asr.live_eval import stream_clips

    async def run(base: str) -> list:  # type: ignore[type-arg]
        return await stream_clips(clips, base, args.condition, speed=args.speed, concurrency=args.concurrency)

    if args.url:
        return await run(args.url.rstrip("/"))
    settings = settings.model_copy(update={"server": ServerSettings(port=_free_port())})
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(_serve(settings, stop, quiet=True))  # stdout is the report
    try:
        await _wait_until_up(settings)
        return await run(f"ws://127.0.0.1:{settings.server.port}")
    finally:
        stop.set_result(None)
        await server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compliance-monitor",
        description="Real-time compliance monitor for debt-collection calls: transcribes both sides of a call, "
        "checks what is said against rule packs (and the classifier, when built) and alerts collectors and "
        "supervisors.",
        epilog="First time? `compliance-monitor demo` serves the monitor and streams a bundled call "
        f"(compliance_monitor/assets/{DEMO_CALL}); open http://127.0.0.1:8000/. "
        "`compliance-monitor COMMAND -h` describes a command.",
    )
    parser.add_argument("--config", type=Path, help="TOML or YAML settings file (env CM_* overrides it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the monitor (bridges, console, API)")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8000)")
    serve.set_defaults(func=cmd_serve)

    rep = sub.add_parser("replay", help="stream a wav file into a running monitor as a bridge would")
    rep.add_argument(
        "file", help=f"wav file, stereo: agent left, customer right (try compliance_monitor/assets/{DEMO_CALL})"
    )
    rep.add_argument("--bridge", choices=["twilio", "pcm"], default="twilio", help="protocol to speak (default twilio)")
    rep.add_argument("--url", help="bridge websocket URL (default ws://127.0.0.1:8000/bridge/BRIDGE)")
    rep.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 2 = twice as fast")
    rep.add_argument("--fast", action="store_true", help="no pacing at all")
    rep.add_argument("--realtime", dest="fast", action="store_false", help="real-time pace (the default)")
    rep.add_argument("--call-id", help="call id to send (default: a random CA… id)")
    rep.add_argument("--agent-id", default="A1001", help="collector id the call belongs to (default A1001)")
    rep.add_argument("--token", help="bridge token, if the server requires one")
    rep.add_argument("--console-token", help="supervisor token for reading the findings (default: --token)")
    rep.add_argument("--no-findings", action="store_true", help="do not read and print the call's findings")
    rep.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait after the audio for the call's last findings"
    )
    rep.set_defaults(func=cmd_replay)

    mic = sub.add_parser("mic", help="stream a local microphone into a running monitor (PCM bridge)")
    mic.add_argument("--url", help="default ws://127.0.0.1:8000/bridge/pcm")
    mic.add_argument("--device", help="input device name or index (python -m sounddevice lists them)")
    mic.add_argument("--call-id", help="call id to send (default: a random one)")
    mic.add_argument("--agent-id", default="A1001", help="collector id the call belongs to (default A1001)")
    mic.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    mic.set_defaults(func=cmd_mic)

    rules = sub.add_parser("rules", help="check and evaluate rule packs").add_subparsers(
        dest="rules_cmd", required=True
    )
    check = rules.add_parser("check", help="validate packs and run the examples inside them")
    check.add_argument("files", nargs="+", help="rule pack YAML file(s), e.g. rules/cn_collection.yaml")
    check.set_defaults(func=cmd_rules_check)
    ev = rules.add_parser("eval", help="precision/recall/F1 per category and per rule on labelled utterances")
    ev.add_argument("dataset", help="JSONL: text, speaker, labels")
    ev.add_argument("--pack", action="append", help="pack file(s) to evaluate (default: the configured packs)")
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.add_argument("--errors", type=int, default=0, help="list this many false alarms and misses")
    ev.add_argument("--regime", help="packs' regime (e.g. bank_consumer_loan; default: rules.regime, else the pack's)")
    ev.add_argument(
        "--categories",
        help="comma-separated: score only these (a set labelled before a category existed, e.g. "
        "threat,abuse,impersonation,third_party_disclosure,privacy_leak,customer_abuse for utterances_test.jsonl)",
    )
    ev.set_defaults(func=cmd_rules_eval)

    evaluate = sub.add_parser("eval", help="measure detection quality").add_subparsers(dest="eval_cmd", required=True)
    calls = evaluate.add_parser("calls", help="stream labelled calls through the bridge and score the alerts")
    calls.add_argument("manifest", help="manifest.jsonl of labelled calls (see ../shared/calls/dev/README.md)")
    calls.add_argument("--bridge", choices=["twilio", "pcm"], default="twilio", help="protocol to speak")
    calls.add_argument("--concurrency", type=int, default=2, help="calls streamed at once (default 2)")
    calls.add_argument("--speed", type=float, default=1.0, help="1 = real time")
    calls.add_argument("--url", help="ws://host:port of a running monitor (default: start one in-process)")
    calls.add_argument("--call", action="append", help="only this call id (repeatable)")
    calls.add_argument("--json", action="store_true", help="machine-readable output")
    calls.set_defaults(func=cmd_eval_calls)

    clf = sub.add_parser("classifier", help="the utterance classifier").add_subparsers(dest="clf_cmd", required=True)
    clf_eval = clf.add_parser("eval", help="P/R/F1 and confusion counts: classifier, rules, rules + classifier")
    clf_eval.add_argument("dataset", help="JSONL: text, speaker, labels")
    clf_eval.add_argument("--model", type=Path, help="model directory (default: classifier.path)")
    clf_eval.add_argument(
        "--segments",
        choices=["whole", "split"],
        default="whole",
        help="split: each line is said as two segments, cut near its middle (as a pause would)",
    )
    clf_eval.add_argument(
        "--context", type=int, help="previous segments the classifier joins (default: classifier.context)"
    )
    clf_eval.add_argument("--json", action="store_true", help="machine-readable output")
    clf_eval.set_defaults(func=cmd_classifier_eval)

    asr = sub.add_parser("asr", help="measure speech recognition").add_subparsers(dest="asr_cmd", required=True)
    asr_eval = asr.add_parser("eval", help="CER and RTF over a manifest of real recordings")
    asr_eval.add_argument("manifest", help="JSONL: audio, reference, kind, source, licence")
    asr_eval.add_argument(
        "--condition",
        nargs="+",
        choices=["clean", "telephone"],
        default=["clean", "telephone"],
        help="audio as recorded, and/or through 8 kHz μ-law as a phone line carries it",
    )
    asr_eval.add_argument(
        "--mode",
        nargs="+",
        choices=["offline", "whole", "streaming", "live"],
        default=["offline", "live"],
        help="offline: stock faster-whisper transcribe of the whole clip (baseline); whole: one decode with our "
        "decoder; streaming: the live stages in-process, unpaced; live: a real server over a real bridge, paced "
        "(telephone = Twilio μ-law, clean = PCM 16 kHz)",
    )
    asr_eval.add_argument("--beam", nargs="+", type=int, default=[5], help="beam sizes (in-process modes)")
    asr_eval.add_argument(
        "--window", nargs="+", type=int, help="finals' encoder window(s) in mel frames, 0 = 30 s (default: as served)"
    )
    asr_eval.add_argument(
        "--prompt",
        nargs="+",
        choices=["served", *PROMPTS],
        default=["served"],
        help="initial prompt(s) for whole/streaming: served (asr.initial_prompt), none, or domain",
    )
    asr_eval.add_argument("--split", choices=["dev", "test"], help="only the manifest rows of this split")
    asr_eval.add_argument("--ci", action="store_true", help="only the rows marked for CI")
    asr_eval.add_argument("--url", help="live mode: a running monitor (ws://host:port); default: start one here")
    asr_eval.add_argument("--speed", type=float, default=1.0, help="live mode: 1 = real time")
    asr_eval.add_argument("--concurrency", type=int, default=2, help="live mode: clips streamed at once")
    asr_eval.add_argument("--json", action="store_true", help="machine-readable output")
    asr_eval.set_defaults(func=cmd_asr_eval)

    demo = sub.add_parser("demo", help="serve and stream a bundled collection call through the bridge")
    demo.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port to listen on (default: server.port, 8000)")
    demo.add_argument("--bridge", choices=["twilio", "pcm"], default="twilio", help="protocol to stream the call over")
    demo.add_argument("--file", help="another wav to stream instead of the bundled call")
    demo.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 2 = twice as fast")
    demo.add_argument("--once", action="store_true", help="play the call once, then exit")
    demo.add_argument("--linger", type=float, default=3.0, help="with --once: seconds to keep serving after")
    demo.set_defaults(func=cmd_demo)

    from compliance_monitor.people import add_parsers

    add_parsers(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("jieba").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for operators; details with -v
        from compliance_monitor.asr.weights import ModelUnavailableError
        from compliance_monitor.detect.rulepack import RulePackError

        if isinstance(exc, ModelUnavailableError | RulePackError | ValueError | FileNotFoundError):
            print(f"error: {exc}", file=sys.stderr)
            if args.verbose:
                raise
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
