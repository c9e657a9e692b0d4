"""logme_many equals a loop of logme, groups models by width, compiles once per width, and names a bad model."""

import warnings

import jax
import numpy as np
import pytest

from jaxtransfer.score import logme, logme_many
from tests.score import oracle


def test_logme_many_equals_loop_and_groups_by_width(x64):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 150)
    models = [rng.normal(size=(150, d)) + s * y[:, None] for d, s in [(8, 1.0), (16, 0.1), (8, 0.5), (200, 0.3)]]
    got = np.asarray(logme_many(models, y))
    # On the CPU the n > D models run one by one through the row-block path and the n <= D model is vmapped; the
    # reference is the float64 oracle (observed ~1e-11 relative), then the per-model public function.
    np.testing.assert_allclose(got, [oracle.logme(f, y) for f in models], rtol=1e-7)
    np.testing.assert_allclose(got, [float(logme(f, y)) for f in models], rtol=1e-9)


def test_vmapped_group_equals_the_oracle_on_wide_models(x64):
    """Models with n <= D take the vmapped program on every backend."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 40)
    models = [rng.normal(size=(40, 50)) + s * y[:, None] for s in (0.2, 1.0)]
    np.testing.assert_allclose(np.asarray(logme_many(models, y)), [oracle.logme(f, y) for f in models], rtol=1e-7)


def test_logme_many_does_not_recompile_on_a_second_call(compiles):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 100)
    models = [rng.normal(size=(100, 10)) for _ in range(3)] + [rng.normal(size=(100, 120)) for _ in range(2)]
    logme_many(models, y)
    compiles.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        logme_many([m + 1 for m in models], y)
    assert compiles == []


def test_logme_many_errors():
    y = np.arange(20) % 2
    with pytest.raises(TypeError, match="non-empty list"):
        logme_many(np.ones((20, 3)), y)
    with pytest.raises(TypeError, match="non-empty list"):
        logme_many([], y)
    with pytest.raises(ValueError, match=r"features\[1\] has 19 samples"):
        logme_many([np.ones((20, 3)), np.ones((19, 3))], y)
    bad = np.ones((20, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"features\[1\] contains 1 NaN"):
        logme_many([np.ones((20, 3)), bad], y)


def test_traced_labels_with_concrete_features_take_the_whole_matrix_path():
    rng = np.random.default_rng(6)
    y = np.arange(120) % 3
    models = [rng.normal(size=(120, 6)) + s * y[:, None] for s in (0.3, 1.0)]
    traced = jax.jit(lambda labels: logme_many(models, labels, num_classes=3))(y)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(logme_many(models, y)), rtol=1e-5)
