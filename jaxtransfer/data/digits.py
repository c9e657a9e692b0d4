"""The UCI handwritten digits bundled with scikit-learn: 1797 images of 8 x 8 pixels, 10 classes."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits from the copy inside scikit-learn (no download).

    Returns:
        images: (1797, 8, 8) float32 grey levels scaled to [0, 1].
        labels: (1797,) int32 digit classes 0..9.

    Raises:
        ImportError: if scikit-learn is not installed (it is a dependency of jaxtransfer).
    """
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    images = (np.asarray(bunch.images, np.float32) / 16.0).astype(np.float32)
    return images, np.asarray(bunch.target, np.int32)
