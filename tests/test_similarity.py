import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.similarity import cka, minibatch_cka, param_distance


def cka_oracle(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _xy(seed, n=60, p=8, q=5):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, p))
    return x, np.tanh(x @ r.normal(size=(p, q))) + 0.3 * r.normal(size=(n, q))


@given(seed=st.integers(0, 2**16))
def test_linear_cka_matches_oracle_and_its_invariances(x64, seed):
    x, y = _xy(seed)
    ref = cka_oracle(x, y)
    assert float(cka(x, y)) == pytest.approx(ref, rel=1e-10)
    assert float(cka(x, x)) == pytest.approx(1.0, rel=1e-12)
    q, _ = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(8, 8)))
    assert float(cka(3.0 * x @ q, y)) == pytest.approx(ref, rel=1e-9)  # orthogonal map and isotropic scaling


def test_linear_cka_is_not_invariant_to_arbitrary_invertible_maps(x64):
    x, y = _xy(1)
    a = np.diag([10.0, 1, 1, 1, 1, 1, 1, 0.1]) @ np.random.default_rng(2).normal(size=(8, 8))
    assert abs(float(cka(x @ a, y)) - float(cka(x, y))) > 1e-3


def test_rbf_cka(x64):
    """Against CKA built from scikit-learn's rbf_kernel and scipy's pairwise distances (Kornblith et al., 2019:
    sigma = fraction x the median pairwise distance; CKA = <HKH, HLH> / (||HKH|| ||HLH||))."""
    from scipy.spatial.distance import pdist
    from sklearn.metrics.pairwise import rbf_kernel

    x, y = _xy(3)
    h = np.eye(len(x)) - 1 / len(x)

    def reference(a, b, fraction):
        k, l_ = ((h @ rbf_kernel(m, gamma=1 / (2 * (fraction * np.sqrt(np.median(pdist(m, "sqeuclidean")))) ** 2)) @ h)
                 for m in (a, b))  # fmt: skip
        return np.sum(k * l_) / (np.linalg.norm(k) * np.linalg.norm(l_))

    assert float(cka(x, x, kernel="rbf")) == pytest.approx(1.0, rel=1e-10)
    for fraction in (0.5, 1.0, 2.0):
        got = float(cka(x, y, kernel="rbf", sigma_fraction=fraction))
        assert got == pytest.approx(reference(x, y, fraction), rel=1e-10)
    assert abs(float(cka(x, y, kernel="rbf")) - float(cka(x, y))) > 1e-2  # not the linear kernel
    with pytest.raises(ValueError, match="kernel must be"):
        cka(x, y, kernel="poly")


def test_minibatch_cka_converges_to_the_full_one(x64):
    x, y = _xy(4, n=4000)
    full = float(cka(x, y))
    small = float(minibatch_cka((x[i : i + 100], y[i : i + 100]) for i in range(0, 400, 100)))
    large = float(minibatch_cka((x[i : i + 100], y[i : i + 100]) for i in range(0, 4000, 100)))
    assert abs(large - full) < abs(small - full) + 1e-3
    assert large == pytest.approx(full, abs=0.02)


def test_cka_errors():
    x, y = _xy(5)
    with pytest.raises(ValueError, match="same samples: 60 vs 59"):
        cka(x, y[:-1])
    with pytest.raises(ValueError, match="at least 4 samples"):
        minibatch_cka([(x[:3], y[:3])])
    with pytest.raises(ValueError, match="batch 1 has 10 samples"):
        minibatch_cka([(x[:20], y[:20]), (x[20:30], y[20:30])])
    with pytest.raises(ValueError, match="NaN"):
        cka(np.full_like(x, np.nan), y)


def test_param_distance():
    a = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2), "n": jnp.asarray(1)}
    b = {"w": jnp.full((2, 2), 2.0), "b": jnp.ones(2), "n": jnp.asarray(5)}
    d = param_distance(a, b)
    assert d["total"] == pytest.approx(np.sqrt(4 + 2))
    assert d["relative"] == pytest.approx(np.sqrt(6) / 2)
    assert d["leaves"]["['w']"][0] == pytest.approx(2.0)
    assert "['n']" not in d["leaves"]
    assert param_distance(a, a, per_leaf=False) == {"total": 0.0, "relative": 0.0}
    _ = jax
