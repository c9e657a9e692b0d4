"""jaxtransfer: transfer learning in JAX — which pre-trained model to fine-tune, and how."""

from jaxtransfer.score import (
    LogME,
    LogMEEvidence,
    LogMEStats,
    logme,
    logme_evidence,
    logme_evidence_from_stats,
    logme_from_stats,
    logme_many,
    logme_sharded,
    logme_stats,
    logme_streaming,
    merge_stats,
)

__version__ = "0.1.0"

__all__ = [
    "LogME",
    "LogMEEvidence",
    "LogMEStats",
    "__version__",
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
