"""Separable image resizing as matrices, with the ONNX ``Resize`` semantics exported models were built with."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["resize_matrix"]


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@functools.cache
def resize_matrix(size_in: int, size_out: int, mode: str, cubic_a: float = -0.75) -> np.ndarray:
    """(size_out, size_in) float32 M such that ``M @ v`` resizes the signal v along one axis.

    ONNX ``Resize`` with ``coordinate_transformation_mode="half_pixel"`` and no antialiasing: output sample i reads
    the input at x = (i + 1/2) size_in / size_out - 1/2; ``"linear"`` interpolates between floor(x) and floor(x) + 1,
    ``"cubic"`` uses the Keys kernel with coefficient ``cubic_a`` (-0.75, PyTorch's ``bicubic``) on floor(x) - 1 ...
    floor(x) + 2. Indices outside the input are clamped to its edge (``exclude_outside=0``), so every row sums to 1.
    A 2-D resize of (h, w) to (H, W) is ``resize_matrix(h, H) @ image @ resize_matrix(w, W).T``.

    Example:
        >>> resize_matrix(2, 4, "linear")
        array([[1.  , 0.  ],
               [0.75, 0.25],
               [0.25, 0.75],
               [0.  , 1.  ]], dtype=float32)
    """
    if mode not in ("linear", "cubic"):
        raise ValueError(f"mode must be 'linear' or 'cubic'; got {mode!r}.")
    x = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    base = np.floor(x)
    m = np.zeros((size_out, size_in))
    taps = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
    for k in taps:
        idx = base + k
        w = np.maximum(1 - np.abs(x - idx), 0.0) if mode == "linear" else _cubic(x - idx, cubic_a)
        np.add.at(m, (np.arange(size_out), np.clip(idx, 0, size_in - 1).astype(int)), w)
    return m.astype(np.float32)
