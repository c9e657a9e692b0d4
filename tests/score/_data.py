"""Synthetic data for the score tests: class signal plus Gaussian noise, with a known separation."""

import numpy as np


def classification(seed: int, n: int = 120, d: int = 8, c: int = 3, separation: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    centres = rng.normal(size=(c, d))
    return separation * centres[labels] + rng.normal(size=(n, d)), labels


def source_probs(seed: int, labels: np.ndarray, cs: int = 5, sharpness: float = 1.0):
    """Softmax outputs of a pretend source model whose logits depend on the target label."""
    rng = np.random.default_rng(seed)
    c = labels.max() + 1
    logits = sharpness * rng.normal(size=(c, cs))[labels] + rng.normal(size=(len(labels), cs))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)
