"""The registry of transferability scores: each score is registered once, with what it needs.

``rank``, the CLI, the model-selection benchmark, the tests' parametrisation and ``bench/score_agreement.py`` read
this registry; none of them decides by a score's name what to pass it. A new score is one file in
``jaxtransfer/score/`` whose function is decorated with :func:`register_score` (the package imports every module
in its folder, so the file is all it takes) plus its test.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["INPUTS", "SCORES", "Score", "register_score"]

INPUTS = ("features", "source_probabilities", "source_labels")
"""What a score reads of a model: its (n, D) features on the target data, its source head's (n, C_s) softmax
outputs, or the (n,) hard source labels (the argmax of those outputs)."""

_SCORES: dict[str, Score] = {}
SCORES: Mapping[str, Score] = types.MappingProxyType(_SCORES)
"""Name -> :class:`Score`, in registration order (read-only; :func:`register_score` adds to it)."""


@dataclasses.dataclass(frozen=True)
class Score:
    """A registered score: call it like its function, ``SCORES["hscore"](features, labels)``.

    Attributes:
        name: the registry key (the function's name unless given).
        fn: ``fn(x, labels, *, num_classes=None, **options) -> scalar``, higher = better transfer; ``x`` is what
            ``input`` names. Runs eagerly, under ``jax.jit`` and under ``jax.vmap`` (with ``num_classes`` given).
        input: one of :data:`INPUTS`.
        classification: takes (n,) class ids.
        regression: takes real targets with ``regression=True``.
        from_stats: ``from_stats(stats, **options) -> scalar`` scoring from sufficient statistics, or None.
        reference: the paper.
        units: what a value measures, for axis labels (e.g. "mean log evidence per sample").

    Example:
        >>> from jaxtransfer import SCORES
        >>> SCORES["leep"].input, SCORES["logme"].regression, SCORES["logme"].from_stats is not None
        ('source_probabilities', True, True)
    """

    name: str
    fn: Callable
    input: str = "features"
    classification: bool = True
    regression: bool = False
    from_stats: Callable | None = None
    reference: str = ""
    units: str = "score units"

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def argument(self, model_output):
        """What this score reads of one model's ``model_output``: for ``input == "source_labels"``, (n, C_s)
        probabilities become hard labels by their argmax; anything else passes through unchanged."""
        if self.input == "source_labels" and np.ndim(model_output) == 2:
            return np.argmax(np.asarray(model_output), axis=1)
        return model_output

    def pick(self, *, features, source_probabilities):
        """The argument for this score from a model's features and its source head's softmax outputs."""
        return self.argument(features if self.input == "features" else source_probabilities)


def register_score(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    input: str = "features",
    classification: bool = True,
    regression: bool = False,
    from_stats: Callable | None = None,
    reference: str = "",
    units: str = "score units",
):
    """Registers a score (use as ``@register_score`` or ``@register_score(input="source_probabilities")``).

    Returns the function itself, unchanged: registration adds an entry to :data:`SCORES` and nothing else.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.score import SCORES
        >>> SCORES["hscore"].input, SCORES["logme"].regression
        ('features', True)

    Raises:
        ValueError: an unknown ``input``, a score that takes neither class ids nor targets, or a name taken by a
            different function.
    """
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}; got {input!r}.")
    if not (classification or regression):
        raise ValueError("a score must take class ids (classification=True) or targets (regression=True).")

    def add(f: Callable) -> Callable:
        key = f.__name__ if name is None else name
        old = _SCORES.get(key)
        if old is not None and getattr(old.fn, "__qualname__", None) != f.__qualname__:
            raise ValueError(
                f"a score named {key!r} is already registered ({old.fn.__module__}.{old.fn.__qualname__})."
            )
        _SCORES[key] = Score(key, f, input, classification, regression, from_stats, reference, units)
        return f

    return add if fn is None else add(fn)
