import itertools

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from jaxtransfer.score import gbc
from tests.score._data import classification


def _bhattacharyya_1d(m1, v1, m2, v2):
    """BC = integral of sqrt(N(x; m1, v1) N(x; m2, v2)) dx, by adaptive quadrature (no closed form used)."""
    lo = min(m1 - 12 * np.sqrt(v1), m2 - 12 * np.sqrt(v2))
    hi = max(m1 + 12 * np.sqrt(v1), m2 + 12 * np.sqrt(v2))
    value, _ = integrate.quad(lambda x: np.sqrt(norm.pdf(x, m1, np.sqrt(v1)) * norm.pdf(x, m2, np.sqrt(v2))), lo, hi,
                              points=[m1, m2], limit=200, epsabs=0, epsrel=1e-13)  # fmt: skip
    return value


def gbc_oracle(f, y, spherical=False):
    """GBC = -sum over ordered class pairs of the Bhattacharyya coefficient of their Gaussians (diagonal, or one
    variance for all axes), each coefficient integrated numerically: for diagonal Gaussians it is the product of
    one-dimensional integrals. Per-class variances are floored at 1e-4, as the published code does."""
    stats = []
    for k in range(y.max() + 1):
        x = f[y == k]
        var = np.maximum(x.var(0), 1e-4)
        stats.append((x.mean(0), np.full_like(var, var.mean()) if spherical else var))
    total = 0.0
    for (m1, v1), (m2, v2) in itertools.permutations(stats, 2):
        total += np.prod([_bhattacharyya_1d(*args) for args in zip(m1, v1, m2, v2, strict=True)])
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
