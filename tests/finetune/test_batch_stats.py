"""BatchNorm statistics re-estimated for new weights, against NumPy per-channel moments of the pre-norm activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.lib.stride_tricks import sliding_window_view

from jaxtransfer.finetune import apply_fn, batch_stats_fn, has_batch_norm, merged_model, recompute_batch_stats
from jaxtransfer.landscape import linear_path
from jaxtransfer.soup import uniform_soup


class ConvBN(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(seed)
        self.conv = nnx.Conv(2, 3, (3, 3), padding="VALID", rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.head = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.mean(nnx.relu(self.bn(self.conv(x))), axis=(1, 2)))


class TwoBN(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(seed)
        self.fc1, self.bn1 = nnx.Linear(5, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
        self.fc2, self.bn2 = nnx.Linear(4, 3, rngs=rngs), nnx.BatchNorm(3, rngs=rngs)

    def __call__(self, x):
        return self.bn2(self.fc2(nnx.relu(self.bn1(self.fc1(x)))))


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=(n, 6, 6, 2)).astype(np.float32)


def _conv_numpy(model, x):
    """The VALID 3 x 3 convolution by sliding windows in float64 (Flax kernel layout (kh, kw, in, out))."""
    k = np.asarray(model.conv.kernel[...], np.float64)
    patches = sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))  # (n, 4, 4, in, 3, 3)
    return np.einsum("nhwcij,ijco->nhwo", patches, k) + np.asarray(model.conv.bias[...], np.float64)


def test_statistics_are_the_population_moments_over_unequal_batches():
    model = ConvBN(0)
    x = _images(23)
    before = jax.tree.map(np.array, nnx.state(model))
    fresh = recompute_batch_stats(model, [x[:4], (x[4:14], np.zeros(10)), x[14:]])  # sizes 4, 10, 9; (x, y) too
    pre = _conv_numpy(model, x).reshape(-1, 3)
    # float32 moments (Flax: E[x^2] - E[x]^2): measured 2e-7 relative over 5 models, bound 10x
    np.testing.assert_allclose(np.asarray(fresh.bn.mean[...]), pre.mean(0), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fresh.bn.var[...]), pre.var(0), rtol=2e-6)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, nnx.state(model)))  # input untouched
    same = recompute_batch_stats(model, x, batch_size=5)  # an array cut into 5, 5, 5, 5, 3
    np.testing.assert_allclose(np.asarray(same.bn.var[...]), pre.var(0), rtol=2e-6)


def test_later_layers_see_the_earlier_layers_normalised_inputs():
    model = TwoBN(1)
    x = np.random.default_rng(2).normal(size=(40, 5)).astype(np.float32)
    fresh = recompute_batch_stats(model, [x])
    p = {k: np.asarray(v[...], np.float64) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    h1 = x @ p[("fc1", "kernel")] + p[("fc1", "bias")]
    n1 = (h1 - h1.mean(0)) / np.sqrt(h1.var(0) + 1e-5) * p[("bn1", "scale")] + p[("bn1", "bias")]
    h2 = np.maximum(n1, 0) @ p[("fc2", "kernel")] + p[("fc2", "bias")]
    np.testing.assert_allclose(np.asarray(fresh.bn1.var[...]), h1.var(0), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(fresh.bn2.mean[...]), h2.mean(0), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(np.asarray(fresh.bn2.var[...]), h2.var(0), rtol=2e-6)
    fresh.eval()  # one batch: eval mode with the new statistics reproduces the training-mode forward
    np.testing.assert_allclose(np.asarray(fresh(x)), np.asarray(nnx.clone(model)(x)), rtol=1e-4, atol=1e-5)


def test_the_pure_function_under_jit_and_vmap_and_the_path_uses_it():
    models = [ConvBN(s) for s in (3, 4)]
    x = _images(16, seed=5)
    stats_of = batch_stats_fn(models[0])
    params = [nnx.state(m, nnx.Param) for m in models]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    batched = jax.jit(jax.vmap(stats_of, in_axes=(0, None)))(stacked, x.reshape(2, 8, 6, 6, 2))
    for i, m in enumerate(models):
        want = recompute_batch_stats(m, [x[:8], x[8:]])
        np.testing.assert_allclose(np.asarray(batched["bn"]["var"][...][i]), np.asarray(want.bn.var[...]), rtol=1e-5)

    soup = uniform_soup(params)
    _, fn = apply_fn(models[0], batch_stats_from=x, batch_size=8)
    by_model = merged_model(models[0], soup, batches=[x[:8], x[8:]])
    by_model.eval()
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(soup, x)), np.asarray(by_model(x)), rtol=1e-5, atol=1e-6)
    y = np.arange(16) % 2

    def loss(p, d):
        logits = fn(p, d[0])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), d[1]])

    path = linear_path(loss, params[0], params[1], (jnp.asarray(x), jnp.asarray(y)), num=3)
    assert path.losses[1] == pytest.approx(float(loss(soup, (x, y))), rel=1e-5)  # the midpoint is the soup


def test_models_without_batch_norm_and_bad_batches():
    from jaxtransfer.models import MLP

    mlp = MLP(4, [8], 3, rngs=nnx.Rngs(0))
    assert not has_batch_norm(mlp) and has_batch_norm(ConvBN(0))
    copy = recompute_batch_stats(mlp, [np.ones((2, 4), np.float32)])
    assert copy is not mlp
    with pytest.raises(ValueError, match=r"no nnx\.BatchNorm"):
        batch_stats_fn(mlp)
    with pytest.raises(ValueError, match="batch 1 is empty"):
        recompute_batch_stats(ConvBN(0), [_images(2), _images(0)])
    bad = _images(3)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="batch 0 contains NaN"):
        recompute_batch_stats(ConvBN(0), [bad])
    with pytest.raises(ValueError, match="at least one batch"):
        recompute_batch_stats(ConvBN(0), [])
    with pytest.raises(ValueError, match="multiple of batch_size"):
        apply_fn(ConvBN(0), batch_stats_from=_images(10), batch_size=4)
