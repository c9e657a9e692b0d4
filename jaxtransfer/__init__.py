"""jaxtransfer: transfer learning in JAX — which pre-trained model to fine-tune, and how.

The scores (every name of :mod:`jaxtransfer.score`) and the ranking tools are exported here. The subpackages are
attributes, imported on first use so that ``import jaxtransfer`` loads neither Flax nor the datasets:
``jaxtransfer.finetune``, ``.models``, ``.data``, ``.soup``, ``.merge``, ``.landscape``, ``.similarity``,
``.criticality``, ``.analysis``, ``.experiments``.
"""

import importlib as _importlib

from jaxtransfer import score
from jaxtransfer.score import *  # noqa: F403  (the names in score.__all__, registered scores included)
from jaxtransfer.select import Ranking, rank, weighted_tau

__version__ = "0.1.0"

_SUBPACKAGES = (
    "analysis",
    "criticality",
    "data",
    "experiments",
    "finetune",
    "landscape",
    "merge",
    "models",
    "similarity",
    "soup",
)

__all__ = ["Ranking", "__version__", "rank", "score", "weighted_tau"]
__all__ += score.__all__


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*__all__, *_SUBPACKAGES])
