"""The prompt-token hook of the token models (Visual Prompt Tuning, Jia et al., ECCV 2022).

VPT prepends p learnable tokens to the sequence a transformer's blocks see, right after the first (class) token:
[x_cls, P, x_1 .. x_L]. *Shallow* VPT inserts one set before the first block and keeps it (transformed by the
blocks) to the end; *deep* VPT inserts a fresh set P_i before every block i, dropping the previous block's prompt
outputs. The prompts are removed before the model's read-out (class token, mean pooling), so the read-out is
unchanged in form.

A model supports VPT when it exposes this hook: an attribute ``prompts`` (``None`` by default) and a property
``prompt_shape`` = (number of blocks, token width); its forward calls, when ``prompts`` is set,

    h = prompts.insert(h, i)         before block i (i = 0, 1, ...),
    mask = prompts.extend(mask, v)   for any per-token array the blocks use (attention masks: v = "attend"),
    h = prompts.remove(h)            before the read-out.

``TinyViT`` and ``MiniLM`` do; ``jaxtransfer.finetune.inject_vpt`` sets ``prompts``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["PromptParam", "Prompts"]


class PromptParam(nnx.Param):
    """The Variable type of VPT's prompt tokens (one filter selects what VPT trains).

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_vpt
        >>> from jaxtransfer.models import TinyViT
        >>> model = inject_vpt(TinyViT(8, 1, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)), num_tokens=5)
        >>> [v.shape for v in jax.tree.leaves(nnx.state(model, PromptParam))]  # one (shallow) set of 5 tokens, width 16
        [(1, 5, 16)]
    """


class Prompts(nnx.Module):
    """``num_tokens`` prompt tokens of width ``dim``: one set (shallow) or one per block (deep, ``blocks`` sets).

    Initialisation: uniform in +-sqrt(6 / (num_tokens + dim)) (Xavier uniform over a (p, d) set).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> p = Prompts(2, 4, blocks=3, deep=True, rngs=nnx.Rngs(0))
        >>> h = jnp.zeros((5, 7, 4))  # 5 sequences: a class token and 6 more
        >>> p.tokens.shape, p.insert(h, 0).shape, p.remove(p.insert(p.insert(h, 0), 1)).shape
        ((3, 2, 4), (5, 9, 4), (5, 7, 4))
    """

    def __init__(self, num_tokens: int, dim: int, *, blocks: int = 1, deep: bool = False, rngs: nnx.Rngs):
        if isinstance(num_tokens, bool) or not (isinstance(num_tokens, int) and num_tokens >= 1):
            raise ValueError(f"num_tokens must be a positive integer; got {num_tokens!r}.")
        sets = blocks if deep else 1
        bound = math.sqrt(6.0 / (num_tokens + dim))
        self.num_tokens = num_tokens
        self.deep = bool(deep)
        self.tokens = PromptParam(
            jax.random.uniform(rngs.params(), (sets, num_tokens, dim), minval=-bound, maxval=bound)
        )

    def insert(self, h: jax.Array, block: int) -> jax.Array:
        """The sequence ``h`` (n, L, d) for block ``block``: prompts inserted after the first token (block 0),
        replaced by block ``block``'s own set (deep), or kept as they are (shallow, block > 0)."""
        if block > 0 and not self.deep:
            return h
        if block >= self.tokens.shape[0]:
            raise ValueError(f"block {block} but the prompts have {self.tokens.shape[0]} sets.")
        p = jnp.broadcast_to(self.tokens[...][block].astype(h.dtype), (h.shape[0], self.num_tokens, h.shape[-1]))
        rest = h[:, 1:] if block == 0 else h[:, 1 + self.num_tokens :]
        return jnp.concatenate([h[:, :1], p, rest], axis=1)

    def remove(self, h: jax.Array) -> jax.Array:
        """``h`` (n, 1 + p + L, d) without the prompt positions: (n, 1 + L, d)."""
        return jnp.concatenate([h[:, :1], h[:, 1 + self.num_tokens :]], axis=1)

    def extend(self, x: jax.Array, value, axis: int = -1) -> jax.Array:
        """A per-token array ``x`` (e.g. an attention mask) with ``value`` at the prompt positions along ``axis``."""
        axis = axis % x.ndim
        shape = list(x.shape)
        shape[axis] = self.num_tokens
        first, rest = jnp.split(x, [1], axis=axis)
        return jnp.concatenate([first, jnp.full(shape, value, x.dtype), rest], axis=axis)
