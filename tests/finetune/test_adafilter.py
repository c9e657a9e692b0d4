"""AdaFilter: the straight-through step against the sigmoid's derivative in float64, all-frozen and all-tuned gates
against the pre-trained and the fine-tuned networks, per-sample per-filter gates, what trains (bitwise), bad input."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.finetune import (
    AdaFilter,
    FrozenParam,
    GatedLayer,
    count_params,
    finetune,
    inject_adafilter,
    straight_through_step,
)
from jaxtransfer.models import CNN, EfficientNetLite, LiteConfig, TinyViT

rng = np.random.default_rng(0)
X = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
Y = (np.arange(8) % 5).astype(np.int32)


@nnx.jit
def _run(model, x):
    return model(x)


@settings(max_examples=30, deadline=None)
@given(logits=hnp.arrays(np.float64, (7,), elements=st.floats(-8, 8).filter(lambda v: abs(v) > 1e-3)),
       weights=hnp.arrays(np.float64, (7,), elements=st.floats(-2, 2)))  # fmt: skip
def test_straight_through_step_is_binary_forward_and_sigmoid_backward(logits, weights):
    z = jnp.asarray(logits, jnp.float32)
    out = np.asarray(straight_through_step(z))
    np.testing.assert_array_equal(out, (logits > 0).astype(np.float32))
    grad = jax.grad(lambda z: jnp.sum(straight_through_step(z) * weights))(z)
    s = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(np.asarray(grad), weights * s * (1 - s), atol=1e-6)


def _cnn():
    m = CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0))
    m.eval()
    return m


def _force(model: AdaFilter, value: float) -> AdaFilter:
    """Every gate of every layer open (fine-tuned filters, value > 0) or shut (pre-trained, value < 0)."""
    model = nnx.clone(model)
    for out in model.gate_net.outputs:
        out.kernel[...] = jnp.zeros_like(out.kernel[...])
        out.bias[...] = jnp.full_like(out.bias[...], value)
    return model


def test_closed_and_open_gates_are_the_pretrained_and_the_finetuned_network():
    base = _cnn()
    gated = inject_adafilter(base)
    changed = _cnn()  # the fine-tuned network: every block weight moved
    key = jax.random.key(3)
    for _, var in nnx.iter_graph(changed.blocks):
        if isinstance(var, nnx.Param):
            key, sub = jax.random.split(key)
            var[...] = var[...] + 0.2 * jax.random.normal(sub, var.shape)
    for i in range(2):
        for conv, norm in (("conv1", "norm1"), ("conv2", "norm2")):
            layer = getattr(gated.model.blocks[i], conv)
            assert isinstance(layer, GatedLayer)
            layer.tuned_conv = nnx.clone(getattr(changed.blocks[i], conv))
            layer.tuned_norm = nnx.clone(getattr(changed.blocks[i], norm))
    for mode in ("eval", "train"):
        shut, open_ = _force(gated, -1e4), _force(gated, 1e4)
        for m in (shut, open_):
            m.train() if mode == "train" else m.eval()
            m.model.set_attributes(use_running_average=True, raise_if_not_found=False)
        np.testing.assert_allclose(np.asarray(_run(shut, X)), np.asarray(_run(base, X)), atol=1e-5)
        np.testing.assert_allclose(np.asarray(_run(open_, X)), np.asarray(_run(changed, X)), atol=1e-5)


def test_efficientnet_lite_layers_are_gated_with_their_batchnorms():
    base = EfficientNetLite(LiteConfig(0.25, 0.3, 32), num_outputs=3, rngs=nnx.Rngs(0))  # the layout, small
    base.eval()
    gated = inject_adafilter(base)
    assert gated.num_layers == 2 + 7 * 3  # 8 blocks; the first has no expansion conv
    x = X[:2] * 0.5
    np.testing.assert_allclose(np.asarray(_run(_force(gated, -1e4), x)), np.asarray(_run(base, x)), atol=1e-5)


def test_gates_are_per_sample_and_per_filter():
    gated = inject_adafilter(_cnn(), seed=2)
    gated.eval()
    gates = nnx.jit(lambda m, x: m.gates(x))(gated, jnp.asarray(X))
    assert sorted(gates) == [0, 1, 2, 3]
    g = np.concatenate([np.asarray(v) for v in gates.values()], axis=1)  # (n, 32)
    assert g.shape == (8, 32) and set(np.unique(g)) == {0.0, 1.0}
    assert len({tuple(row) for row in g}) > 1  # samples differ
    assert len({tuple(col) for col in g.T}) > 1  # filters differ


def test_only_the_network_and_gate_train_and_frozen_filters_stay_bitwise():
    base = _cnn()
    gated = inject_adafilter(base)
    frozen = nnx.state(gated, FrozenParam)
    stats = {k: v[...] for k, v in nnx.to_flat_state(nnx.state(gated, nnx.BatchStat)) if "frozen_norm" in k}
    trained, _ = finetune(gated, (X, Y), strategy="full", epochs=2, batch_size=4, freeze_batch_norm=False,
                          progress=False)  # fmt: skip
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(nnx.state(trained, FrozenParam)), strict=True):
        assert jnp.array_equal(a, b)
    after = {k: v[...] for k, v in nnx.to_flat_state(nnx.state(trained, nnx.BatchStat)) if "frozen_norm" in k}
    assert stats.keys() == after.keys() and stats
    assert all(jnp.array_equal(stats[k], after[k]) for k in stats)
    assert not jnp.array_equal(trained.gate_net.cell.ii.kernel[...], gated.gate_net.cell.ii.kernel[...])
    # accounting: trainable = the base network + the gate network; frozen = the gated convs and norms' parameters
    assert count_params(gated, "full") == count_params(base) + count_params(gated.gate_net)
    pairs = sum(count_params(getattr(b, n)) for b in base.blocks for n in ("conv1", "norm1", "conv2", "norm2"))
    assert count_params(gated, FrozenParam) == pairs


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no conv \\+ normalisation pair"):
        inject_adafilter(TinyViT(16, 3, 4, 16, 2, 2, 5, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no conv \\+ normalisation pair"):
        inject_adafilter(CNN(3, 8, 2, 5, norm="layer", rngs=nnx.Rngs(0)))  # LayerNorm mixes the filters
    gated = inject_adafilter(_cnn())
    with pytest.raises(RuntimeError, match="only inside AdaFilter"):
        gated.model(X)
