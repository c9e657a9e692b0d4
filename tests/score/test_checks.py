"""Every bad input to LogME gets a clear error naming the argument (never a silent NaN)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtransfer import LogME, logme
from tests.score import oracle

F = np.random.default_rng(0).normal(size=(20, 4))
Y = np.arange(20) % 3


@pytest.mark.parametrize(
    ("features", "labels", "kwargs", "error", "match"),
    [
        (
            np.where(np.eye(20, 4) > 0, np.nan, F),
            Y,
            {},
            ValueError,
            "features contains 4 NaN or Inf",
        ),
        (np.where(np.eye(20, 4) > 0, np.inf, F), Y, {}, ValueError, "NaN or Inf"),
        (F[:, 0], Y, {}, ValueError, r"features must be a 2-D array .* got shape \(20,\)"),
        (F[None], Y, {}, ValueError, r"got shape \(1, 20, 4\)"),
        (F[:1], Y[:1], {}, ValueError, "at least 2 samples"),
        (F[:, :0], Y, {}, ValueError, "at least one feature"),
        (F.astype(complex), Y, {}, TypeError, "features must hold real numbers"),
        (np.array([["a", "b"], ["c", "d"]]), Y[:2], {}, TypeError, "real numbers"),
        (F, Y[:-1], {}, ValueError, "labels has 19 entries but features has 20"),
        (F, Y.astype(float), {}, TypeError, "labels must be integer class ids.*regression=True"),
        (F, Y > 0, {}, TypeError, "labels must be integer"),
        (F, Y - 1, {}, ValueError, "labels must be >= 0; got -1"),
        (F, Y[:, None], {}, ValueError, r"labels must be a 1-D array .* \(20, 1\)"),
        (
            F,
            np.where(Y == 1, 2, Y),
            {},
            ValueError,
            r"class\(es\) 1 of range \[0, 3\) have no samples",
        ),
        (F, Y, {"num_classes": 2}, ValueError, "labels must be < num_classes=2; got 2"),
        (F, Y, {"num_classes": 5}, ValueError, r"class\(es\) 3, 4 of range \[0, 5\)"),
        (F, np.zeros(20, int), {}, ValueError, "at least 2 classes"),
        (F, Y, {"method": "fast"}, ValueError, "method must be 'optimized' or 'naive'"),
        (F, Y, {"tol": 0.0}, ValueError, "tol must be a positive"),
        (F, Y, {"max_iter": 0}, ValueError, "max_iter must be a positive integer"),
        (F, Y, {"num_classes": 3, "regression": True}, ValueError, "num_classes applies to"),
        (F, np.full((20, 2), np.nan), {"regression": True}, ValueError, "targets contain NaN"),
        (F, np.ones((19, 2)), {"regression": True}, ValueError, "targets has 19 rows"),
        (F, np.ones((20, 2, 1)), {"regression": True}, ValueError, r"shape \(n,\) or \(n, K\)"),
        (
            F,
            np.c_[np.ones(20), np.zeros(20)],
            {"regression": True},
            ValueError,
            "column.* 1 are .*zero",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(features, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        logme(features, labels, **kwargs)


def test_inputs_are_not_mutated():
    f, y = F.copy(), Y.copy()
    logme(f, y)
    LogME().fit(f, y)
    np.testing.assert_array_equal(f, F)
    np.testing.assert_array_equal(y, Y)


def test_accepted_input_types():
    """Lists, integer features, float16 and jax arrays are accepted; half precision is computed in float32."""
    ref = float(logme(F, Y))
    assert float(logme(F.tolist(), Y.tolist())) == pytest.approx(ref, rel=1e-6)
    assert float(logme(jnp.asarray(F), jnp.asarray(Y))) == pytest.approx(ref, rel=1e-6)
    assert logme(F.astype(np.float16), Y).dtype == jnp.float32
    as_int = (F * 10).astype(np.int32)
    # integer features are their values (computed in float32): the float64 global maximum, to float32 accuracy
    assert float(logme(as_int, Y.astype(np.uint8))) == pytest.approx(oracle.logme(as_int.astype(float), Y), rel=1e-5)


def test_traced_labels_need_num_classes():
    import jax

    with pytest.raises(ValueError, match=r"number of classes of labels must be given \(num_classes="):
        jax.jit(lambda f, y: logme(f, y))(F, Y)
