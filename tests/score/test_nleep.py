import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxtransfer.score import gaussian_mixture_posteriors, leep, nleep
from jaxtransfer.score._nleep import em_posteriors
from tests.score._data import classification


def em_oracle(z, resp, tol=1e-3, max_iter=100):
    """Textbook EM for a full-covariance Gaussian mixture in float64 (scipy densities)."""
    n, d = z.shape
    prev = -np.inf
    for _ in range(max_iter):
        nk = resp.sum(0) + 10 * np.finfo(float).eps
        w, mu = nk / n, (resp.T @ z) / nk[:, None]
        cov = [((resp[:, m, None] * (z - mu[m])).T @ (z - mu[m])) / nk[m] + 1e-6 * np.eye(d) for m in range(len(nk))]
        dens = np.stack([w[m] * multivariate_normal(mu[m], cov[m]).pdf(z) for m in range(len(nk))], 1)
        ll = np.mean(np.log(dens.sum(1)))
        resp = dens / dens.sum(1, keepdims=True)
        if abs(ll - prev) < tol:
            break
        prev = ll
    return resp


def test_em_matches_oracle(x64):
    f, _ = classification(0, n=120, d=3, c=3, separation=3.0)
    init = np.eye(6)[np.arange(120) % 6]  # a deliberately poor start: EM has work to do
    got = np.asarray(em_posteriors(f, init, tol=1e-3, max_iter=100))
    np.testing.assert_allclose(got, em_oracle(f, init), atol=1e-6)


def test_nleep_is_leep_of_the_mixture_posteriors(x64):
    f, y = classification(1, n=150, d=2, c=3, separation=2.0)
    # Two dimensions, both needed for 99.9 % of the variance: no reduction, so the posteriors are comparable.
    posteriors = gaussian_mixture_posteriors(f - f.mean(0), 15)
    expected = float(leep(posteriors, y))
    assert float(nleep(f, y, variance=0.999)) == pytest.approx(expected, rel=1e-6)


def test_nleep_errors():
    f, y = classification(2, n=12, c=3)
    with pytest.raises(ValueError, match="needs 15 components but there are only 12 samples"):
        nleep(f, y)
    with pytest.raises(ValueError, match="variance must be in"):
        nleep(f, y, variance=0.0)
    with pytest.raises(ValueError, match="num_components must be"):
        gaussian_mixture_posteriors(f, 20)


def test_float32_relu_features_with_small_components_stay_finite():
    """ReLU6-like float32 features (scale 6, dead columns), 30 points per class for 5 components per class in
    a ~100-dimensional principal subspace: with scikit-learn's absolute 1e-6 covariance floor alone the Cholesky
    factorisation failed in float32 and the score was NaN."""
    rng = np.random.default_rng(0)
    y = np.arange(300) % 10
    f = np.clip(2 * rng.normal(size=(300, 256)) + 2 * rng.normal(size=(10, 256))[y], 0, 6).astype(np.float32)
    f[:, :100] = 0
    value = float(nleep(f, y))
    assert np.isfinite(value) and value <= 0
