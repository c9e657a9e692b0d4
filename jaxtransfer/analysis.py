"""Which examples models get wrong, and whether they get the same ones wrong (Neyshabur, Sedghi and Zhang, "What is
being transferred in transfer learning?", NeurIPS 2020, section 3.1: models fine-tuned from pre-trained weights
share most of their mistakes with each other and fewer with models trained from a random init).

Array core: NumPy only, on predictions or scores of any model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

__all__ = ["MistakeOverlap", "mistake_overlap"]


@dataclasses.dataclass(frozen=True)
class MistakeOverlap:
    """Per model and per pair of models: how many examples each gets wrong, and which.

    Attributes:
        names: the models, in input order.
        errors: name -> number of misclassified examples.
        pairs: (a, b) -> {"both_wrong", "only_a", "only_b", "both_right": counts, "jaccard": the size of the
            intersection of the error sets over that of their union (1 when neither errs)}, for every a before b
            in ``names``.
        examples: (a, b) -> {"both_wrong", "only_a", "only_b": up to ``examples`` example indices each}.

    Example:
        >>> import numpy as np
        >>> predictions = {"P-T": np.array([0, 1, 1, 0]), "RI-T": np.array([1, 1, 0, 0])}
        >>> out = mistake_overlap(predictions, np.array([0, 1, 0, 1]))
        >>> out.pairs[("P-T", "RI-T")]["both_wrong"], out.examples[("P-T", "RI-T")]["only_a"]
        (1, [2])
    """

    names: tuple[str, ...]
    errors: dict
    pairs: dict
    examples: dict

    def table(self) -> str:
        """One row per pair: the four counts and the Jaccard overlap of the errors."""
        rows = [f"{'pair':<30} {'both wrong':>10} {'only a':>8} {'only b':>8} {'both right':>10} {'jaccard':>8}"]
        for (a, b), c in self.pairs.items():
            name = f"{a} / {b}"
            rows.append(
                f"{name:<30} {c['both_wrong']:>10} {c['only_a']:>8} {c['only_b']:>8} {c['both_right']:>10} "
                f"{c['jaccard']:>8.3f}"
            )
        return "\n".join(rows)


def _labels(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class indices; got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"labels must be integers (class indices); got dtype {arr.dtype}.")
    if (arr < 0).any():
        raise ValueError(f"labels must be >= 0; got {int(arr.min())}.")
    return arr.astype(np.int64)


def _predictions(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 2:  # scores or logits (n, C): the arg-max class
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"scores of {name!r} must be numbers; got dtype {arr.dtype}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"the scores of {name!r} contain NaN or Inf.")
        arr = arr.argmax(axis=1)
    elif arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"predictions of {name!r} must be class indices (integers) or (n, C) scores; got {arr.dtype}."
            )
    else:
        raise ValueError(f"predictions of {name!r} must be (n,) classes or (n, C) scores; got shape {arr.shape}.")
    if arr.shape != (n,):
        raise ValueError(f"{name!r} has {arr.shape[0]} predictions for {n} labels.")
    return arr.astype(np.int64)


def mistake_overlap(predictions_by_model: Mapping, labels, *, examples: int = 5) -> MistakeOverlap:
    """Shared and disjoint errors of every pair of models on the same labelled examples.

    Args:
        predictions_by_model: name -> (n,) predicted classes or (n, C) scores / logits (arg-max taken).
        labels: (n,) true classes.
        examples: how many example indices to keep per pair and category (the first ones, in data order).

    Returns:
        :class:`MistakeOverlap`.

    Example:
        >>> import numpy as np
        >>> report = mistake_overlap({"a": np.array([0, 1, 1, 0]), "b": np.array([0, 0, 1, 1])}, np.array([0, 1, 1, 1]))
        >>> report.pairs[("a", "b")]["only_a"], report.pairs[("a", "b")]["jaccard"]
        (1, 0.0)
    """
    if not isinstance(predictions_by_model, Mapping) or len(predictions_by_model) < 1:
        raise ValueError("predictions_by_model must be a non-empty dict name -> predictions.")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ValueError(f"examples must be an integer >= 0; got {examples!r}.")
    y = _labels(labels)
    names = tuple(str(k) for k in predictions_by_model)
    wrong = {
        str(k): _predictions(v, len(y), str(k)) != y for k, v in predictions_by_model.items()
    }  # per model: (n,) bool
    errors = {k: int(w.sum()) for k, w in wrong.items()}
    pairs, picked = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            wa, wb = wrong[a], wrong[b]
            both, only_a, only_b = wa & wb, wa & ~wb, ~wa & wb
            union = int((wa | wb).sum())
            pairs[(a, b)] = {
                "both_wrong": int(both.sum()),
                "only_a": int(only_a.sum()),
                "only_b": int(only_b.sum()),
                "both_right": int((~wa & ~wb).sum()),
                "jaccard": float(both.sum() / union) if union else 1.0,
            }
            picked[(a, b)] = {
                "both_wrong": np.flatnonzero(both)[:examples].tolist(),
                "only_a": np.flatnonzero(only_a)[:examples].tolist(),
                "only_b": np.flatnonzero(only_b)[:examples].tolist(),
            }
    return MistakeOverlap(names, errors, pairs, picked)
