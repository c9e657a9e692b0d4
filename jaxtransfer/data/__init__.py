"""Real datasets shipped inside installed packages (nothing is downloaded) and splits: numpy, and jax for the
EfficientNet resize; no Flax.

Feature extraction needs a model, so it lives in :mod:`jaxtransfer.models` (``jaxtransfer.data.extract_features``
still works, loading it on first use).
"""

import importlib as _importlib

from jaxtransfer.data.dataset import Dataset, stratified_split
from jaxtransfer.data.digits import digits_transfer, load_digits
from jaxtransfer.data.images import caffe_preprocess, digits, efficientnet_preprocess, imagenet_preprocess, mnist_5k
from jaxtransfer.data.text import bbc_news, twitter_sentiment

DATASETS = {"digits": digits, "mnist_5k": mnist_5k, "bbc_news": bbc_news, "twitter_sentiment": twitter_sentiment}


def load_dataset(name: str, **kwargs) -> Dataset:
    """``DATASETS[name](**kwargs)``: "digits", "mnist_5k", "bbc_news" or "twitter_sentiment".

    Example:
        >>> load_dataset("digits", max_per_class=5)
        Dataset('digits', x(50, 8, 8, 1), 10 classes, train=30, val=10, test=10)
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)


def __getattr__(name: str):
    if name == "extract_features":  # old path, kept as an alias (it imports Flax)
        return _importlib.import_module("jaxtransfer.models").extract_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "Dataset",
    "bbc_news",
    "caffe_preprocess",
    "digits",
    "digits_transfer",
    "efficientnet_preprocess",
    "extract_features",
    "imagenet_preprocess",
    "load_dataset",
    "load_digits",
    "mnist_5k",
    "stratified_split",
    "twitter_sentiment",
]
