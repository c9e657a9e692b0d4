"""extract_features: equal to applying the model directly, any pytree of outputs, model untouched, errors."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.models import CNN, MLP, extract_features

X = np.asarray(jax.random.normal(jax.random.key(0), (23, 8, 8, 1)))


@pytest.mark.parametrize("jit", [True, False])
def test_batched_equals_direct_including_a_partial_last_batch(jit):
    model = CNN(1, 8, 1, 5, norm="batch", rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model))
    out = extract_features(model, X, batch_size=5, jit=jit, progress=False)
    model.eval()
    np.testing.assert_allclose(out, np.asarray(model.features(X)), atol=1e-5)
    after = jax.tree.map(np.asarray, nnx.state(model))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))  # BatchNorm statistics untouched


def test_pytree_outputs_and_transform():
    model = MLP(64, (16,), 3, rngs=nnx.Rngs(0))
    out = extract_features(
        model,
        X,
        fn=lambda m, b: {"features": m.features(b), "logits": m(b)},
        transform=lambda b: 2 * b,
        batch_size=8,
        progress=False,
    )
    assert out["features"].shape == (23, 16) and out["logits"].shape == (23, 3)
    np.testing.assert_allclose(out["logits"], np.asarray(model(2 * X)), atol=1e-5)


def test_errors():
    model = MLP(64, (16,), 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="empty"):
        extract_features(model, X[:0], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(model, X, batch_size=0, progress=False)
    bad = X.copy()
    bad[3] = np.nan
    with pytest.raises(FloatingPointError, match="non-finite"):
        extract_features(model, bad, progress=False)
