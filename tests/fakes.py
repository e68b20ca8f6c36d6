"""Fakes shared by tests: a decoder that records batches and can be held mid-decode; a stage harness."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from compliance_monitor.analysis.chain import Chain, Stage
from compliance_monitor.analysis.frames import Frame
from compliance_monitor.asr.decoder import DecodeRequest, DecodeResult


class FakeDecoder:
    """Returns 'len=<samples>' for each request; ``gate`` lets a test hold the worker mid-batch."""

    device = "fake"

    def __init__(self) -> None:
        self.batches: list[list[DecodeRequest]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    def warm_up(self) -> None:
        pass

    def decode(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(requests))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("decoder exploded")
        return [DecodeResult(f"len={len(r.audio)}", -0.1, 0.0, 1.0, None) for r in requests]


async def run_stage(stage: Stage, frames: Sequence[Frame], *, flush: bool = False) -> list[Frame]:
    """The stage test harness: what one analysis stage yields for these frames (and at the end, with ``flush``)."""
    out: list[Frame] = []

    async def collect(frame: Frame) -> None:
        out.append(frame)

    chain = Chain([stage], sink=collect)
    for frame in frames:
        await chain.push(frame)
    if flush:
        await chain.end_input()
    return out
