"""LoRA: injection sites, the exact start at the base model, and the merge W' = W + A B against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import finetune, inject_lora, lora_sites, merge_lora
from jaxtransfer.models import MLP

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 6)).astype(np.float32)
Y = (np.arange(64) % 3).astype(np.int32)


def test_merge_folds_the_low_rank_update_into_the_kernel():
    model = MLP(6, (8, 8), 3, rngs=nnx.Rngs(0))
    adapted = inject_lora(model, rank=2, seed=1)
    assert lora_sites(adapted) == ["layers.0", "layers.1"]  # every Linear but the head
    trained, _ = finetune(adapted, (X, Y), strategy="lora", epochs=3, batch_size=16, progress=False)
    merged = merge_lora(trained)
    assert lora_sites(merged) == [] and lora_sites(trained) == ["layers.0", "layers.1"]  # input unchanged
    for i in range(2):  # W' = W + A B, by hand in float64
        site = trained.layers[i]
        expected = np.asarray(site.base_module.kernel[...], np.float64) + np.asarray(
            site.lora_a[...], np.float64
        ) @ np.asarray(site.lora_b[...], np.float64)
        np.testing.assert_allclose(np.asarray(merged.layers[i].kernel[...]), expected, rtol=1e-6, atol=1e-7)
        assert not np.allclose(expected, np.asarray(model.layers[i].kernel[...]))  # B trained: W moved
    np.testing.assert_allclose(np.asarray(merged(X)), np.asarray(trained(X)), atol=1e-5)


def test_where_globs_and_predicates_select_sites():
    model = MLP(6, (8, 8), 3, rngs=nnx.Rngs(0))
    assert lora_sites(inject_lora(model, where="layers.1")) == ["layers.1"]
    assert lora_sites(inject_lora(model, where=lambda path, m: isinstance(m, nnx.Linear) and path[-1] == 0)) == [
        "layers.0"
    ]
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(inject_lora(model))
    with pytest.raises(ValueError, match="no LoRA to merge"):
        merge_lora(model)
    # the head keeps its plain Linear, and LoRA starts exactly at the base model (B = 0)
    adapted = inject_lora(model, rank=3)
    assert isinstance(adapted.head, nnx.Linear)
    assert jnp.array_equal(jax.jit(lambda m, x: m(x))(adapted, X), jax.jit(lambda m, x: m(x))(model, X))
