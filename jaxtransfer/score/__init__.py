"""Transferability scores: pure functions on arrays (no Flax), higher = better transfer."""

from jaxtransfer.score.distributed import logme_many, logme_sharded
from jaxtransfer.score.logme import LogME, LogMEEvidence, logme, logme_evidence
from jaxtransfer.score.stats import (
    LogMEStats,
    logme_evidence_from_stats,
    logme_from_stats,
    logme_stats,
    logme_streaming,
    merge_stats,
)

__all__ = [
    "LogME",
    "LogMEEvidence",
    "LogMEStats",
    "logme",
    "logme_evidence",
    "logme_evidence_from_stats",
    "logme_from_stats",
    "logme_many",
    "logme_sharded",
    "logme_stats",
    "logme_streaming",
    "merge_stats",
]
