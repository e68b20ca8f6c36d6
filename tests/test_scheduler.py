"""The shared ASR scheduler: finals before partials, one pending partial per stream, fair batches,
a failed batch fails only its jobs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from compliance_monitor.asr.decoder import DecodeRequest
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.config import AsrSettings
from tests.fakes import FakeDecoder

pytestmark = pytest.mark.unit


def req(samples: int) -> DecodeRequest:
    return DecodeRequest(np.zeros(samples, np.float32), beam_size=1)


@pytest.fixture
async def sched() -> tuple[AsrScheduler, FakeDecoder]:
    decoder = FakeDecoder()
    scheduler = AsrScheduler(AsrSettings(max_batch=2), lambda: decoder)  # type: ignore[arg-type, return-value]
    await scheduler.start()
    yield scheduler, decoder  # type: ignore[misc]
    decoder.gate.set()
    await scheduler.aclose()


async def hold_worker(scheduler: AsrScheduler, decoder: FakeDecoder) -> asyncio.Future:
    """Occupy the worker with a first batch so the next submissions queue up behind it."""
    decoder.gate.clear()
    decoder.entered.clear()
    first = scheduler.submit(("blocker", "agent"), req(1), final=True)
    await asyncio.get_running_loop().run_in_executor(None, decoder.entered.wait, 5)
    return first


async def test_finals_go_before_partials(sched: tuple[AsrScheduler, FakeDecoder]) -> None:
    scheduler, decoder = sched
    blocker = await hold_worker(scheduler, decoder)
    partial = scheduler.submit(("c1", "agent"), req(100), final=False)
    final = scheduler.submit(("c2", "agent"), req(200), final=True)
    decoder.gate.set()
    await asyncio.gather(blocker, partial, final)
    assert [len(r.audio) for b in decoder.batches[1:] for r in b] == [200, 100]


async def test_a_newer_partial_supersedes_the_pending_one(sched: tuple[AsrScheduler, FakeDecoder]) -> None:
    scheduler, decoder = sched
    blocker = await hold_worker(scheduler, decoder)
    old = scheduler.submit(("c1", "agent"), req(100), final=False)
    new = scheduler.submit(("c1", "agent"), req(150), final=False)
    assert await old is None  # resolved at once, never decoded
    decoder.gate.set()
    await blocker
    assert (await new).text == "len=150"
    assert scheduler.stats.partials_superseded == 1


async def test_a_final_drops_the_same_streams_pending_partial(sched: tuple[AsrScheduler, FakeDecoder]) -> None:
    scheduler, decoder = sched
    blocker = await hold_worker(scheduler, decoder)
    partial = scheduler.submit(("c1", "customer"), req(100), final=False)
    final = scheduler.submit(("c1", "customer"), req(300), final=True)
    assert await partial is None
    decoder.gate.set()
    await blocker
    assert (await final).text == "len=300"


async def test_batches_take_several_streams_up_to_max_batch(sched: tuple[AsrScheduler, FakeDecoder]) -> None:
    scheduler, decoder = sched
    blocker = await hold_worker(scheduler, decoder)
    partials = [scheduler.submit((f"c{i}", "agent"), req(10 + i), final=False) for i in range(3)]
    decoder.gate.set()
    await asyncio.gather(blocker, *partials)
    sizes = [len(b) for b in decoder.batches[1:]]
    assert sizes == [2, 1]  # max_batch=2, oldest first
    assert [len(r.audio) for r in decoder.batches[1]] == [10, 11]


async def test_a_failed_batch_fails_its_jobs_and_the_scheduler_goes_on(
    sched: tuple[AsrScheduler, FakeDecoder],
) -> None:
    scheduler, decoder = sched
    decoder.fail_next = True
    with pytest.raises(RuntimeError, match="exploded"):
        await scheduler.submit(("c1", "agent"), req(5), final=True)
    assert (await scheduler.submit(("c1", "agent"), req(6), final=True)).text == "len=6"


async def test_cancelled_jobs_are_not_decoded(sched: tuple[AsrScheduler, FakeDecoder]) -> None:
    scheduler, decoder = sched
    blocker = await hold_worker(scheduler, decoder)
    gone = scheduler.submit(("hung-up", "agent"), req(7), final=True)
    gone.cancel()
    kept = scheduler.submit(("c1", "agent"), req(8), final=True)
    decoder.gate.set()
    await asyncio.gather(blocker, kept)
    assert 7 not in [len(r.audio) for b in decoder.batches for r in b]
    assert scheduler.stats.finals == 2


async def test_finals_backing_up_take_the_short_window_until_the_queue_drains() -> None:
    decoder = FakeDecoder()
    settings = AsrSettings(max_batch=2, encoder_window_frames=500, fast_finals_after_s=60)
    scheduler = AsrScheduler(settings, lambda: decoder)  # type: ignore[arg-type, return-value]
    await scheduler.start()
    try:
        blocker = await hold_worker(scheduler, decoder)
        finals = [
            scheduler.submit((f"c{i}", "agent"), DecodeRequest(np.zeros(100, np.float32), 5, min_window=0), final=True)
            for i in range(3)
        ]
        decoder.gate.set()
        await asyncio.gather(blocker, *finals)
        windows = [[r.min_window for r in b] for b in decoder.batches[1:]]
        assert windows == [[500, 500], [0]]  # two with one more queued behind them; the last one alone: 30 s
        assert scheduler.stats.finals_fast == 2 and scheduler.stats.as_dict()["finals_fast"] == 2
    finally:
        decoder.gate.set()
        await scheduler.aclose()
