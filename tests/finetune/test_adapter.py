"""Bottleneck adapters (Houlsby sequential, AdaptFormer parallel) against float64 numpy; the exact start; counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxtransfer.finetune import Adapter, AdapterAdapted, AdapterParam, adapter_sites, count_params, inject_adapter
from jaxtransfer.models import CNN, BertConfig, MiniLM, TinyViT
from tests.finetune.tiny import TOKENS, tiny_minilm

rng = np.random.default_rng(0)


def _gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def _randomise(model, seed=1):
    key = jax.random.key(seed)
    for _, site in nnx.iter_modules(model):
        if isinstance(site, Adapter):
            key, a, b = jax.random.split(key, 3)
            site.up[...] = 0.3 * jax.random.normal(a, site.up.shape)
            site.up_bias[...] = 0.1 * jax.random.normal(b, site.up_bias.shape)
    return model


def _numpy_adapter(a, h):
    f = {k: np.asarray(getattr(a, k)[...], np.float64) for k in ("down", "down_bias", "up", "up_bias")}
    return _gelu(h @ f["down"] + f["down_bias"]) @ f["up"] + f["up_bias"]


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_adapter_matches_numpy_in_float64(mode):
    lin = nnx.Linear(6, 5, rngs=nnx.Rngs(0))
    d_in = 5 if mode == "sequential" else 6
    site = _randomise(AdapterAdapted(lin, Adapter(d_in, 3, out_dim=5, rngs=nnx.Rngs(2)), mode=mode, scale=0.5))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    h = x @ np.asarray(lin.kernel[...], np.float64) + np.asarray(lin.bias[...], np.float64)
    want = h + 0.5 * _numpy_adapter(site.adapter, h if mode == "sequential" else x)
    np.testing.assert_allclose(np.asarray(site(x)), want, rtol=1e-5, atol=1e-5)


def test_sequential_adapter_after_attention_matches_numpy():
    vit = _randomise(inject_adapter(TinyViT(8, 3, 4, 16, 1, 2, 3, rngs=nnx.Rngs(0)), bottleneck=4))
    site = vit.blocks[0].attn
    x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    h = np.asarray(site.base(x), np.float64)
    np.testing.assert_allclose(np.asarray(site(x)), h + _numpy_adapter(site.adapter, h), rtol=1e-5, atol=1e-5)


MODELS = {
    "tiny_vit": (lambda: TinyViT(8, 3, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 8, 8, 3)), {}),
    "minilm": (tiny_minilm, lambda: TOKENS, {}),
    "cnn_parallel": (
        lambda: CNN(3, 8, 2, 3, norm="layer", rngs=nnx.Rngs(0)),
        lambda: rng.normal(size=(2, 8, 8, 3)),
        {"where": "blocks.*.conv2", "mode": "parallel", "scale": 0.1},
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_start_is_the_base_model_and_the_adapter_acts(name):
    build, data, options = MODELS[name]
    base, x = build(), jnp.asarray(data())
    x = x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
    model = inject_adapter(base, bottleneck=4, **options)
    assert jnp.array_equal(model(x), base(x))  # W_up = 0, b_up = 0: bitwise the base model
    assert not np.allclose(np.asarray(_randomise(model)(x)), np.asarray(base(x)), atol=1e-4)


def test_default_sites_and_closed_form_counts():
    c = BertConfig(vocab_size=50, max_positions=16, dim=16, depth=2, heads=2, mlp_dim=32)
    model = inject_adapter(MiniLM(c, num_outputs=3, rngs=nnx.Rngs(0)), bottleneck=4)
    assert adapter_sites(model) == ["layers.0.attn_out", "layers.0.fc2", "layers.1.attn_out", "layers.1.fc2"]
    d, m = 16, 4
    assert count_params(model, AdapterParam) == 4 * (d * m + m + m * d + d)


def test_errors():
    vit = TinyViT(8, 3, 4, 16, 1, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has adapters"):
        inject_adapter(inject_adapter(vit, 4), 4)
    with pytest.raises(ValueError, match="bottleneck must be"):
        inject_adapter(vit, 0)
    with pytest.raises(ValueError, match="mode must be"):
        inject_adapter(vit, 4, mode="serial")
    with pytest.raises(ValueError, match="activation must be"):
        inject_adapter(vit, 4, activation="tanh")
    with pytest.raises(ValueError, match="parallel adapter at patch_embed"):  # a strided conv changes the grid
        inject_adapter(vit, 4, where="patch_embed", mode="parallel")
    with pytest.raises(ValueError, match="selects no op"):
        inject_adapter(vit, 4, where="nothing")
