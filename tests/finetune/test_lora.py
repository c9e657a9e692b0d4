"""LoRA on every op kind: against HuggingFace peft (torch) for Linear and Conv2d, W' = W + s A B against numpy in
float64, the exact start at the base model, merge / unmerge on the bundled architectures, dropout, errors."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import LoRAAdapted, count_params, finetune, inject_lora, lora_sites, merge_lora, unmerge_lora
from jaxtransfer.models import CNN, MLP, EfficientNetLite, TinyViT
from tests.finetune.tiny import TOKENS, tiny_minilm

HAS_PEFT = all(importlib.util.find_spec(m) for m in ("torch", "peft"))
rng = np.random.default_rng(0)


class Mixed(nnx.Module):
    """A 3 x 3 strided conv, a 1 x 1 conv, multi-head attention over the grid and an Einsum: every op kind."""

    def __init__(self, *, rngs):
        self.conv3 = nnx.Conv(3, 8, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
        self.conv1 = nnx.Conv(8, 8, (1, 1), rngs=rngs)
        self.attn = nnx.MultiHeadAttention(2, 8, decode=False, deterministic=True, rngs=rngs)
        self.mix = nnx.Einsum("nd,dhk->nhk", (8, 2, 3), (2, 3), rngs=rngs)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.gelu(self.conv1(self.conv3(x)))
        h = h.reshape(h.shape[0], -1, h.shape[-1])
        h = self.attn(h).mean(axis=1)
        return self.head(self.mix(h).reshape(h.shape[0], -1))


def _randomise(model, seed=1, std=0.3):
    """Puts random values into every LoRA B (as if trained), in place."""
    key = jax.random.key(seed)
    for _, site in nnx.iter_modules(model):
        if isinstance(site, LoRAAdapted):
            key, sub = jax.random.split(key)
            site.lora_b[...] = std * jax.random.normal(sub, site.lora_b.shape)
    return model


def _np(x):
    return np.asarray(x, np.float64)


@pytest.mark.skipif(not HAS_PEFT, reason="needs torch and peft (the reference)")
@pytest.mark.parametrize("rslora", [False, True])
def test_linear_and_conv_match_peft_before_and_after_merge(rslora):
    import torch
    from peft import LoraConfig, get_peft_model

    class Torch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 5)
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x, y):
            return self.lin(x), self.conv(y)

    torch.manual_seed(0)
    ref = get_peft_model(Torch(), LoraConfig(r=2, lora_alpha=6, target_modules=["lin", "conv"], use_rslora=rslora))
    with torch.no_grad():  # B is zero in peft too; give it values, as training would
        for name, p in ref.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p))
    inner = ref.base_model.model
    t = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    pre = "base_model.model."

    lin = nnx.Linear(6, 5, rngs=nnx.Rngs(0))
    conv = nnx.Conv(3, 4, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))
    lin.kernel[...], lin.bias[...] = t[pre + "lin.base_layer.weight"].T, t[pre + "lin.base_layer.bias"]
    conv.kernel[...] = t[pre + "conv.base_layer.weight"].transpose(2, 3, 1, 0)
    conv.bias[...] = t[pre + "conv.base_layer.bias"]
    ours_lin = LoRAAdapted(lin, 2, alpha=6.0, rslora=rslora, rngs=nnx.Rngs(0))
    ours_conv = LoRAAdapted(conv, 2, alpha=6.0, rslora=rslora, rngs=nnx.Rngs(0))
    ours_lin.lora_a[...] = t[pre + "lin.lora_A.default.weight"].T  # (r, in) -> (in, r)
    ours_lin.lora_b[...] = t[pre + "lin.lora_B.default.weight"].T  # (out, r) -> (r, out)
    ours_conv.lora_a[...] = t[pre + "conv.lora_A.default.weight"].transpose(2, 3, 1, 0)  # (r, in, k, k)
    ours_conv.lora_b[...] = t[pre + "conv.lora_B.default.weight"][:, :, 0, 0].T  # (out, r, 1, 1) -> (r, out)
    assert ours_lin.scale == pytest.approx(inner.lin.scaling["default"])

    x = rng.normal(size=(4, 6)).astype(np.float32)
    img = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)  # NCHW; 9 px: stride 2 with padding 1 -> 5 px
    with torch.no_grad():
        want_lin, want_conv = (o.numpy() for o in ref(torch.from_numpy(x), torch.from_numpy(img)))
    got_conv = np.asarray(ours_conv(img.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(np.asarray(ours_lin(x)), want_lin, atol=2e-5)
    np.testing.assert_allclose(got_conv, want_conv, atol=2e-5)

    merged_ref = ref.merge_and_unload()
    m = {k: v.detach().numpy() for k, v in merged_ref.state_dict().items()}
    merged_lin, merged_conv = merge_lora(ours_lin), merge_lora(ours_conv)
    assert isinstance(merged_lin, nnx.Linear) and isinstance(merged_conv, nnx.Conv)
    np.testing.assert_allclose(np.asarray(merged_lin.kernel[...]), m["lin.weight"].T, atol=1e-5)
    np.testing.assert_allclose(np.asarray(merged_conv.kernel[...]), m["conv.weight"].transpose(2, 3, 1, 0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(merged_lin(x)), want_lin, atol=2e-5)
    got_merged = np.asarray(merged_conv(img.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got_merged, want_conv, atol=2e-5)


def test_merged_kernels_are_w_plus_scaled_ab_in_float64():
    model = _randomise(inject_lora(Mixed(rngs=nnx.Rngs(0)), rank=2, alpha=3.0))
    want = ["attn.key", "attn.out", "attn.query", "attn.value", "conv1", "conv3", "mix"]
    assert sorted(lora_sites(model)) == want  # every op kind; the head is left out
    merged = merge_lora(model)
    s = 3.0 / 2
    conv = model.conv3  # (3, 3, in, r) x (r, out)
    want = _np(conv.base.kernel[...]) + s * np.einsum("hwir,ro->hwio", _np(conv.lora_a[...]), _np(conv.lora_b[...]))
    np.testing.assert_allclose(_np(merged.conv3.kernel[...]), want, rtol=1e-6, atol=1e-6)
    q = model.attn.query  # (dim, r) x (r, heads, head_dim)
    want = _np(q.base.kernel[...]) + s * np.einsum("dr,rhk->dhk", _np(q.lora_a[...]), _np(q.lora_b[...]))
    np.testing.assert_allclose(_np(merged.attn.query.kernel[...]), want, rtol=1e-6, atol=1e-6)
    o = model.attn.out  # (heads, head_dim, r) x (r, dim)
    want = _np(o.base.kernel[...]) + s * np.einsum("hkr,rd->hkd", _np(o.lora_a[...]), _np(o.lora_b[...]))
    np.testing.assert_allclose(_np(merged.attn.out.kernel[...]), want, rtol=1e-6, atol=1e-6)
    e = model.mix  # "nd,dhk": d is the input axis, (h, k) the outputs
    want = _np(e.base.kernel[...]) + s * np.einsum("dr,rhk->dhk", _np(e.lora_a[...]), _np(e.lora_b[...]))
    np.testing.assert_allclose(_np(merged.mix.kernel[...]), want, rtol=1e-6, atol=1e-6)


def _small_lite():
    from jaxtransfer.models import LiteConfig

    return EfficientNetLite(LiteConfig(0.25, 0.25, 32), num_outputs=3, rngs=nnx.Rngs(0))


MODELS = {
    "mlp": (lambda: MLP(6, (8, 8), 3, rngs=nnx.Rngs(0)), lambda: rng.normal(size=(4, 6)).astype(np.float32)),
    "cnn_layernorm": (lambda: CNN(3, 8, 2, 3, norm="layer", rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 8, 8, 3))),
    "cnn_batchnorm": (lambda: CNN(3, 8, 2, 3, norm="batch", rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 8, 8, 3))),
    "tiny_vit": (lambda: TinyViT(8, 3, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 8, 8, 3))),
    "minilm": (tiny_minilm, lambda: TOKENS),
    "efficientnet_lite": (_small_lite, lambda: rng.normal(size=(2, 32, 32, 3))),
    "mixed": (lambda: Mixed(rngs=nnx.Rngs(0)), lambda: rng.normal(size=(2, 9, 9, 3))),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_start_is_the_base_model_and_merge_restores_the_base_graph(name):
    build, data = MODELS[name]
    base, x = build(), jnp.asarray(data())
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    base.eval()
    lora = inject_lora(base, rank=2, alpha=4.0)
    call = jax.jit(lambda m, x: m(x))
    if name == "efficientnet_lite":  # op by op, its ~200 first-seen conv shapes cost 12 s of eager compilation:
        # compiled here (XLA may fuse the two graphs differently, 1e-7 apart); the others are checked bitwise
        np.testing.assert_allclose(np.asarray(call(lora, x)), np.asarray(call(base, x)), rtol=1e-6, atol=1e-6)
    else:
        assert jnp.array_equal(lora(x), base(x))  # B = 0: bitwise the base model (op by op: under jit, XLA may
        # fuse the two graphs differently, 1e-7 apart)
    trained = _randomise(lora, std=0.1)
    merged = merge_lora(trained)
    assert nnx.graphdef(merged) == nnx.graphdef(base)  # the base graph, so the base inference cost
    assert count_params(merged) == count_params(base)
    want = np.asarray(call(trained, x))
    assert not np.allclose(want, np.asarray(call(base, x)), atol=1e-4)  # the update matters
    np.testing.assert_allclose(np.asarray(call(merged, x)), want, atol=1e-5, rtol=1e-5)
    kept = merge_lora(trained, unload=False)  # merged, adapters kept idle; unmerge subtracts them again
    np.testing.assert_allclose(np.asarray(call(kept, x)), want, atol=1e-5, rtol=1e-5)
    back = unmerge_lora(kept)
    assert nnx.graphdef(back) == nnx.graphdef(trained)
    for a, b in zip(jax.tree.leaves(nnx.state(back)), jax.tree.leaves(nnx.state(trained)), strict=True):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_trainable_counts_are_the_closed_forms():
    model = inject_lora(Mixed(rngs=nnx.Rngs(0)), rank=3)
    r = 3
    expected = (
        r * (3 * 3 * 3 + 8)  # 3 x 3 conv: r (k^2 in + out)
        + r * (8 + 8)  # 1 x 1 conv
        + 3 * r * (8 + 2 * 4)  # q, k, v: r (dim + heads head_dim)
        + r * (2 * 4 + 8)  # out
        + r * (8 + 2 * 3)  # einsum d -> (h, k)
    )
    assert count_params(model, nnx.LoRAParam) == expected


def test_dropout_acts_in_train_mode_only_and_trains():
    base = MLP(6, (8,), 3, rngs=nnx.Rngs(0))
    model = _randomise(inject_lora(base, rank=2, dropout=0.5))
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    plain = _randomise(inject_lora(base, rank=2))
    model.eval()
    assert jnp.array_equal(model(x), plain(x))  # eval: no dropout
    model.train()
    assert not jnp.allclose(model(x), plain(x))
    y = (np.arange(64) % 3).astype(np.int32)
    trained, history = finetune(model, (rng.normal(size=(64, 6)).astype(np.float32), y), strategy="lora", epochs=2,
                                batch_size=16, progress=False)  # fmt: skip
    assert not jnp.array_equal(trained.layers[0].lora_b[...], model.layers[0].lora_b[...])
    assert history[-1]["loss"] < history[0]["loss"]
    count = int(model.layers[0].dropout.rngs.count[...])
    assert int(trained.layers[0].dropout.rngs.count[...]) == count + 8  # a fresh mask at each of the 2 x 4 steps


def test_where_and_errors():
    model = MLP(6, (8, 8), 3, rngs=nnx.Rngs(0))
    assert lora_sites(inject_lora(model, where="layers.1")) == ["layers.1"]
    pick = inject_lora(model, where=lambda path, m: isinstance(m, nnx.Linear) and path[-1] == 0)
    assert lora_sites(pick) == ["layers.0"]
    assert isinstance(inject_lora(model).head, nnx.Linear)  # the head is never adapted by default
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(inject_lora(model))
    with pytest.raises(ValueError, match="no LoRA to merge"):
        merge_lora(model)
    with pytest.raises(ValueError, match="no merged LoRA"):
        unmerge_lora(inject_lora(model))
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(merge_lora(inject_lora(model), unload=False), unload=False)
    with pytest.raises(ValueError, match="unmerge_lora"):
        finetune(merge_lora(inject_lora(model), unload=False), (np.zeros((8, 6), np.float32), np.zeros(8, np.int32)),
                 strategy="lora", batch_size=4, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="grouped"):  # a depthwise conv has no low-rank kernel
        inject_lora(nnx.Sequential(nnx.Conv(4, 4, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0))), where="layers.0")
    with pytest.raises(ValueError, match="alpha must be"):
        inject_lora(model, alpha=-1.0)
    with pytest.raises(ValueError, match="dropout must be"):
        inject_lora(model, dropout=1.0)
    with pytest.raises(ValueError, match="selects no Linear"):
        inject_lora(model, where="nothing*")
    assert lora_sites(model) == []  # the input is never changed
