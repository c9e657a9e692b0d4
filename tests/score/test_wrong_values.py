"""Regression tests for wrong values that users hit with ordinary data (issue: no silent wrong answers).

Each test compares with an independent float64 reference (scipy / numpy, re-derived from the papers), or checks
that the input is rejected with an error that names it.
"""

from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from jaxtransfer import gbc, hscore, hscore_regularized, logme, parc, sfda, transrate, weighted_tau

FIXTURE = Path(__file__).with_name("fixtures") / "lite0_mnist.npz"


def _blobs(n, d, c, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    return (np.eye(c)[y] @ rng.normal(size=(c, d)) + rng.normal(size=(n, d))).astype(dtype), y


def test_parc_does_not_overflow_for_large_n():
    """Above ~4,500 samples the float32 sums of squares of the n^2/2 ranks overflowed and PARC returned 0.0."""
    f, y = _blobs(4800, 8, 5)  # just above the ~4,500 where the old code failed (fewer pairs: a faster reference)
    g = f.astype(np.float64)
    g = (g - g.mean(0)) / g.std(0)
    c = g - g.mean(1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rows, cols = np.triu_indices(len(y), 1)
    reference = 100 * scipy.stats.spearmanr((1 - c @ c.T)[rows, cols], (y[rows] != y[cols])).statistic
    # Measured |diff| 9e-7 at n = 6000 and 7e-6 at n = 12000 (float32 ranks); bar 1e-5 relative.
    assert float(parc(f, y)) == pytest.approx(reference, rel=1e-5)


def _sfda_reference(x, y, c):
    """SFDA in float64 the published way: shrunk scatters, generalised eigenproblem (S_b, S_w), nearest mean."""
    n, d = x.shape
    priors = np.bincount(y, minlength=c) / n

    def fda_probs(x, shrinkage):
        means = np.stack([x[y == k].mean(0) for k in range(c)])
        r = x - means[y]
        sw = r.T @ r / n
        sw = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
        st = np.cov(x.T, bias=True)
        st = (1 - shrinkage) * st + shrinkage * np.trace(st) / d * np.eye(d)
        _, vecs = scipy.linalg.eigh(st - sw, sw)  # V^T S_w V = I: V V^T = S_w^-1
        coef = means @ vecs @ vecs.T
        logits = x @ coef.T - 0.5 * np.sum(coef * means, axis=1) + np.log(priors)
        return scipy.special.softmax(logits, axis=1), means

    means = np.stack([x[y == k].mean(0) for k in range(c)])
    r = x - means[y]
    shrinkage = max(np.exp(-5 * np.linalg.eigvalsh(r.T @ r / n)[-1]), 1e-10)
    probs, means = fda_probs(x, shrinkage)
    soft = scipy.special.softmax(probs, axis=1)
    p_true = soft[np.arange(n), y][:, None]
    others = (means.sum(0, keepdims=True) - means) / (c - 1)
    probs2, _ = fda_probs(p_true * x + (1 - p_true) * others[y], shrinkage)
    return probs2[np.arange(n), y].mean()


@pytest.mark.parametrize("scale", [1e-2, 1.0, 10.0])
def test_sfda_when_d_exceeds_n_matches_the_float64_published_algorithm(scale):
    """D >= n (1280-wide features of a few hundred images): float32 collapsed to exactly 1/C."""
    rng = np.random.default_rng(0)
    n, d, c = 60, 200, 4
    y = np.arange(n) % c
    f = scale * np.maximum(rng.normal(size=(c, d))[y] * 0.5 + rng.normal(size=(n, d)) + 1, 0)
    reference = _sfda_reference(f, y, c)
    # Measured |diff| 6.4e-8 at scale 1e-2 and 0 at 1 and 10 (float32 against the float64 reference); bar 5e-7.
    assert float(sfda(f.astype(np.float32), y)) == pytest.approx(reference, abs=5e-7)
    assert float(sfda(f.astype(np.float32), y)) > 1.5 / c


def test_hscore_float32_on_real_features_is_close_to_float64():
    """float32 H-score was off by up to 33 % on pooled Lite0 features (pseudo-inverse of a float32 covariance)."""
    data = np.load(FIXTURE)
    f, y = data["stage2"], data["labels"]
    g = f.astype(np.float64)
    c = g - g.mean(0)
    m = np.stack([g[y == k].mean(0) for k in range(10)])[y]
    m -= m.mean(0)
    reference = np.trace(np.linalg.pinv(c.T @ c, hermitian=True) @ (m.T @ m))
    # Measured: float32 1.4e-7 relative to the float64 reference (0.061 before); bar 2e-6.
    assert float(hscore(f, y)) == pytest.approx(reference, rel=2e-6)


@pytest.mark.parametrize("scale", [1e-10, 1e10])
@pytest.mark.parametrize("score", [logme, hscore, hscore_regularized, parc])
def test_scale_invariant_scores_are_so_at_every_finite_float32_scale(score, scale):
    f, y = _blobs(300, 8, 3)
    base = float(score(f, y))
    # Power-of-two rescaling inside: the only difference left is the rounding of f * scale itself (measured 2e-6).
    assert float(score(f * np.float32(scale), y)) == pytest.approx(base, rel=2e-5)


@pytest.mark.parametrize("score", [hscore, hscore_regularized, parc, sfda, gbc, transrate])
@pytest.mark.parametrize("rows", ["zeros", "identical"])
def test_constant_features_are_rejected(score, rows):
    f = np.zeros((20, 4), np.float32) if rows == "zeros" else np.tile(np.float32([1, 2, 3, 4]), (20, 1))
    with pytest.raises(ValueError, match="features are the same for every sample"):
        score(f, np.arange(20) % 2)


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (np.array([0, 1, 2**31 + 5], np.int64), "2147483653"),
        (np.array([0, 1, 3_000_000_000], np.uint32), "3000000000"),
        (np.array([0, 1, -3], np.int64), "-3"),
    ],
)
def test_labels_are_checked_in_their_own_dtype(labels, shown):
    f = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(ValueError, match=shown):
        hscore(f, labels)
    with pytest.raises(ValueError, match=shown):
        logme(f, labels)


@pytest.mark.parametrize("which", ["scores", "ground_truth"])
def test_weighted_tau_of_a_constant_side_is_undefined(which):
    a, const = [0.1, 0.5, 0.3], [1.0, 1.0, 1.0]
    args = (const, a) if which == "scores" else (a, const)
    with pytest.raises(ValueError, match=f"{which} is the same for every model"):
        weighted_tau(*args)


def test_logme_float64_scale_invariance_is_exact(x64):
    f, y = _blobs(200, 6, 3, dtype=np.float64)
    assert float(logme(f * 2.0**40, y)) == float(logme(f, y))
    assert float(logme(f * 1e-30, y)) == pytest.approx(float(logme(f, y)), rel=1e-12)


def test_jax_jit_path_keeps_the_rescaling():
    f, y = _blobs(100, 4, 2)
    jitted = jax.jit(lambda f, y: logme(f, y, num_classes=2))
    assert float(jitted(f * np.float32(1e12), y)) == pytest.approx(float(logme(f, y)), rel=2e-5)


def test_sfda_float32_keeps_small_but_real_eigenvalues_of_the_scatter():
    # Real features (the demo's mlp128-digits on 300 MNIST images; fixtures/make_zoo_mlp128_mnist.py): the
    # within-class scatter has eigenvalues 1.1e-5 .. 5.6, above float32's rounding. The old rule (cut below
    # D eps lambda_max) zeroed the smallest: float32 0.693 for a float64 0.936. Measured now: |error| 5e-4.
    from pathlib import Path

    import jax

    from jaxtransfer import sfda

    data = np.load(Path(__file__).with_name("fixtures") / "zoo_mlp128_mnist.npz")
    f, y = data["features"], data["labels"]
    with jax.enable_x64(True):
        reference = float(sfda(f.astype(np.float64), y))
    assert reference == pytest.approx(0.9356, abs=1e-4)
    assert float(sfda(f, y)) == pytest.approx(reference, abs=3e-3)
