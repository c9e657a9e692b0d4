"""Transferability scores: pure functions on arrays (no Flax), higher = better transfer."""

from jaxtransfer.score._checked import checked
from jaxtransfer.score.distributed import logme_many, logme_sharded
from jaxtransfer.score.gbc import gbc
from jaxtransfer.score.hscore import hscore, hscore_regularized, ledoit_wolf_shrinkage
from jaxtransfer.score.leep import leep
from jaxtransfer.score.logme import LogME, LogMEEvidence, logme, logme_evidence
from jaxtransfer.score.nce import nce
from jaxtransfer.score.nleep import gaussian_mixture_posteriors, nleep
from jaxtransfer.score.parc import parc
from jaxtransfer.score.sfda import sfda
from jaxtransfer.score.stats import (
    LogMEStats,
    logme_evidence_from_stats,
    logme_from_stats,
    logme_stats,
    logme_streaming,
    merge_stats,
)
from jaxtransfer.score.transrate import transrate

__all__ = [
    "LogME",
    "LogMEEvidence",
    "LogMEStats",
    "checked",
    "gaussian_mixture_posteriors",
    "gbc",
    "hscore",
    "hscore_regularized",
    "ledoit_wolf_shrinkage",
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
    "sfda",
    "transrate",
]
