"""Transferability scores: pure functions on arrays (no Flax), higher = better transfer."""

from jaxtransfer.score.logme import LogME, LogMEEvidence, logme, logme_evidence

__all__ = ["LogME", "LogMEEvidence", "logme", "logme_evidence"]
