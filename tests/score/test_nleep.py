import warnings

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


def _farthest_points_oracle(z, m):
    """The start the docstring promises, in numpy: the sample nearest the mean, then the farthest from those chosen."""
    chosen = [int(np.argmin(((z - z.mean(0)) ** 2).sum(1)))]
    nearest = ((z - z[chosen[0]]) ** 2).sum(1)
    while len(chosen) < m:
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((z - z[chosen[-1]]) ** 2).sum(1))
    return z[chosen]


def _sklearn_posteriors(z, m, tol):
    """scikit-learn's KMeans (10 Lloyd steps from the farthest points) then its full-covariance GaussianMixture
    started from the k-means clusters."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    km = KMeans(m, init=_farthest_points_oracle(z, m), n_init=1, max_iter=10, tol=0.0, algorithm="lloyd").fit(z)
    resp = np.eye(m)[km.predict(z)]
    nk = resp.sum(0)
    means = resp.T @ z / nk[:, None]
    covs = np.stack(
        [(resp[:, k, None] * (z - means[k])).T @ (z - means[k]) / nk[k] + 1e-6 * np.eye(z.shape[1]) for k in range(m)]
    )
    init = {"weights_init": nk / len(z), "means_init": means, "precisions_init": np.linalg.inv(covs)}
    gm = GaussianMixture(m, covariance_type="full", reg_covar=1e-6, tol=tol, max_iter=10_000, **init).fit(z)
    # scikit-learn makes one more M-step after its stopping test than we do (its predict_proba uses the parameters
    # of step n_iter_, our posteriors those of step n_iter_ - 1): stop it there, for the same EM.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the step count is set on purpose
        gm = GaussianMixture(m, covariance_type="full", reg_covar=1e-6, tol=0, max_iter=gm.n_iter_ - 1, **init).fit(z)
    return gm.predict_proba(z)


def test_mixture_matches_scikit_learn(x64):
    """The same EM from the same k-means start as scikit-learn's. Measured max abs difference 6.2e-12; bound
    5e-11."""
    f, _ = classification(3, n=200, d=3, c=3, separation=2.5)
    z = f - f.mean(0)
    got = np.asarray(gaussian_mixture_posteriors(z, 6, tol=1e-6, max_iter=10_000))
    np.testing.assert_allclose(got, _sklearn_posteriors(z, 6, tol=1e-6), atol=5e-11)


def test_nleep_matches_scikit_learn_pipeline(x64):
    """NLEEP against PCA + KMeans + GaussianMixture from scikit-learn and LEEP re-derived in numpy, at the published
    defaults (80 % variance, 5 components per class, tol 1e-3). Measured relative difference 9.6e-13; bound
    1e-11."""
    from sklearn.decomposition import PCA

    f, y = classification(4, n=300, d=8, c=3, separation=2.0)
    pca = PCA().fit(f)
    k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.8) + 1)
    z = PCA(k).fit_transform(f)
    probs = _sklearn_posteriors(z, 15, tol=1e-3)
    joint = np.stack([probs[y == c].sum(0) for c in range(3)]) / len(y)
    expected = np.mean(np.log((probs * (joint / joint.sum(0))[y]).sum(1)))
    assert float(nleep(f, y)) == pytest.approx(expected, rel=1e-11)


def test_float32_agrees_with_float64_at_a_tight_em_tolerance():
    """At the published tol=1e-3 float32 and float64 stop EM at different iterations on this problem (1.06 % apart:
    the stopping test is a step function, so where float32 stops moves with the last bits of the arithmetic); at
    tol=1e-7 EM runs until its remaining steps are below float32's resolution. Measured (jaxlib 0.10.2, numpy 2.4):
    1.06e-2 at 1e-3, 1.7e-3 at 1e-5 (1.6e-5 with the libraries of 2026-12-01: the step moved), 3.7e-5 at 1e-7;
    bound at 1e-7: 2e-4."""
    import jax

    f, y = classification(11, n=150, d=8, c=3)
    with jax.enable_x64(True):
        tight = float(nleep(f, y, tol=1e-7))
    assert float(nleep(f.astype(np.float32), y, tol=1e-7)) == pytest.approx(tight, rel=2e-4)
    with pytest.raises(ValueError, match="tol must be"):
        nleep(f, y, tol=0.0)
