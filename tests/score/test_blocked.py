"""The row-block LogME path (concrete input, n > D): the float64 oracle, one compilation whatever n, host checks.

Tolerances: float64 runs agree with the oracle to ~1e-10 relative (tested at 1e-7, as in test_logme.py). In float32,
on features with a shared mean 50 times their spread and rows sorted by class (the shift is then far from the mean
of most blocks), both the blocked path and the whole-matrix path were measured at up to 3e-5 relative to float64
(seeds 1-3, sorted and shuffled): the float32 rounding of the features themselves. Tested at 1e-4.
"""

import warnings

import jax
import numpy as np
import pytest

from jaxtransfer import _checks, logme, logme_evidence
from jaxtransfer.score import _blocked
from tests.score import oracle


def _sorted_relu_features(seed, n, d, c, offset):
    """Pooled-ReLU-like features (a shared mean ``offset``), class means apart, rows sorted by class."""
    rng = np.random.default_rng(seed)
    labels = np.sort(np.concatenate([np.arange(c), rng.integers(0, c, n - c)]))
    f = offset + np.maximum(rng.normal(size=(n, d)), 0.0) + 0.8 * rng.normal(size=(c, d))[labels]
    return f, labels


def test_buckets():
    assert [_blocked.bucket(m) for m in (1, 128, 129, 1000, 2047, 2048)] == [128, 128, 256, 1024, 2048, 2048]


@pytest.mark.parametrize("n", [2 * _blocked.BLOCK + 333, 700])  # three blocks with a partial last; one padded
def test_float64_equals_the_oracle_on_sorted_shifted_features(x64, n):
    f, labels = _sorted_relu_features(0, n, 12, 4, offset=50.0)
    got = float(logme(f, labels))
    assert got == pytest.approx(oracle.logme(f, labels), rel=1e-7)


def test_float32_is_within_its_precision_of_float64():
    f, labels = _sorted_relu_features(1, 2 * _blocked.BLOCK + 333, 12, 4, offset=50.0)
    with jax.enable_x64(True):
        want = float(logme(f, labels))
    got = float(logme(f.astype(np.float32), labels))  # float64 input is converted block by block the same way
    assert got == pytest.approx(want, rel=1e-4)
    assert float(logme(f, labels)) == pytest.approx(got, rel=1e-6)


def test_regression_weights_are_the_posterior_mean_at_the_fitted_alpha_beta(x64):
    rng = np.random.default_rng(2)
    n, d = _blocked.BLOCK + 77, 6
    f = 3.0 + rng.normal(size=(n, d))
    y = f @ rng.normal(size=(d, 2)) + rng.normal(size=(n, 2))
    res = logme_evidence(f, y, regression=True)
    for k in range(2):
        t = float(res.alpha[k] / res.beta[k])
        m = np.linalg.solve(f.T @ f + t * np.eye(d), f.T @ y[:, k])  # (F^T F + a/b I)^-1 F^T y
        np.testing.assert_allclose(np.asarray(res.weights[k]), m, rtol=1e-9)
        assert float(res.evidence[k]) == pytest.approx(oracle.evidence(f, y[:, k]), rel=1e-7)


def test_n_around_a_block_multiple_compiles_once(compiles):
    """n = 9999, 10000, 10001 (the issue's example) share every compiled shape: one set of compilations."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(10001, 8)).astype(np.float32)
    labels = np.arange(10001) % 3
    y = rng.normal(size=(10001, 2)).astype(np.float32)
    logme(f[:9999], labels[:9999])
    logme(f[:9999], y[:9999], regression=True)
    logme_evidence(f[:9999], labels[:9999])
    first = len(compiles)
    for n in (10000, 10001):
        logme(f[:n], labels[:n])
        logme(f[:n], y[:n], regression=True)
        logme_evidence(f[:n], labels[:n])
    assert first > 0 and len(compiles) == first


def test_input_is_not_mutated_and_jax_input_gives_the_same_score():
    f, labels = _sorted_relu_features(4, _blocked.BLOCK + 5, 10, 3, offset=5.0)
    f = f.astype(np.float32)
    before = f.copy()
    got = float(logme(f, labels))
    np.testing.assert_array_equal(f, before)
    assert float(logme(jax.numpy.asarray(f), jax.numpy.asarray(labels))) == got


def test_float64_values_beyond_float32_range_are_rejected():
    f, labels = _sorted_relu_features(5, 50, 4, 2, offset=0.0)
    f[3, 1] = 1e300
    with pytest.raises(ValueError, match="1 NaN or Inf"):
        logme(f, labels)


def test_matches_the_traced_whole_matrix_path():
    """Inside jit the whole-matrix path runs; on the same data it agrees with the blocked path to float32 rounding."""
    f, labels = _sorted_relu_features(6, _blocked.BLOCK + 900, 16, 5, offset=20.0)
    f = f.astype(np.float32)
    eager = float(logme(f, labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traced = float(jax.jit(lambda x, y: logme(x, y, num_classes=5))(f, labels))
    assert eager == pytest.approx(traced, rel=1e-4)


def test_only_host_data_takes_the_blocked_path():
    x = np.ones((3, 2))
    assert _checks.in_host_memory(x) and _checks.in_host_memory(jax.numpy.asarray(x))
    assert _checks.in_host_memory([[1.0, 2.0]])
    seen = []
    jax.jit(lambda a: seen.append(_checks.in_host_memory(a)) or a)(x)
    assert seen == [False]  # a tracer
