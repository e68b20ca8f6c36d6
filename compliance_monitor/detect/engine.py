"""The rule set in force, with hot reload: a bad pack is rejected and the running one stays."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from compliance_monitor.config import RulesSettings
from compliance_monitor.detect.rulepack import RulePackError
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import Finding, NormalisedText, Transcript

log = logging.getLogger(__name__)


def pack_files(settings: RulesSettings) -> list[Path]:
    files = [settings.dir / f"{name}.yaml" for name in settings.packs]
    return [*files, *settings.extra_files]


class RuleSet:
    def __init__(self, settings: RulesSettings) -> None:
        self.settings = settings
        self.engine = RuleEngine.from_files(pack_files(settings), regime=settings.regime)
        self.generation = 1

    def reload(self) -> RuleEngine:
        """Build the new engine fully before swapping, so a failure changes nothing."""
        engine = RuleEngine.from_files(pack_files(self.settings), regime=self.settings.regime)
        self.engine = engine
        self.generation += 1
        log.info(
            "rules reloaded: %d rules from %d packs (generation %d)",
            engine.rule_count,
            len(engine.packs),
            self.generation,
        )
        return engine

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload when a pack file changes on disk. A broken edit is logged with its line numbers and the
        running rules stay in force; the next good save is picked up."""
        from watchfiles import awatch

        files = await asyncio.to_thread(self._watched_files)
        folders = {os.path.dirname(f) for f in files}
        async for changes in awatch(*folders, stop_event=stop, debounce=300):
            if not any(path in files for _, path in changes):  # watchfiles reports absolute paths
                continue
            try:
                await asyncio.to_thread(self.reload)  # file reads and automaton builds: off the loop
            except RulePackError as exc:
                log.error("rule pack change rejected, previous rules stay in force:\n%s", exc)
            except ValueError as exc:
                log.error("rule pack change rejected, previous rules stay in force: %s", exc)

    def _watched_files(self) -> set[str]:
        return {str(p.resolve()) for p in pack_files(self.settings)}

    def detect(
        self, transcript: Transcript, text: NormalisedText, context: Sequence[NormalisedText] = ()
    ) -> list[Finding]:
        return self.engine.detect(transcript, text, context)
