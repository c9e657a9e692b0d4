"""NNX modules are pytrees (Flax >= 0.11): the array-core tools take fine-tuned models directly and give models back."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.landscape import linear_path
from jaxtransfer.merge import ties_merge, wise_ft
from jaxtransfer.models import MLP
from jaxtransfer.soup import uniform_soup


def _models():
    return [MLP(4, [8], 3, rngs=nnx.Rngs(s)) for s in range(3)]


def _kernel(m):
    return np.asarray(m.head.kernel[...], np.float64)


def test_models_in_models_out():
    pre, a, b = _models()
    before = _kernel(a).copy()
    soup = uniform_soup([a, b])
    assert isinstance(soup, MLP)
    np.testing.assert_allclose(_kernel(soup), (_kernel(a) + _kernel(b)) / 2, rtol=1e-6)
    mid = wise_ft(pre, a, 0.25)
    np.testing.assert_allclose(_kernel(mid), 0.75 * _kernel(pre) + 0.25 * _kernel(a), rtol=1e-6, atol=1e-7)
    merged = ties_merge(pre, [a, b], density=1.0)
    assert isinstance(merged, MLP) and merged(jnp.ones((2, 4))).shape == (2, 3)
    np.testing.assert_array_equal(_kernel(a), before)  # inputs untouched


def test_a_path_between_two_models():
    _, a, b = _models()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)

    def loss(model, data):
        return jnp.mean(jnp.square(model(data)))

    path = linear_path(loss, a, b, x, num=3)
    assert path.losses[0] == pytest.approx(float(loss(a, x)), rel=1e-6)
    assert path.losses[1] == pytest.approx(float(loss(uniform_soup([a, b]), x)), rel=1e-5)
