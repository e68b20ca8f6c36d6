"""Stage: an ASR transcript → its normalised text and jieba tokens (off the event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Frame, Heard
from compliance_monitor.messages import Transcript
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer


class NormaliseStage(Stage):
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, Transcript):
            yield frame
            return
        text = await asyncio.to_thread(normalise, frame.text, self._tokenizer)
        yield Heard(frame, text)
