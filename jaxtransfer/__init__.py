"""jaxtransfer: transfer learning in JAX — which pre-trained model to fine-tune, and how."""

from jaxtransfer import score
from jaxtransfer.score import (
    LogME,
    LogMEEvidence,
    LogMEStats,
    gbc,
    hscore,
    hscore_regularized,
    leep,
    logme,
    logme_evidence,
    logme_evidence_from_stats,
    logme_from_stats,
    logme_many,
    logme_sharded,
    logme_stats,
    logme_streaming,
    merge_stats,
    nce,
    nleep,
    parc,
    sfda,
    transrate,
)
from jaxtransfer.select import Ranking, rank, weighted_tau

__version__ = "0.1.0"

__all__ = [
    "LogME",
    "LogMEEvidence",
    "LogMEStats",
    "Ranking",
    "__version__",
    "gbc",
    "hscore",
    "hscore_regularized",
    "leep",
    "logme",
    "logme_evidence",
    "logme_evidence_from_stats",
    "logme_from_stats",
    "logme_many",
    "logme_sharded",
    "logme_stats",
    "logme_streaming",
    "merge_stats",
    "nce",
    "nleep",
    "parc",
    "rank",
    "score",
    "sfda",
    "transrate",
    "weighted_tau",
]
