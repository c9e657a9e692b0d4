import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import count_params, finetune, inject_lora, inject_ssf, trainable_filter
from jaxtransfer.models import TinyViT

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
Y = rng.integers(0, 3, 64).astype(np.int32)


def _vit():
    return TinyViT(8, 1, 2, 16, 1, 2, 3, rngs=nnx.Rngs(0))


def _prepared(strategy):
    model = _vit()
    if strategy == "ssf":
        model = inject_ssf(model)
    if strategy == "lora":
        model = inject_lora(model, rank=2)
    return model


@pytest.mark.parametrize("strategy", ["linear_probe", "bitfit", "ssf", "lora", "full"])
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
    lora = inject_lora(vit, rank=2)
    fc = vit.blocks[0]
    expected_lora = 2 * (fc.fc1.kernel[...].shape[0] + fc.fc1.kernel[...].shape[1])
    expected_lora += 2 * (fc.fc2.kernel[...].shape[0] + fc.fc2.kernel[...].shape[1])
    assert count_params(lora, "lora") == head + expected_lora


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
    with pytest.raises(ValueError, match=r"selects no nnx\.Linear"):
        inject_lora(_vit(), rank=2, where="nothing")
