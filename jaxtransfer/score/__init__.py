"""Transferability scores: pure functions on arrays (no Flax), higher = better transfer.

Every score is registered once (:data:`SCORES`, see ``_registry.py``) with what it reads of a model. This package
imports every module in its folder, so a new score is one file with a ``@register_score`` function (plus its
test): it is then exported here and from ``jaxtransfer``, listed by ``rank``, the CLI and the benchmark.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from jaxtransfer.score._checked import checked
from jaxtransfer.score._gbc import gbc
from jaxtransfer.score._hscore import hscore, hscore_regularized, ledoit_wolf_shrinkage
from jaxtransfer.score._leep import leep
from jaxtransfer.score._logme import LogME, LogMEEvidence, logme, logme_evidence
from jaxtransfer.score._many import logme_many
from jaxtransfer.score._nce import nce
from jaxtransfer.score._nleep import gaussian_mixture_posteriors, nleep
from jaxtransfer.score._parc import parc
from jaxtransfer.score._registry import INPUTS, SCORES, Score, register_score
from jaxtransfer.score._sfda import sfda
from jaxtransfer.score._sharded import logme_sharded
from jaxtransfer.score._stats import (
    LogMEStats,
    logme_evidence_from_stats,
    logme_from_stats,
    logme_stats,
    logme_streaming,
    merge_stats,
)
from jaxtransfer.score._transrate import transrate

__all__ = [
    "INPUTS",
    "SCORES",
    "LogME",
    "LogMEEvidence",
    "LogMEStats",
    "Score",
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
    "register_score",
    "sfda",
    "transrate",
]

# A score added as a new file registers itself on import; export it like the ones above.
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
for _name, _score in SCORES.items():
    if _name not in __all__:
        globals()[_name] = _score.fn
        __all__.append(_name)
