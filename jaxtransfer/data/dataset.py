"""A labelled dataset with a fixed, stratified train / validation / test split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "stratified_split"]


def stratified_split(
    labels: np.ndarray, *, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices of a train / val / test split that keeps each class's proportion (within one sample per class).

    Each class's samples are shuffled with ``numpy.random.default_rng(seed)`` and cut at the cumulative
    ``fractions``; the indices of each part are returned sorted.

    Every part gets at least one sample of every class (the cuts are moved by one where rounding would leave a part
    empty, e.g. 3 samples at (0.6, 0.2, 0.2)).

    Args:
        labels: (n,) class ids (any discrete values).
        fractions: (train, val, test), positive, summing to 1.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, disjoint and covering 0..n-1.

    Raises:
        ValueError: labels not 1-D or empty, bad fractions, or a class with fewer than 3 samples.

    Example:
        >>> import numpy as np
        >>> split = stratified_split(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]))
        >>> {k: v.tolist() for k, v in split.items()}
        {'train': [2, 5, 6, 7, 8], 'val': [0, 4], 'test': [1, 3]}
    """
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fractions must be three positive numbers summing to 1; got {fractions!r}.") from err
    if len(fractions) != 3 or not min(fractions) > 0 or not abs(sum(fractions) - 1) <= 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1; got {fractions}.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class ids; got shape {labels.shape}.")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 3:
        small = classes[counts < 3]
        raise ValueError(
            f"every class needs at least 3 samples (one per part); class(es) {small[:5].tolist()} have "
            f"{counts[counts < 3][:5].tolist()}."
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = (np.round(np.cumsum(fractions[:2]) * len(idx))).astype(int)
        a = min(max(a, 1), len(idx) - 2)
        b = min(max(b, a + 1), len(idx) - 1)
        for name, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            parts[name].append(chunk)
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` (an array of images, or an object array of strings), int32 labels ``y``, class names and a
    fixed split (``splits["train" | "val" | "test"]``: index arrays). ``ds.part("train")`` is ``(x, y)`` of a part.

    Example:
        >>> from jaxtransfer.data import digits
        >>> ds = digits(max_per_class=5)
        >>> ds
        Dataset('digits', x(50, 8, 8, 1), 10 classes, train=30, val=10, test=10)
        >>> x, y = ds.part("val")
        >>> x.shape, y.dtype.name, ds.num_classes
        ((10, 8, 8, 1), 'int32', 10)
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    splits: dict[str, np.ndarray] = field(repr=False)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.splits:
            raise ValueError(f"unknown part {name!r}; parts: {sorted(self.splits)}.")
        idx = self.splits[name]
        return self.x[idx], self.y[idx]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Dataset({self.name!r}, x{tuple(self.x.shape)}, {self.num_classes} classes, {sizes})"


def make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    classes,
    *,
    seed: int,
    fractions,
    max_per_class: int | None,
) -> Dataset:
    """Subsamples (at most ``max_per_class`` per class, seeded), then splits; shared by the loaders."""
    y = np.asarray(y, np.int32)
    if max_per_class is not None:
        if isinstance(max_per_class, bool) or not (isinstance(max_per_class, int) and max_per_class >= 3):
            raise ValueError(f"max_per_class must be an int >= 3 (one sample per part); got {max_per_class!r}.")
        rng = np.random.default_rng(seed + 1)
        keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in np.unique(y)])
        keep.sort()
        x, y = x[keep], y[keep]
    return Dataset(name, x, y, tuple(classes), stratified_split(y, fractions=fractions, seed=seed))
