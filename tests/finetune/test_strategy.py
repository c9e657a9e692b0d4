"""Every registered strategy, read from the registry: prepare, check, train only its parameters, merge exactly.

Adding a strategy to the registry adds it to every parametrised test here with no other edit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    HEAD_PARAMS,
    STRATEGIES,
    count_params,
    finetune,
    inject_lora,
    inject_ssf,
    register_strategy,
    trainable_filter,
)
from jaxtransfer.models import TinyViT

NAMES = list(STRATEGIES)

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
Y = rng.integers(0, 3, 64).astype(np.int32)


def _vit():
    return TinyViT(8, 1, 2, 16, 1, 2, 3, rngs=nnx.Rngs(0))


def _prepared(strategy):
    prepare = STRATEGIES[strategy].prepare
    return _vit() if prepare is None else prepare(_vit())


@pytest.mark.parametrize("strategy", NAMES)
def test_training_changes_only_the_selected_parameters(strategy):
    model = _prepared(strategy)
    trained, _ = finetune(model, (X, Y), strategy=strategy, epochs=2, batch_size=16, progress=False)
    wrt = trainable_filter(strategy)
    _, chosen_before, rest_before = nnx.split(model, wrt, ...)
    _, chosen_after, rest_after = nnx.split(trained, wrt, ...)
    for a, b in zip(jax.tree.leaves(rest_before), jax.tree.leaves(rest_after), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            continue
        assert jnp.array_equal(a, b), "a parameter outside the strategy changed"
    moved = [
        not jnp.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(chosen_before), jax.tree.leaves(chosen_after), strict=False)
    ]
    assert any(moved), "nothing trained"
    head_before, head_after = (nnx.state(m, HEAD_PARAMS) for m in (model, trained))
    assert not jnp.array_equal(head_before["head"]["kernel"][...], head_after["head"]["kernel"][...])  # head trains


@pytest.mark.parametrize("strategy", NAMES)
def test_check_refuses_an_unprepared_model_and_merge_is_exact(strategy):
    spec = STRATEGIES[strategy]
    if spec.prepare is not None:  # a strategy that adds parameters refuses a model without them, before training
        with pytest.raises(ValueError, match="first"):
            finetune(_vit(), (X, Y), strategy=strategy, progress=False)
    if spec.merge is None:
        return
    trained, _ = finetune(_prepared(strategy), (X, Y), strategy=strategy, epochs=2, batch_size=16, progress=False)
    merged = spec.merge(trained)
    # the original architecture (same state paths and shapes as the plain model) and the trained model's outputs
    plain = jax.tree.map(jnp.shape, nnx.state(_vit(), nnx.Param))
    assert jax.tree.map(jnp.shape, nnx.state(merged, nnx.Param)) == plain
    np.testing.assert_allclose(np.asarray(merged(X)), np.asarray(trained(X)), atol=2e-5)  # float32 refolding


def test_a_new_strategy_is_one_registration():
    try:
        spec = register_strategy(
            "head_and_norms", nnx.Any(HEAD_PARAMS, nnx.All(nnx.Param, lambda p, _: "norm" in str(p)))
        )
        assert STRATEGIES["head_and_norms"] is spec
        trained, _ = finetune(_vit(), (X, Y), strategy="head_and_norms", epochs=1, batch_size=16, progress=False)
        assert count_params(trained, "head_and_norms") > count_params(trained, "linear_probe")
        with pytest.raises(ValueError, match="already registered"):
            register_strategy("head_and_norms", HEAD_PARAMS)
    finally:
        from jaxtransfer.finetune import _strategy

        _strategy._STRATEGIES.pop("head_and_norms", None)


def test_trainable_counts():
    vit = _vit()
    head = vit.head.kernel[...].size + vit.head.bias[...].size
    assert count_params(vit, "linear_probe") == head
    biases = sum(x.size for p, x in nnx.to_flat_state(nnx.state(vit, nnx.Param)) if p[-1] == "bias")
    assert count_params(vit, "bitfit") == biases + vit.head.kernel[...].size
    assert count_params(vit, "full") == count_params(vit)
    ssf = inject_ssf(vit)
    assert count_params(ssf, "ssf") - head == 2 * sum(
        int(np.prod(m.ssf.gamma[...].shape)) for _, m in nnx.iter_modules(ssf) if hasattr(m, "ssf")
    )
    lora = inject_lora(vit, rank=2)  # r (fan_in + fan_out) at every op outside the head
    patch = 2 * (2 * 2 * 1 + 16)  # the 2 x 2 patch conv: r (k^2 in + out)
    attention = 4 * 2 * (16 + 16)  # q, k, v, out: dim -> (heads, head_dim) and back
    mlp = 2 * (16 + 32) + 2 * (32 + 16)  # fc1, fc2
    assert count_params(lora, "lora") == head + patch + attention + mlp


def test_lora_starts_at_the_base_model():
    vit = _vit()
    lora = inject_lora(vit, rank=3)
    np.testing.assert_allclose(np.asarray(lora(X[:4])), np.asarray(vit(X[:4])), atol=1e-6)


def test_strategy_errors():
    with pytest.raises(ValueError, match="unknown strategy 'prefix'"):
        trainable_filter("prefix")
    with pytest.raises(ValueError, match="call inject_ssf"):
        finetune(_vit(), (X, Y), strategy="ssf", progress=False)
    with pytest.raises(ValueError, match="call inject_lora"):
        finetune(_vit(), (X, Y), strategy="lora", progress=False)
    with pytest.raises(ValueError, match="rank must be"):
        inject_lora(_vit(), rank=0)
    with pytest.raises(ValueError, match=r"selects no Linear, LinearGeneral, Conv or Einsum"):
        inject_lora(_vit(), rank=2, where="nothing")
