"""Transfer variants of an image dataset: rotated, inverted, noisy, block-shuffled, resized, class subsets.

Each function takes images (n, H, W, C) with values in [0, 1] and returns a new array (the input is not changed).
They make source and target tasks that differ from each other in known ways, as real domain shifts do.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["add_noise", "block_shuffle", "class_subset", "invert", "resize", "rotate"]


def _images(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C); got shape {x.shape}.")
    return x


def rotate(images, quarter_turns: int = 1) -> np.ndarray:
    """Rotates every image by ``quarter_turns`` x 90 degrees (counter-clockwise).

    Args:
        images: (n, H, W, C) in [0, 1]; quarter_turns: any integer (negative: clockwise).

    Returns:
        (n, W, H, C) float32 for odd ``quarter_turns``, (n, H, W, C) for even.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import rotate
        >>> x = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1) / 8
        >>> rotate(x).shape, float(rotate(x)[0, 0, 0, 0])  # the top-right pixel (2 / 8) moves to the top left
        ((1, 3, 2, 1), 0.25)
    """
    return np.ascontiguousarray(np.rot90(_images(images), quarter_turns, axes=(1, 2)))


def invert(images) -> np.ndarray:
    """1 - x: dark strokes on a light background.

    Args:
        images: (n, H, W, C) in [0, 1].

    Returns:
        (n, H, W, C) float32.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import invert
        >>> invert(np.array([0.0, 0.25, 1.0]).reshape(1, 1, 3, 1)).ravel().tolist()
        [1.0, 0.75, 0.0]
    """
    return 1.0 - _images(images)


def add_noise(images, std: float, *, seed: int = 0) -> np.ndarray:
    """x + N(0, std^2) per pixel, clipped to [0, 1] (seeded).

    Args:
        images: (n, H, W, C) in [0, 1]; std: noise standard deviation; seed: of the noise.

    Returns:
        (n, H, W, C) float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import add_noise
        >>> noisy = add_noise(np.full((100, 8, 8, 1), 0.5), std=0.1)
        >>> round(float(noisy.std()), 2), bool(np.array_equal(noisy, add_noise(np.full((100, 8, 8, 1), 0.5), 0.1)))
        (0.1, True)
    """
    x = _images(images)
    noise = np.random.default_rng(seed).normal(0.0, std, x.shape).astype(np.float32)
    return np.clip(x + noise, 0.0, 1.0)


def block_shuffle(images, blocks: int, *, seed: int = 0) -> np.ndarray:
    """Cuts each image into ``blocks`` x ``blocks`` tiles and permutes the tiles (one fixed permutation, seeded).

    The pixel statistics stay the same while the spatial structure is destroyed (the "block shuffling" of Neyshabur
    et al. 2020). H and W must be multiples of ``blocks``.

    Args:
        images: (n, H, W, C) in [0, 1]; blocks: tiles per side (1 = unchanged); seed: of the permutation.

    Returns:
        (n, H, W, C) float32, the same permutation of tiles for every image.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import block_shuffle
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1))
        >>> y = block_shuffle(x, 4)
        >>> bool(np.allclose(np.sort(y, axis=None), np.sort(x.astype(np.float32), axis=None))), y.shape
        (True, (2, 28, 28, 1))
    """
    x = _images(images)
    n, h, w, c = x.shape
    if h % blocks or w % blocks:
        raise ValueError(f"image size {h}x{w} is not a multiple of blocks={blocks}.")
    th, tw = h // blocks, w // blocks
    tiles = x.reshape(n, blocks, th, blocks, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, blocks * blocks, th, tw, c)
    tiles = tiles[:, np.random.default_rng(seed).permutation(blocks * blocks)]
    return tiles.reshape(n, blocks, blocks, th, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def resize(images, size: int) -> np.ndarray:
    """Resizes to ``size`` x ``size`` (``jax.image.resize``, linear, antialiased when shrinking), clipped to [0, 1].

    Args:
        images: (n, H, W, C) in [0, 1]; size: the new height and width.

    Returns:
        (n, size, size, C) float32.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import resize
        >>> resize(np.full((3, 8, 8, 1), 0.5), 32).shape
        (3, 32, 32, 1)
    """
    x = _images(images)
    out = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "linear", antialias=True)
    return np.clip(np.asarray(out), 0.0, 1.0)


def class_subset(images, labels, classes) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``classes`` only, relabelled 0..len(classes)-1 in the given order.

    Args:
        images: (n, ...); labels: (n,) class ids; classes: the ids to keep, in their new order.

    Returns:
        (images (m, ...), labels (m,) int32) for the m samples kept, in their original order.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.data.variants import class_subset
        >>> x, y = class_subset(np.arange(6), np.array([0, 1, 2, 0, 1, 2]), classes=[2, 0])
        >>> x.tolist(), y.tolist()
        ([0, 2, 3, 5], [1, 0, 1, 0])
    """
    labels = np.asarray(labels)
    classes = list(classes)
    keep = np.isin(labels, classes)
    if not keep.any():
        raise ValueError(f"no sample has a label in {classes}.")
    relabel = {c: i for i, c in enumerate(classes)}
    return np.asarray(images)[keep], np.array([relabel[v] for v in labels[keep]], np.int32)
