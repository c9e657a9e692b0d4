"""IA3: output and input scaling against float64 numpy and against peft, the exact start, the exact merge."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import IA3Adapted, IA3Param, count_params, ia3_sites, inject_ia3, merge_ia3
from jaxtransfer.models import CNN, TinyViT
from tests.finetune.tiny import TOKENS, tiny_minilm

HAS_PEFT = all(importlib.util.find_spec(m) for m in ("torch", "peft"))
rng = np.random.default_rng(0)


def _randomise(model, seed=1):
    key = jax.random.key(seed)
    for _, site in nnx.iter_modules(model):
        if isinstance(site, IA3Adapted):
            key, sub = jax.random.split(key)
            site.scale[...] = jax.random.uniform(sub, site.scale.shape, minval=0.5, maxval=1.5)
    return model


def test_scaling_matches_numpy_in_float64():
    lin = nnx.Linear(5, 4, rngs=nnx.Rngs(0))
    x = rng.normal(size=(3, 5)).astype(np.float32)
    w, b = np.asarray(lin.kernel[...], np.float64), np.asarray(lin.bias[...], np.float64)
    out, inp = _randomise(IA3Adapted(lin, "output")), _randomise(IA3Adapted(lin, "input"), seed=2)
    lo, li = np.asarray(out.scale[...], np.float64), np.asarray(inp.scale[...], np.float64)
    np.testing.assert_allclose(np.asarray(out(x)), lo * (x @ w + b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(inp(x)), (li * x) @ w + b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_PEFT, reason="needs torch and peft (the reference)")
def test_matches_peft_ia3_on_keys_and_feedforward():
    import torch
    from peft import IA3Config, get_peft_model

    class Torch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.key, self.fc2 = torch.nn.Linear(6, 5), torch.nn.Linear(5, 3)

        def forward(self, x):
            return self.fc2(self.key(x))

    torch.manual_seed(0)
    ref = get_peft_model(Torch(), IA3Config(target_modules=["key", "fc2"], feedforward_modules=["fc2"]))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "ia3_l" in name:
                p.copy_(torch.rand_like(p) + 0.5)
    t = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    ours = inject_ia3(nnx.Sequential(nnx.Linear(6, 5, rngs=nnx.Rngs(0)), nnx.Linear(5, 3, rngs=nnx.Rngs(0))),
                      where="layers.0", feedforward="layers.1")  # fmt: skip
    pre = "base_model.model."
    for i, name in enumerate(("key", "fc2")):
        site = ours.layers[i]
        site.base.kernel[...] = t[f"{pre}{name}.base_layer.weight"].T
        site.base.bias[...] = t[f"{pre}{name}.base_layer.bias"]
        site.scale[...] = t[f"{pre}{name}.ia3_l.default"].reshape(-1)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(ours(x)), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(merge_ia3(ours)(x)), want, atol=1e-5)


MODELS = {
    "tiny_vit": (lambda: TinyViT(8, 3, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 8, 8, 3)), {}),
    "minilm": (tiny_minilm, lambda: TOKENS, {}),
    # a CNN has no keys or values: scale the convolutions' outputs (BatchNorm follows them) and inputs
    "cnn_batchnorm": (
        lambda: CNN(3, 8, 2, 3, norm="batch", rngs=nnx.Rngs(0)),
        lambda: rng.normal(size=(2, 8, 8, 3)),
        {"where": "blocks.*.conv1", "feedforward": "blocks.*.conv2"},
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_start_is_the_base_model_and_merge_is_exact(name):
    build, data, where = MODELS[name]
    base, x = build(), jnp.asarray(data())
    x = x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
    base.eval()
    model = inject_ia3(base, **where)
    assert jnp.array_equal(model(x), base(x))  # l = 1: bitwise the base model
    trained = _randomise(model)
    merged = merge_ia3(trained)
    assert nnx.graphdef(merged) == nnx.graphdef(base) and ia3_sites(merged) == {}
    want = np.asarray(trained(x))
    assert not np.allclose(want, np.asarray(base(x)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(merged(x)), want, atol=1e-5, rtol=1e-5)


def test_default_sites_and_closed_form_counts():
    vit = TinyViT(8, 3, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0))
    sites = ia3_sites(inject_ia3(vit))
    assert sites == {
        "blocks.0.attn.key": "output",
        "blocks.0.attn.value": "output",
        "blocks.0.fc2": "input",
        "blocks.1.attn.key": "output",
        "blocks.1.attn.value": "output",
        "blocks.1.fc2": "input",
    }
    assert count_params(inject_ia3(vit), IA3Param) == 2 * (16 + 16 + 32)  # d_k + d_v + d_ff per block


def test_errors():
    vit = TinyViT(8, 3, 4, 16, 1, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has IA3"):
        inject_ia3(inject_ia3(vit))
    with pytest.raises(ValueError, match="select no op"):
        inject_ia3(CNN(3, 8, 1, 3, rngs=nnx.Rngs(0)))  # no keys, values or fc2: say what to name
    with pytest.raises(ValueError, match="grouped"):
        inject_ia3(nnx.Sequential(nnx.Conv(4, 4, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0))),
                   where=[], feedforward="layers.0")  # fmt: skip
    with pytest.raises(ValueError, match="no IA3 to merge"):
        merge_ia3(vit)
