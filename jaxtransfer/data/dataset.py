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

    Args:
        labels: (n,) integer class ids.
        fractions: (train, val, test), positive, summing to 1.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, disjoint and covering 0..n-1.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1; got {fractions}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = (np.round(np.cumsum(fractions[:2]) * len(idx))).astype(int)
        for name, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            parts[name].append(chunk)
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` (an array of images, or an object array of strings), int32 labels ``y``, class names and a
    fixed split (``splits["train" | "val" | "test"]``: index arrays). ``ds.part("train")`` is ``(x, y)`` of a part.
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
        if not (isinstance(max_per_class, int) and max_per_class >= 3):
            raise ValueError(f"max_per_class must be an int >= 3 (one sample per part); got {max_per_class!r}.")
        rng = np.random.default_rng(seed + 1)
        keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in np.unique(y)])
        keep.sort()
        x, y = x[keep], y[keep]
    return Dataset(name, x, y, tuple(classes), stratified_split(y, fractions=fractions, seed=seed))
