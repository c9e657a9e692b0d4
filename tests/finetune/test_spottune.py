"""SpotTune: the straight-through estimator against the softmax Jacobian in float64, the two extreme policies against
the pre-trained and the fine-tuned networks, what trains (bitwise), the global variant's budget and exact merge."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.finetune import (
    FrozenParam,
    GlobalPolicy,
    SpotTune,
    count_params,
    finetune,
    gumbel_softmax_st,
    inject_spottune,
    merge_spottune,
    spottune_budget_penalty,
)
from jaxtransfer.models import CNN, EfficientNetLite, LiteConfig, TinyViT

rng = np.random.default_rng(0)
X = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
Y = (np.arange(16) % 5).astype(np.int32)


@nnx.jit
def _run(model, x):
    return model(x)


def _cnn():
    return CNN(3, 8, 3, 5, norm="batch", rngs=nnx.Rngs(0))


def _vit():
    return TinyViT(16, 3, 4, 16, 2, 2, 5, rngs=nnx.Rngs(0))


@settings(max_examples=30, deadline=None)
@given(
    logits=hnp.arrays(np.float64, (3, 4), elements=st.floats(-5, 5)),
    weights=hnp.arrays(np.float64, (3, 4), elements=st.floats(-2, 2)),
    temperature=st.floats(0.5, 10.0),
    seed=st.integers(0, 2**16),
)
def test_straight_through_forward_is_one_hot_and_gradient_is_the_softmax_jacobian(logits, weights, temperature, seed):
    key = jax.random.key(seed)
    y = np.asarray(gumbel_softmax_st(jnp.asarray(logits, jnp.float32), key, temperature))
    assert set(np.unique(y)) <= {0.0, 1.0} and np.all(y.sum(-1) == 1)
    grad = jax.grad(lambda z: jnp.sum(gumbel_softmax_st(z, key, temperature) * weights))(jnp.asarray(logits))
    # independent reference: the same Gumbel draw, the relaxed softmax's Jacobian (diag(s) - s s^T) / tau in numpy
    g = np.asarray(jax.random.gumbel(key, logits.shape, jnp.float32), np.float64)
    z = (logits + g) / temperature
    s = np.exp(z - z.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    ref = np.stack([(np.diag(si) - np.outer(si, si)) @ wi / temperature for si, wi in zip(s, weights, strict=True)])
    np.testing.assert_allclose(np.asarray(grad), ref, atol=1e-6)  # float32 softmax: measured ~1e-8
    assert np.array_equal(np.argmax(y, -1), np.argmax(z, -1))


def _forced(model: SpotTune, choice: int) -> SpotTune:
    """The routed model with a global policy that always takes copy ``choice`` (0 frozen, 1 tuned)."""
    model = nnx.clone(model)
    policy = GlobalPolicy(model.num_blocks)
    policy.logits[...] = jnp.zeros((model.num_blocks, 2)).at[:, choice].set(1e4)  # beats any Gumbel draw
    model.policy = policy
    return model


def _at(module, path):
    for k in path:
        module = module[k] if isinstance(k, int) else getattr(module, k)
    return module


def _perturb_tuned(routed: SpotTune, base: nnx.Module):
    """Adds the same noise to the tuned copies of the routed model and to the blocks of the base model."""
    key = jax.random.key(1)
    for path, block in list(nnx.iter_modules(routed.model)):
        if not (path and path[-1] == "tuned"):
            continue
        target = _at(base, path[:-1])
        for p, v in nnx.iter_graph(block):
            if isinstance(v, nnx.Param):
                key, sub = jax.random.split(key)
                noise = 0.1 * jax.random.normal(sub, v.shape)
                v[...] = v[...] + noise
                w = _at(target, p)
                w[...] = w[...] + noise


@pytest.mark.parametrize("build", [_cnn, _vit], ids=["cnn", "tiny_vit"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_extreme_policies_reproduce_the_pretrained_and_the_finetuned_network(build, mode):
    base = build()
    routed = inject_spottune(base)
    frozen, tuned = _forced(routed, 0), _forced(routed, 1)
    for m in (frozen, tuned):
        m.train() if mode == "train" else m.eval()
        m.model.set_attributes(use_running_average=True, raise_if_not_found=False)  # as the trainer freezes BN
    base.eval()
    # the pre-trained network, whatever the tuned copies hold
    _perturb_tuned(frozen, build())
    np.testing.assert_allclose(np.asarray(_run(frozen, X)), np.asarray(_run(base, X)), atol=1e-6)
    # the tuned copies: equal to the base network with the same change in its blocks
    changed = build()
    _perturb_tuned(tuned, changed)
    changed.eval()
    np.testing.assert_allclose(np.asarray(_run(tuned, X)), np.asarray(_run(changed, X)), atol=1e-6)


def test_efficientnet_lite_blocks_are_routed():
    base = EfficientNetLite(LiteConfig(0.25, 0.3, 32), num_outputs=4, rngs=nnx.Rngs(0))  # the layout, small
    routed = inject_spottune(base)
    assert routed.num_blocks == sum(len(s) for s in base.stages) == 8
    x = X[:2, :, :, :] * 0.5
    base.eval()
    np.testing.assert_allclose(np.asarray(_run(_forced(routed, 0), x)), np.asarray(_run(base, x)), atol=1e-5)


def test_only_the_network_and_policy_train_and_the_frozen_copies_stay_bitwise():
    base = _cnn()
    routed = inject_spottune(base)
    frozen_before = nnx.state(routed, nnx.BatchStat)
    policy_before = nnx.state(routed.policy, nnx.Param)
    trained, _ = finetune(routed, (X, Y), strategy="full", epochs=2, batch_size=8, freeze_batch_norm=False,
                          progress=False)  # fmt: skip
    frozen_after = nnx.state(trained, FrozenParam)
    for a, b in zip(jax.tree.leaves(nnx.state(routed, FrozenParam)), jax.tree.leaves(frozen_after), strict=True):
        assert jnp.array_equal(a, b)
    # the frozen copies' BatchNorm statistics too (BN of the tuned copies adapted: freeze_batch_norm=False)
    stats_before = {k: v for k, v in nnx.to_flat_state(frozen_before) if "frozen" in map(str, k)}
    stats_after = {k: v for k, v in nnx.to_flat_state(nnx.state(trained, nnx.BatchStat)) if "frozen" in map(str, k)}
    assert stats_before.keys() == stats_after.keys() and stats_before
    for k in stats_after:
        assert jnp.array_equal(stats_before[k][...], stats_after[k][...])
    moved = [
        not jnp.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(policy_before), jax.tree.leaves(nnx.state(trained.policy, nnx.Param)), strict=True
        )
    ]
    assert all(moved)
    # accounting: the trained parameters are the base network's plus the policy's; the frozen copies are the blocks'
    policy = count_params(routed.policy)
    assert count_params(routed, "full") == count_params(base) + policy
    assert count_params(routed, FrozenParam) == sum(count_params(b) for b in base.blocks)


def test_decisions_follow_the_policy_and_eval_is_deterministic():
    routed = inject_spottune(_cnn(), seed=3)
    routed.eval()
    a, b = routed(X), routed(X)
    assert jnp.array_equal(a, b)
    d = np.asarray(routed.decisions(X))
    assert d.shape == (16, 3) and set(np.unique(d)) <= {0, 1}
    jitted = nnx.jit(lambda m, x: m(x))(routed, jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(a), atol=1e-6)


def test_global_variant_merges_exactly_and_its_budget_is_the_closed_form():
    base = _cnn()
    routed = inject_spottune(base, policy="global")
    routed.policy.logits[...] = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    p = 1 / (1 + np.exp([1.0, -2.0, 3.0]))  # softmax(l)_1 = sigmoid(l_1 - l_0)
    np.testing.assert_allclose(float(spottune_budget_penalty(routed, 1)), (p.sum() - 1) ** 2, rtol=1e-6)
    _perturb_tuned(routed, _cnn())
    routed.eval()
    merged = merge_spottune(routed)
    assert jax.tree.map(jnp.shape, nnx.state(merged, nnx.Param)) == jax.tree.map(jnp.shape, nnx.state(base, nnx.Param))
    np.testing.assert_allclose(np.asarray(_run(merged, X)), np.asarray(_run(routed, X)), atol=1e-6)
    # block 1 is the tuned copy (changed), blocks 0 and 2 the pre-trained ones
    assert jnp.array_equal(merged.blocks[0].conv1.kernel[...], base.blocks[0].conv1.kernel[...])
    assert not jnp.array_equal(merged.blocks[1].conv1.kernel[...], base.blocks[1].conv1.kernel[...])


def test_bad_use_is_refused():
    routed = inject_spottune(_cnn())
    with pytest.raises(ValueError, match="per-sample policy"):
        merge_spottune(routed)
    with pytest.raises(ValueError, match="policy='global'"):
        spottune_budget_penalty(routed, 1)
    with pytest.raises(ValueError, match=r"k must lie in \[0, 3\]"):
        spottune_budget_penalty(inject_spottune(_cnn(), policy="global"), 4)
    with pytest.raises(RuntimeError, match="routed forward pass"):
        routed.model(X)
    with pytest.raises(ValueError, match="already routed"):
        inject_spottune(routed.model)
    with pytest.raises(ValueError, match="selects no block"):
        inject_spottune(_cnn(), where="nothing.*")
    with pytest.raises(ValueError, match=r"\(n, 3, 2\) logits"):
        inject_spottune(_cnn(), policy=GlobalPolicy(2))(X)
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax_st(jnp.zeros((1, 2)), None, 0.0)
