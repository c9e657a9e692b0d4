import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.similarity import cka, cka_matrix, minibatch_cka, param_distance


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
        got = float(cka(x, y, kernel="rbf", sigma_fraction=fraction, bandwidth="off-diagonal"))
        assert got == pytest.approx(reference(x, y, fraction), rel=1e-10)
    assert abs(float(cka(x, y, kernel="rbf")) - float(cka(x, y))) > 1e-2  # not the linear kernel
    with pytest.raises(ValueError, match="kernel must be"):
        cka(x, y, kernel="poly")
    with pytest.raises(ValueError, match="bandwidth must be"):
        cka(x, y, kernel="rbf", bandwidth="mean")


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


def _demo_data():
    rng = np.random.RandomState(1337)  # the reference demo: np.random.seed(1337), X = randn, Y = randn + X
    x = rng.randn(100, 10)
    return x, rng.randn(100, 10) + x


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_the_reference_demo_values(precision, request):
    """Kornblith et al.'s published demo: linear 0.55761, debiased linear 0.51346, RBF(0.5) 0.65483."""
    if precision == "float64":
        request.getfixturevalue("x64")
    x, y = _demo_data()
    tol = 1e-6 if precision == "float32" else 1e-9  # the published 5 digits (+- 5e-6); float32 vs float64: 6e-8
    assert float(cka(x, y)) == pytest.approx(0.55761, abs=5e-6 + tol)
    assert float(cka(x, y, debiased=True)) == pytest.approx(0.51346, abs=5e-6 + tol)
    assert float(cka(x, y, kernel="rbf", sigma_fraction=0.5)) == pytest.approx(0.65483, abs=5e-6 + tol)
    assert float(cka(x, y, kernel="rbf", sigma_fraction=0.5, bandwidth="off-diagonal")) == pytest.approx(
        0.65401, abs=5e-6 + tol
    )


def _hsic1(k, l_):
    """Song et al. (2012), eq. (5), in float64 numpy."""
    n = len(k)
    k, l_ = k * (1 - np.eye(n)), l_ * (1 - np.eye(n))
    one = np.ones(n)
    return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))  # fmt: skip


@given(seed=st.integers(0, 2**16), wide=st.booleans())
def test_debiased_cka_matches_the_unbiased_hsic_oracle(x64, seed, wide):
    from scipy.spatial.distance import cdist

    x, y = _xy(seed, n=30, p=40 if wide else 5, q=6)  # wide: more features than samples, where the bias shows
    for kernel in ("linear", "rbf"):
        if kernel == "linear":
            k, l_ = x @ x.T, y @ y.T
        else:
            k, l_ = (np.exp(-(d := cdist(m, m, "sqeuclidean")) / (2 * np.median(d))) for m in (x, y))
        ref = _hsic1(k, l_) / np.sqrt(_hsic1(k, k) * _hsic1(l_, l_))
        assert float(cka(x, y, kernel=kernel, debiased=True)) == pytest.approx(ref, rel=1e-8)


def test_debiased_cka_removes_the_bias_of_wide_random_features(x64):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 500)), rng.normal(size=(30, 500))  # independent: the true CKA is 0
    assert float(cka(x, y)) > 0.5  # plain CKA is biased towards 1 when p >> n
    assert abs(float(cka(x, y, debiased=True))) < 0.15  # its spread around 0 is about 1 / n (measured 0.052 here)


def test_rbf_cka_uses_the_gram_form():
    # n = 400, p = 3000: the difference form would need 400 x 400 x 3000 floats (1.9 GB); the Gram form 0.6 MB
    jaxpr = jax.make_jaxpr(lambda a, b: cka(a, b, kernel="rbf"))(jnp.ones((400, 3000)), jnp.ones((400, 20)))
    sizes = [np.prod(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape")]
    assert max(sizes) <= 400 * 3000


def test_cka_matrix_against_pairwise_cka_and_its_errors(x64):
    import matplotlib

    matplotlib.use("Agg")
    x, y = _xy(7)
    a = {"x": x, "tanh": np.tanh(x), "maps": x.reshape(60, 2, 4)}
    b = [y, x[:, :3]]
    m = cka_matrix(a, b, kernel="rbf", debiased=True)
    assert m.names_a == ("x", "tanh", "maps") and m.names_b == ("0", "1")
    for i, fa in enumerate((x, np.tanh(x), x)):
        for j, fb in enumerate(b):
            assert m.values[i, j] == pytest.approx(float(cka(fa, fb, kernel="rbf", debiased=True)), rel=1e-10)
    same = cka_matrix(a)
    np.testing.assert_allclose(np.diag(same.values), 1.0, rtol=1e-12)
    np.testing.assert_allclose(same.values, same.values.T, rtol=1e-12)
    ax = same.plot()
    assert ax.get_ylabel() == "model A" and ax.get_title().startswith("CKA of")
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in np.asarray(same.values).ravel()]
    with pytest.raises(ValueError, match="every layer must describe the same 60"):
        cka_matrix(a, [y[:50]])
    with pytest.raises(ValueError, match="constant"):
        cka_matrix({"dead": np.ones((60, 3))})
    with pytest.raises(TypeError, match="dict name -> features"):
        cka_matrix(x)
