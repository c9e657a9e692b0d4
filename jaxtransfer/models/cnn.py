"""A small residual CNN: conv stem, residual blocks (conv, norm, GELU), global average pooling, head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["CNN"]


class _Block(nnx.Module):
    def __init__(self, channels: int, *, norm: str, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.norm1 = _norm(norm, channels, rngs)
        self.conv2 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.norm2 = _norm(norm, channels, rngs)

    def __call__(self, x):
        h = jax.nn.gelu(self.norm1(self.conv1(x)))
        return jax.nn.gelu(x + self.norm2(self.conv2(h)))


def _norm(kind: str, channels: int, rngs: nnx.Rngs):
    if kind == "layer":
        return nnx.LayerNorm(channels, rngs=rngs)
    if kind == "batch":
        return nnx.BatchNorm(channels, use_running_average=False, rngs=rngs)
    raise ValueError(f"norm must be 'layer' or 'batch'; got {kind!r}.")


class CNN(nnx.Module):
    """Images (n, H, W, C_in) -> conv stem -> ``depth`` residual blocks -> mean over H, W -> head.

    ``norm="layer"`` (default; no batch statistics) or ``"batch"`` (BatchNorm: call ``model.eval()`` for
    inference). ``features(x)`` is the pooled (n, channels) representation.

    Example (shapes only, with ``nnx.eval_shape``: nothing is computed):
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m, x: (m(x), m.features(x)), model, jnp.ones((2, 16, 16, 3)))[0].shape
        (2, 5)
    """

    def __init__(
        self, in_channels: int, channels: int, depth: int, num_outputs: int, *, norm: str = "layer", rngs: nnx.Rngs
    ):
        self.stem = nnx.Conv(in_channels, channels, (3, 3), rngs=rngs)
        self.stem_norm = _norm(norm, channels, rngs)
        self.blocks = nnx.List([_Block(channels, norm=norm, rngs=rngs) for _ in range(depth)])
        self.head = nnx.Linear(channels, num_outputs, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """The stem's and every block's output map ``{"stem": (n, H, W, channels), "block1": ...}``."""
        h = jax.nn.gelu(self.stem_norm(self.stem(x)))
        maps = {"stem": h}
        for i, block in enumerate(self.blocks):
            h = block(h)
            maps[f"block{i + 1}"] = h
        return maps

    def features(self, x: jax.Array) -> jax.Array:
        return jnp.mean(list(self.feature_maps(x).values())[-1], axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
