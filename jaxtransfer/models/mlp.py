"""A multi-layer perceptron with a replaceable head."""

from __future__ import annotations

import itertools

import jax
from flax import nnx

__all__ = ["MLP"]


class MLP(nnx.Module):
    """x (..., in_features) -> hidden layers (Linear, GELU) -> head (Linear).

    ``features(x)`` is the penultimate representation (the last hidden layer's activations); ``head`` maps it to
    ``num_outputs`` logits or regression outputs and can be replaced (``model.head = nnx.Linear(...)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = MLP(4, (16, 8), 3, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 4))).shape, model.features(jnp.ones((2, 4))).shape
        ((2, 3), (2, 8))
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_outputs: int, *, rngs: nnx.Rngs):
        sizes = (in_features, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], num_outputs, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            x = jax.nn.gelu(layer(x))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
