"""What happens to a call's transcripts after ASR: a chain of stages with one contract (see ``chain``).

The chain itself is written in one place, in data-flow order: ``compliance_monitor.pipeline.analysis_chain``.
"""
