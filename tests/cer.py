"""Character error rate, as every report computes it (re-exported for the tests)."""

from compliance_monitor.asr.evaluate import cer, edit_distance, normalise_for_cer

__all__ = ["cer", "edit_distance", "normalise_for_cer"]
