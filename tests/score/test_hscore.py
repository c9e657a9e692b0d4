"""H-score and shrinkage H-score against numpy float64 / scikit-learn references."""

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

from jaxtransfer.score import hscore, hscore_regularized, ledoit_wolf_shrinkage
from tests.score._data import classification


def _between(f, y):
    means = np.stack([f[y == k].mean(0) for k in range(y.max() + 1)])
    return np.cov(means[y].T, bias=True)


def hscore_oracle(f, y):
    return np.trace(np.linalg.pinv(np.cov(f.T, bias=True), rcond=1e-12) @ _between(f, y))


def hscore_regularized_oracle(f, y):
    shrunk, a = ledoit_wolf(f)  # scikit-learn: an independent implementation of the Ledoit-Wolf estimate
    return np.trace(np.linalg.inv(shrunk) @ ((1 - a) * _between(f, y)))


@pytest.mark.parametrize(("seed", "n", "d"), [(0, 200, 8), (1, 60, 20), (2, 500, 3)])
def test_hscore_matches_oracle(x64, seed, n, d):
    f, y = classification(seed, n=n, d=d, c=4)
    assert float(hscore(f, y)) == pytest.approx(hscore_oracle(f, y), rel=1e-8)


@pytest.mark.parametrize(("seed", "n", "d"), [(0, 200, 8), (1, 30, 50), (2, 500, 3)])
def test_hscore_regularized_matches_oracle(x64, seed, n, d):
    f, y = classification(seed, n=n, d=d, c=4)
    assert float(ledoit_wolf_shrinkage(f)) == pytest.approx(ledoit_wolf(f)[1], rel=1e-10)
    assert float(hscore_regularized(f, y)) == pytest.approx(hscore_regularized_oracle(f, y), rel=1e-8)


def test_hscore_is_bounded_by_rank(x64):
    f, y = classification(3, n=300, d=6, c=3, separation=5.0)
    h = float(hscore(f, y))
    assert 0 < h <= 2 + 1e-9  # at most min(D, C - 1)


def test_hscore_handles_n_below_d_and_constant_columns(x64):
    """n < D: the pseudo-inverse of the covariance sees the whole span of the samples, so the between-class
    variance is fully explained and H-score reaches its bound C - 1 exactly (closed form; measured error 1.6e-15).
    The shrunk covariance is invertible: scikit-learn's Ledoit-Wolf reference applies."""
    f, y = classification(4, n=20, d=40, c=2)
    f[:, 0] = 3.0
    assert float(hscore(f, y)) == pytest.approx(1.0, rel=1e-12)
    assert float(hscore(f, y)) == pytest.approx(hscore_oracle(f, y), rel=1e-12)
    assert float(hscore_regularized(f, y)) == pytest.approx(hscore_regularized_oracle(f, y), rel=1e-12)
