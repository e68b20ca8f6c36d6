"""Fuzzing the parsers that read what others send: both bridge protocols and the rule-pack loader.

The property: whatever the input, a parser answers with valid messages or its own error type (a
``ProtocolError`` with a close code, a ``RulePackError``) — never another exception, and never a message
the archive or the pipeline would choke on later. Bounded in examples so the file runs in seconds.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance_monitor.detect.rulepack import RulePack, RulePackError, load_pack
from compliance_monitor.ingest.base import CloseCode, IngestMessage, ProtocolError, json_depth
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLOSE_CODES = {
    CloseCode.UNSUPPORTED_DATA,
    CloseCode.INVALID_PAYLOAD,
    CloseCode.POLICY_VIOLATION,
    CloseCode.MESSAGE_TOO_BIG,
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "8000", "16000", "inbound", "outbound", "agent", "customer", "\ud800", "1e400"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | values


twilio_start = st.fixed_dictionaries(
    {},
    optional={
        "callSid": maybe(st.text(min_size=1, max_size=40)),
        "streamSid": maybe(st.text(min_size=1, max_size=40)),
        "tracks": maybe(st.lists(st.sampled_from(["inbound", "outbound", "both"]), max_size=3)),
        "customParameters": maybe(st.dictionaries(st.sampled_from(["agent_id", "agent_track", "debtor_tz"]), values)),
        "mediaFormat": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "encoding": maybe(st.sampled_from(["audio/x-mulaw", "audio/x-alaw", "audio/opus"])),
                    "sampleRate": maybe(st.sampled_from([8000, 16000, "8000", 44100])),
                    "channels": maybe(st.sampled_from([1, 2])),
                },
            )
        ),
    },
)
twilio_media = st.fixed_dictionaries(
    {},
    optional={
        "track": maybe(st.sampled_from(["inbound", "outbound"])),
        "payload": maybe(st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode())),
        "timestamp": maybe(st.integers(min_value=0, max_value=10**9).map(str)),
        "chunk": maybe(st.integers(min_value=0, max_value=10**6).map(str)),
    },
)
twilio_messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear"])},
    optional={
        "sequenceNumber": maybe(st.integers(min_value=0, max_value=10**6).map(str)),
        "start": maybe(twilio_start),
        "media": maybe(twilio_media),
        "dtmf": values,
        "mark": values,
    },
)
pcm_messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "stop", "media"])},
    optional={
        "call_id": maybe(st.text(min_size=1, max_size=40)),
        "agent_id": values,
        "sample_rate": maybe(st.sampled_from([8000, 16000, 48000, 11025])),
        "channels": maybe(st.sampled_from([1, 2, 3])),
        "encoding": maybe(st.sampled_from(["s16le", "mulaw", "alaw", "opus"])),
        "channel_map": maybe(st.lists(st.sampled_from(["agent", "customer"]), max_size=3)),
        "metadata": values,
        "reason": values,
    },
)


def encode(message: Any, mutation: int) -> str:
    """A message as a bridge might send it: JSON (with NaN/Infinity), sometimes truncated or nested deeper."""
    text = json.dumps(message, allow_nan=True)
    if mutation == 1:
        return text[: len(text) // 2]
    if mutation == 2:
        return '{"event": "start", "x": ' + "[" * 200 + "]" * 200 + "}"
    return text


def check_output(items: list[IngestMessage]) -> None:
    for item in items:
        if isinstance(item, CallStarted):
            assert isinstance(item.call_id, str) and 0 < len(item.call_id) <= 128
            assert item.agent_id is None or isinstance(item.agent_id, str)
            json.dumps(item.metadata, ensure_ascii=False).encode("utf-8")  # what the archive writes
        elif isinstance(item, AudioChunk):
            assert item.pcm.dtype == np.float32 and np.isfinite(item.pcm).all()
            assert math.isfinite(item.t) and item.t >= 0
        else:
            assert isinstance(item, CallEnded) and isinstance(item.reason, str)
            item.reason.encode("utf-8")


def feed_all(parser: TwilioStreamParser | PcmStreamParser, frames: list[str | bytes]) -> None:
    for frame in frames:
        try:
            items = parser.feed_text(frame) if isinstance(frame, str) else parser.feed_bytes(frame)
        except ProtocolError as error:
            assert error.close_code in CLOSE_CODES and error.code
            return  # the connection would close here
        check_output(items)


@FUZZ
@given(st.lists(st.tuples(twilio_messages, st.integers(0, 12)), min_size=1, max_size=8))
def test_twilio_parser_answers_any_input_with_messages_or_a_protocol_error(messages: list[tuple[Any, int]]) -> None:
    feed_all(TwilioStreamParser(), [encode(m, k) for m, k in messages])


@FUZZ
@given(
    st.lists(st.tuples(pcm_messages, st.integers(0, 12)), min_size=1, max_size=6),
    st.lists(st.binary(max_size=700), max_size=4),
)
def test_pcm_parser_answers_any_input_with_messages_or_a_protocol_error(
    messages: list[tuple[Any, int]], frames: list[bytes]
) -> None:
    texts: list[str | bytes] = [encode(m, k) for m, k in messages]
    feed_all(PcmStreamParser(), [*texts[:1], *frames, *texts[1:]])


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_parsers_answer_raw_garbage_with_a_protocol_error(garbage: str | bytes) -> None:
    for parser in (TwilioStreamParser(), PcmStreamParser()):
        feed_all(parser, [garbage])


@FUZZ
@given(st.text(alphabet='[]{}"\\ ,:a0', max_size=200))
def test_json_depth_matches_the_parser(text: str) -> None:
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return
    assert json_depth(text) == _depth(parsed)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


rule = st.fixed_dictionaries(
    {"id": maybe(st.sampled_from(["x.a", "x.b"])), "category": maybe(st.sampled_from(["threat", "abuse", "nope"]))},
    optional={
        "severity": maybe(st.sampled_from(["info", "warn", "high", "critical"])),
        "speaker": maybe(st.sampled_from(["agent", "customer", "both"])),
        "kind": maybe(st.sampled_from(["utterance", "omission", "call_start"])),
        "match": maybe(st.fixed_dictionaries({}, optional={"keywords": values, "regex": maybe(st.just(["(", "a+"]))})),
        "explanation": maybe(
            st.fixed_dictionaries({"collector": st.text(max_size=5), "supervisor": st.text(max_size=5)})
        ),
        "calling_hours": maybe(st.fixed_dictionaries({"start": st.just("08:00"), "end": st.text(max_size=6)})),
        "within_s": values,
        "required": values,
    },
)
packs = st.fixed_dictionaries(
    {"pack": maybe(st.sampled_from(["p", "Bad Name"])), "rules": maybe(st.lists(rule, max_size=3))},
    optional={"version": values, "language": values},
)


@FUZZ
@given(
    packs.map(lambda p: yaml.safe_dump(p, allow_unicode=True))
    | st.text(max_size=300)
    | st.sampled_from(["[" * 3000 + "]" * 3000, "a: " + "{b: " * 2000 + "1" + "}" * 2000])
)
def test_rule_pack_loader_answers_any_file_with_a_pack_or_a_rule_pack_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pack.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            assert isinstance(load_pack(path), RulePack)
        except RulePackError as error:
            assert error.errors and all(isinstance(e, str) for e in error.errors)
