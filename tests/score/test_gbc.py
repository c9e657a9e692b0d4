import itertools

import numpy as np
import pytest

from jaxtransfer.score import gbc
from tests.score._data import classification


def gbc_oracle(f, y, spherical=False):
    stats = []
    for k in range(y.max() + 1):
        x = f[y == k]
        var = np.maximum(x.var(0), 1e-4)
        stats.append((x.mean(0), np.full_like(var, var.mean()) if spherical else var))
    total = 0.0
    for (m1, v1), (m2, v2) in itertools.permutations(stats, 2):
        v = (v1 + v2) / 2
        db = np.sum((m1 - m2) ** 2 / v) / 8 + 0.5 * (np.log(v).sum() - 0.5 * np.log(v1).sum() - 0.5 * np.log(v2).sum())
        total += np.exp(-db)
    return -total


@pytest.mark.parametrize("gaussian", ["diagonal", "spherical"])
@pytest.mark.parametrize("seed", range(3))
def test_gbc_matches_oracle(x64, seed, gaussian):
    f, y = classification(seed, n=150, d=10, c=4)
    got = float(gbc(f, y, pca_dim=None, gaussian=gaussian))
    assert got == pytest.approx(gbc_oracle(f, y, gaussian == "spherical"), rel=1e-9)


def test_gbc_on_pca_features_matches_oracle(x64):
    f, y = classification(5, n=200, d=30, c=3)
    c = f - f.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    assert float(gbc(f, y, pca_dim=8)) == pytest.approx(gbc_oracle(c @ vt[:8].T, y), rel=1e-8)


def test_gbc_rejects_bad_options():
    f, y = classification(0)
    with pytest.raises(ValueError, match="gaussian must be"):
        gbc(f, y, gaussian="full")
    with pytest.raises(ValueError, match="pca_dim must be"):
        gbc(f, y, pca_dim=0)
