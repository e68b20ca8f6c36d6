"""The rule set in force, with hot reload: a bad pack is rejected and the running one stays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from compliance_monitor.config import RulesSettings
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import Finding, NormalisedText, Transcript

log = logging.getLogger(__name__)


def pack_files(settings: RulesSettings) -> list[Path]:
    files = [settings.dir / f"{name}.yaml" for name in settings.packs]
    return [*files, *settings.extra_files]


class RuleSet:
    def __init__(self, settings: RulesSettings) -> None:
        self.settings = settings
        self.engine = RuleEngine.from_files(pack_files(settings))
        self.generation = 1

    def reload(self) -> RuleEngine:
        """Build the new engine fully before swapping, so a failure changes nothing."""
        engine = RuleEngine.from_files(pack_files(self.settings))
        self.engine = engine
        self.generation += 1
        log.info(
            "rules reloaded: %d rules from %d packs (generation %d)",
            engine.rule_count,
            len(engine.packs),
            self.generation,
        )
        return engine

    def detect(
        self, transcript: Transcript, text: NormalisedText, context: Sequence[NormalisedText] = ()
    ) -> list[Finding]:
        return self.engine.detect(transcript, text, context)
