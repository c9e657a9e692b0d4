import numpy as np
import pytest
import scipy.linalg

from jaxtransfer.score import sfda
from tests.score._data import classification


def _fda_probs(x, y, shrinkage):
    """Regularised FDA written the long way: generalised eigenvectors of (S_b, S_w), then class scores."""
    n, d = x.shape
    classes = y.max() + 1
    priors = np.bincount(y) / n
    means = np.stack([x[y == k].mean(0) for k in range(classes)])
    sw = sum(priors[k] * np.cov(x[y == k].T, bias=True).reshape(d, d) for k in range(classes))
    st = np.cov(x.T, bias=True).reshape(d, d)

    def shrink(s):
        return (1 - shrinkage) * s + shrinkage * np.trace(s) / d * np.eye(d)

    _, vecs = scipy.linalg.eigh(shrink(st) - shrink(sw), shrink(sw))
    coef = means @ vecs @ vecs.T
    scores = x @ coef.T - 0.5 * np.sum(means * coef, 1) + np.log(priors)
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), sw, means


def sfda_oracle(f, y):
    n, classes = len(y), y.max() + 1
    _, sw, _ = _fda_probs(f, y, 0.5)
    shrinkage = max(np.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    probs, _, means = _fda_probs(f, y, shrinkage)
    soft = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)
    mixed = f.copy()
    for k in range(classes):
        other = (means.sum(0) - means[k]) / (classes - 1)
        q = soft[y == k, k][:, None]
        mixed[y == k] = q * f[y == k] + (1 - q) * other
    probs2, _, _ = _fda_probs(mixed, y, shrinkage)
    return probs2[np.arange(n), y].mean()


@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 0.2), (2, 0.05)])
def test_sfda_matches_oracle(x64, seed, scale):
    f, y = classification(seed, n=150, d=6, c=3)
    f = scale * f
    assert float(sfda(f, y)) == pytest.approx(sfda_oracle(f, y), rel=1e-8)
