"""The UCI handwritten digits bundled with scikit-learn: 1797 images of 8 x 8 pixels, 10 classes."""

from __future__ import annotations

import numpy as np

__all__ = ["digits_transfer", "load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits from the copy inside scikit-learn (no download).

    Returns:
        images: (1797, 8, 8) float32 grey levels scaled to [0, 1].
        labels: (1797,) int32 digit classes 0..9.

    Raises:
        ImportError: if scikit-learn is not installed (it is a dependency of jaxtransfer).

    Example:
        >>> images, labels = load_digits()
        >>> images.shape, float(images.max()), labels[:5].tolist()
        ((1797, 8, 8), 1.0, [0, 1, 2, 3, 4])
    """
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    images = (np.asarray(bunch.images, np.float32) / 16.0).astype(np.float32)
    return images, np.asarray(bunch.target, np.int32)


def digits_transfer(*, seed: int = 0, target_train_fraction: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A real transfer task on the digits: pre-train on classes 0-4, transfer to classes 5-9 (relabelled 0-4).

    Returns:
        ``{"source": (x, y), "target_train": (x, y), "target_test": (x, y)}`` with images (n, 8, 8, 1) float32
        in [0, 1] and int32 labels in [0, 5); the target samples are split at random (``seed``).

    Example:
        >>> task = digits_transfer()
        >>> {k: x.shape[0] for k, (x, _) in task.items()}
        {'source': 901, 'target_train': 448, 'target_test': 448}
    """
    if not (isinstance(target_train_fraction, int | float) and 0 < target_train_fraction < 1):
        raise ValueError(
            f"target_train_fraction must be in (0, 1) (both target splits non-empty); got {target_train_fraction!r}."
        )
    images, labels = load_digits()
    x = images[..., None]
    source = labels < 5
    xt, yt = x[~source], labels[~source] - 5
    perm = np.random.default_rng(seed).permutation(len(yt))
    cut = min(max(int(target_train_fraction * len(yt)), 1), len(yt) - 1)
    tr, te = perm[:cut], perm[cut:]
    return {"source": (x[source], labels[source]), "target_train": (xt[tr], yt[tr]), "target_test": (xt[te], yt[te])}
