"""L2T-ww: the weighted matching loss against FitNets and a float64 numpy formula, the meta-gradient through the
unrolled steps against central differences, what trains (the source and BatchNorm statistics stay bitwise), pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.finetune import L2TWW, l2t_ww, weighted_feature_matching
from jaxtransfer.models import CNN, MLP


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-2, 1.0, 10.0]),
)
def test_matching_loss_is_fitnets_with_uniform_weights_and_the_formula_otherwise(shape, seed, scale):
    r_ = np.random.default_rng(seed)
    n, c = shape[0], shape[-1]
    r, s = scale * r_.normal(size=shape), scale * r_.normal(size=shape)
    fitnets = np.mean((r - s) ** 2)  # FitNets: the mean squared distance of the regressed map to the hint
    ours = weighted_feature_matching([jnp.asarray(r, jnp.float32)], [jnp.asarray(s, jnp.float32)],
                                     [jnp.full((n, c), 1.0 / c)], [jnp.ones(n)])  # fmt: skip
    np.testing.assert_allclose(float(ours), fitnets, rtol=1e-5)
    w = r_.dirichlet(np.ones(c), size=n)
    lam = r_.uniform(0, 3, n)
    per = ((r - s) ** 2).reshape(n, -1, c).mean(axis=1)
    ref = np.mean(lam * np.sum(w * per, axis=1))
    ours = weighted_feature_matching([jnp.asarray(r, jnp.float32)], [jnp.asarray(s, jnp.float32)],
                                     [jnp.asarray(w, jnp.float32)], [jnp.asarray(lam, jnp.float32)])  # fmt: skip
    np.testing.assert_allclose(float(ours), ref, rtol=1e-5)


rng = np.random.default_rng(0)
X = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
Y = (np.arange(8) % 3).astype(np.int32)


def _nets():
    source = CNN(3, 4, 2, 3, norm="batch", rngs=nnx.Rngs(0))
    target = CNN(3, 4, 2, 3, norm="batch", rngs=nnx.Rngs(1))
    return target, source


def test_meta_gradient_through_one_unrolled_step_equals_central_differences(x64):
    target, source = _nets()
    to64 = lambda t: jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), t)  # noqa: E731
    for m in (target, source):
        for _, var in nnx.iter_graph(m):
            if isinstance(var, nnx.Variable):
                var.set_value(jnp.asarray(var[...], jnp.float64))
    x = jnp.asarray(X, jnp.float64)
    problem, theta, phi = L2TWW.create(target, source, X, pairs="matched", inner_steps=1, inner_learning_rate=0.5)
    theta, phi = to64(theta), to64(phi)
    maps = problem.source_maps(x)
    grad = jax.grad(problem.meta_objective)(phi, theta, x, jnp.asarray(Y), maps)
    direction = jax.tree.map(lambda v: jnp.asarray(np.random.default_rng(v.size).normal(size=v.shape)), phi)
    h = 1e-5

    def at(t):
        shifted = jax.tree.map(lambda p, d: p + t * d, phi, direction)
        return float(problem.meta_objective(shifted, theta, x, jnp.asarray(Y), maps))

    fd = (at(h) - at(-h)) / (2 * h)
    directional = sum(float(jnp.sum(g * d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction),
                                                            strict=True))  # fmt: skip
    assert abs(directional) > 1e-6  # the meta-networks do change the outcome
    np.testing.assert_allclose(directional, fd, rtol=1e-5)  # float64: measured ~1e-8


def test_training_moves_the_target_only_and_pairs_are_chosen_as_asked():
    target, source = _nets()
    problem, _, _ = L2TWW.create(target, source, X)
    assert len(problem.pairs) == 9  # stem, block1, block2 on both sides, all 8 x 8
    problem, _, _ = L2TWW.create(target, source, X, pairs="matched")
    assert problem.pairs == (("stem", "stem"), ("block1", "block1"), ("block2", "block2"))
    source_before = nnx.state(source)
    stats_before = nnx.state(target, nnx.BatchStat)
    trained, history = l2t_ww(target, source, (X, Y), pairs="matched", epochs=3, batch_size=4)
    for a, b in zip(jax.tree.leaves(source_before), jax.tree.leaves(nnx.state(source)), strict=True):
        assert jnp.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(stats_before), jax.tree.leaves(nnx.state(trained, nnx.BatchStat)), strict=True):
        assert jnp.array_equal(a, b)  # BatchNorm statistics stay frozen
    assert not jnp.array_equal(trained.head.kernel[...], target.head.kernel[...])
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[-1]["loss"] < history[0]["loss"]
    assert all(h["wfm"] > 0 for h in history)


def test_bad_input_is_refused():
    target, source = _nets()
    with pytest.raises(ValueError, match="feature_maps"):
        L2TWW.create(MLP(3, [4], 3, rngs=nnx.Rngs(0)), source, X)
    with pytest.raises(ValueError, match="source layers"):
        L2TWW.create(target, source, X, pairs=[("nope", "stem")])
    with pytest.raises(ValueError, match="per pair"):
        weighted_feature_matching([jnp.ones((1, 2, 2, 3))], [], [], [])
    with pytest.raises(ValueError, match="pair shapes disagree"):
        weighted_feature_matching([jnp.ones((1, 2, 2, 3))], [jnp.ones((1, 2, 2, 4))], [jnp.ones((1, 4))],
                                  [jnp.ones(1)])  # fmt: skip
