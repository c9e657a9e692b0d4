"""Real datasets shipped inside installed packages (nothing is downloaded), splits, and batched feature extraction."""

from jaxtransfer.data.dataset import Dataset, stratified_split
from jaxtransfer.data.digits import digits_transfer, load_digits
from jaxtransfer.data.extract import extract_features
from jaxtransfer.data.images import digits, efficientnet_preprocess, mnist_5k
from jaxtransfer.data.text import bbc_news, twitter_sentiment

DATASETS = {"digits": digits, "mnist_5k": mnist_5k, "bbc_news": bbc_news, "twitter_sentiment": twitter_sentiment}


def load_dataset(name: str, **kwargs) -> Dataset:
    """``DATASETS[name](**kwargs)``: "digits", "mnist_5k", "bbc_news" or "twitter_sentiment"."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)


__all__ = [
    "DATASETS",
    "Dataset",
    "bbc_news",
    "digits",
    "digits_transfer",
    "efficientnet_preprocess",
    "extract_features",
    "load_dataset",
    "load_digits",
    "mnist_5k",
    "stratified_split",
    "twitter_sentiment",
]
