"""The input check of the pre-trained image backbones: (n, H, W, 3) arrays, with a hint for raw or grey images."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__: list[str] = []

_HINT = "raw or grey images: jaxtransfer.models.preprocess_for(model)(images) resizes and normalises them"


def rgb_images(x, *, multiple_of: int = 1) -> jax.Array:
    """``x`` as an array, checked to be (n, H, W, 3) with H and W multiples of ``multiple_of``.

    Raises:
        ValueError: another shape; the message points to ``preprocess_for``.
    """
    x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % multiple_of or x.shape[2] % multiple_of:
        sizes = "" if multiple_of == 1 else f" with H and W multiples of {multiple_of}"
        raise ValueError(f"x must be (n, H, W, 3) images{sizes}; got shape {x.shape} ({_HINT}).")
    return x
