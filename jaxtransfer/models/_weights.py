"""Putting named arrays (from a safetensors file) into an NNX model, with a full check of names and shapes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__: list[str] = []


def _key(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def assign_weights(model: nnx.Module, arrays: Mapping[str, np.ndarray], *, source: str) -> nnx.Module:
    """Returns ``model`` with every Param / BatchStat replaced by ``arrays[dotted path]``.

    ``model`` may be abstract (``nnx.eval_shape``), so that no random initialisation is paid for.

    Every variable of the model must be given, with its exact shape, and every array must be used: a checkpoint that
    does not describe this architecture raises instead of loading half of it.

    Raises:
        ValueError: naming the missing, unexpected or mis-shaped entries and ``source``.
    """
    graphdef, state = nnx.split(model)
    flat = nnx.to_flat_state(state)
    wanted = {_key(path) for path, var in flat if isinstance(var, nnx.Param | nnx.BatchStat)}
    missing = sorted(wanted - set(arrays))
    unexpected = sorted(set(arrays) - wanted)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
        )
    new = []
    for path, var in flat:
        key = _key(path)
        if key in arrays:
            value, like = np.asarray(arrays[key]), var.get_value()  # (get_value: the model may be abstract)
            if value.shape != like.shape:
                raise ValueError(f"{source}: {key} has shape {value.shape}, the model expects {like.shape}.")
            var = var.replace(jnp.asarray(value, like.dtype))
        new.append((path, var))
    return nnx.merge(graphdef, nnx.from_flat_state(new))


def sha256(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
