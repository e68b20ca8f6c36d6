"""One contract for every analysis stage, and the chain that runs them in order.

A stage takes one frame and yields zero or more frames for the next stage; frames it does not handle it
passes on unchanged (pipecat's frame processors work the same way). At the end of a call ``flush`` yields
what a stage still holds. The chain is depth-first: what a frame causes downstream happens before the next
frame of the same stage, so a finding is archived, published and acted on before the next one is raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from compliance_monitor.analysis.frames import Frame


class Stage:
    """Base of every stage: by default each frame passes through and nothing is held at the end."""

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        yield frame

    async def flush(self) -> AsyncIterator[Frame]:
        return
        yield  # an async generator that yields nothing


Sink = Callable[[Frame], Awaitable[None]]
S = TypeVar("S", bound=Stage)


class Chain:
    def __init__(self, stages: Sequence[Stage], sink: Sink) -> None:
        self.stages = tuple(stages)
        self._sink = sink  # receives what leaves the last stage

    async def push(self, frame: Frame) -> None:
        await self._through(0, frame)

    async def end_input(self) -> None:
        """The call is over: each stage, in order, yields what it held, and that runs through the rest."""
        for i, stage in enumerate(self.stages):
            async for frame in stage.flush():
                await self._through(i + 1, frame)

    async def _through(self, i: int, frame: Frame) -> None:
        if i == len(self.stages):
            await self._sink(frame)
            return
        async for out in self.stages[i].process(frame):
            await self._through(i + 1, out)

    def stage(self, kind: type[S]) -> S:
        """The chain's stage of this kind (the session reads a few facts off them, e.g. whether anyone spoke)."""
        return next(s for s in self.stages if isinstance(s, kind))
