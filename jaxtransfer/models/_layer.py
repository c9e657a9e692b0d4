"""One layer of a backbone as a model of its own: the candidate "this backbone, cut at that layer"."""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["LayerModel"]


class LayerModel(nnx.Module):
    """``features(x) = backbone.layer_features(x)[layer]``, with its own ``head`` (set one to fine-tune).

    Under ``jit`` the layers after ``layer`` are dead code and are not computed; their parameters stay in the model
    (so a full fine-tune leaves them untouched: they get no gradient).

    Args:
        backbone: any model with ``layer_features(x) -> {name: (n, d)}`` and ``layer_names``.
        layer: one of ``backbone.layer_names``.
        head: a module on the layer's features, or ``None`` (then ``model(x)`` is ``features(x)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import load
        >>> cut = LayerModel(load("resnet50-1by2-nsfw"), "stage3")
        >>> nnx.eval_shape(lambda m, x: m.features(x), cut, jnp.ones((2, 64, 64, 3))).shape
        (2, 512)
    """

    def __init__(self, backbone: nnx.Module, layer: str, *, head: nnx.Module | None = None):
        names = tuple(getattr(backbone, "layer_names", ()))
        if layer not in names:
            raise ValueError(f"{type(backbone).__name__} has no layer {layer!r}; its layers: {list(names)}.")
        self.backbone = backbone
        self.layer = layer
        self.head = nnx.data(head)

    def features(self, x: jax.Array) -> jax.Array:
        return self.backbone.layer_features(x)[self.layer]

    def __call__(self, x: jax.Array) -> jax.Array:
        f = self.features(x)
        return f if self.head is None else self.head(f)
