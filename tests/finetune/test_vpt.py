"""VPT: the prompted forward against the sequence built by hand, deep against shallow, masks and padding in
MiniLM, counts, the trainer, errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import count_params, finetune, inject_vpt
from jaxtransfer.models import CNN, PromptParam, TinyViT
from tests.finetune.tiny import TOKENS, tiny_minilm

rng = np.random.default_rng(0)


def _vit():
    return TinyViT(8, 3, 4, 16, 3, 2, 5, rngs=nnx.Rngs(0))


def _vit_by_hand(vit, tokens, x, deep):
    """TinyViT's forward written out with the prompts put into the sequence by hand."""
    p = vit.patch_embed(x)
    p = p.reshape(p.shape[0], -1, p.shape[-1])
    cls = jnp.broadcast_to(vit.cls_token[...], (p.shape[0], 1, p.shape[-1]))
    h = jnp.concatenate([cls, p], axis=1) + vit.pos_embed[...]
    n, k = h.shape[0], tokens.shape[1]
    for i, block in enumerate(vit.blocks):
        if i == 0 or deep:
            prompt = jnp.broadcast_to(tokens[i if deep else 0], (n, k, h.shape[-1]))
            rest = h[:, 1:] if i == 0 else h[:, 1 + k :]
            h = jnp.concatenate([h[:, :1], prompt, rest], axis=1)
        h = block(h)
    return vit.head(vit.norm(h[:, 0]))


@pytest.mark.parametrize("deep", [False, True])
def test_vit_prompts_sit_after_the_class_token(deep):
    vit = _vit()
    model = inject_vpt(vit, 4, deep=deep, seed=3)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    want = _vit_by_hand(vit, model.prompts.tokens[...], x, deep)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(want), atol=1e-6)
    assert not np.allclose(np.asarray(model(x)), np.asarray(vit(x)), atol=1e-4)  # the prompts are attended to
    assert vit.prompts is None  # the input is not changed


def test_deep_with_one_repeated_set_is_not_shallow():
    # deep VPT drops each block's prompt outputs and inserts fresh tokens; with every set equal to the shallow
    # set, block 0 agrees and the later blocks differ (shallow carries the transformed prompts on).
    vit = _vit()
    shallow, deep = inject_vpt(vit, 2), inject_vpt(vit, 2, deep=True)
    deep.prompts.tokens[...] = jnp.broadcast_to(shallow.prompts.tokens[...], deep.prompts.tokens.shape)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    assert not np.allclose(np.asarray(deep(x)), np.asarray(shallow(x)), atol=1e-5)
    one_block = TinyViT(8, 3, 4, 16, 1, 2, 5, rngs=nnx.Rngs(0))
    s1, d1 = inject_vpt(one_block, 2), inject_vpt(one_block, 2, deep=True)
    d1.prompts.tokens[...] = s1.prompts.tokens[...]
    np.testing.assert_allclose(np.asarray(d1(x)), np.asarray(s1(x)), atol=1e-6)


@pytest.mark.parametrize("deep", [False, True])
def test_minilm_prompts_attend_and_padding_still_does_not(deep):
    model = inject_vpt(tiny_minilm(depth=3), 3, deep=deep)
    tokens = TOKENS
    padded = np.pad(tokens, ((0, 0), (0, 4)))
    np.testing.assert_allclose(np.asarray(model(padded)), np.asarray(model(tokens)), atol=1e-6)
    states = model.hidden_states(tokens)
    assert [s.shape for s in states] == [(2, 6, 16)] * 4  # the prompts are left out of the returned states
    base = tiny_minilm(depth=3)
    assert not np.allclose(np.asarray(model(tokens)), np.asarray(base(tokens)), atol=1e-4)


def test_counts_are_the_closed_forms_and_vpt_trains_only_the_prompts_and_head():
    vit = _vit()
    assert count_params(inject_vpt(vit, 4), PromptParam) == 4 * 16  # p d
    assert count_params(inject_vpt(vit, 4, deep=True), PromptParam) == 3 * 4 * 16  # blocks p d
    model = inject_vpt(vit, 4, deep=True)
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    y = (np.arange(32) % 5).astype(np.int32)
    trained, _ = finetune(model, (x, y), strategy="vpt", epochs=2, batch_size=8, progress=False)
    assert not jnp.array_equal(trained.prompts.tokens[...], model.prompts.tokens[...])
    assert jnp.array_equal(trained.blocks[0].fc1.kernel[...], model.blocks[0].fc1.kernel[...])


def test_errors():
    with pytest.raises(ValueError, match="exposes no token sequence"):
        inject_vpt(CNN(3, 8, 1, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="already has VPT"):
        inject_vpt(inject_vpt(_vit()))
    with pytest.raises(ValueError, match="num_tokens must be"):
        inject_vpt(_vit(), 0)
