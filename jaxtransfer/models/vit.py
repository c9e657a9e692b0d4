"""A tiny Vision Transformer: patch embedding, pre-norm blocks (multi-head attention, GELU MLP), class token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["TinyViT"]


class _Block(nnx.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, deterministic=True, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, mlp_ratio * dim, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * dim, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class TinyViT(nnx.Module):
    """Images (n, H, W, C_in) -> non-overlapping ``patch`` x ``patch`` patches -> ``depth`` blocks -> class token.

    VPT prompt tokens (``prompts``, see ``jaxtransfer.models.Prompts``) go right after the class token.

    ``features(x)`` is the final LayerNorm of the class token (n, dim); ``head`` maps it to the outputs.

    Example (shapes only, with ``nnx.eval_shape``):
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: TinyViT(8, 3, 4, 16, 2, 2, 5, rngs=nnx.Rngs(0)))  # 2 x 2 patches of 4 px
        >>> nnx.eval_shape(lambda m, x: m.features(x), model, jnp.ones((2, 8, 8, 3))).shape
        (2, 16)
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        num_outputs: int,
        *,
        mlp_ratio: int = 2,
        rngs: nnx.Rngs,
    ):
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}.")
        tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nnx.Conv(
            in_channels, dim, (patch, patch), strides=(patch, patch), padding="VALID", rngs=rngs
        )
        self.cls_token = nnx.Param(jnp.zeros((1, 1, dim)))
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, tokens, dim)))
        self.blocks = nnx.List([_Block(dim, heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, num_outputs, rngs=rngs)
        self.prompts = nnx.data(None)  # the VPT hook (jaxtransfer.models.Prompts; set by inject_vpt)

    @property
    def prompt_shape(self) -> tuple[int, int]:
        """(blocks, token width): the shape VPT prompts need (see ``jaxtransfer.models.Prompts``)."""
        return len(self.blocks), self.pos_embed.shape[-1]

    def features(self, x: jax.Array) -> jax.Array:
        p = self.patch_embed(x)
        p = p.reshape(p.shape[0], -1, p.shape[-1])
        cls = jnp.broadcast_to(self.cls_token[...], (p.shape[0], 1, p.shape[-1]))
        h = jnp.concatenate([cls, p], axis=1) + self.pos_embed[...]
        for i, block in enumerate(self.blocks):
            if self.prompts is not None:
                h = self.prompts.insert(h, i)
            h = block(h)
        return self.norm(h[:, 0])  # the class token (prompts sit after it)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
