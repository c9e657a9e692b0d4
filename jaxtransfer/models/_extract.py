"""Batched, jit-compiled feature extraction from any NNX model."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer._progress import progress_bar

__all__ = ["extract_features"]


def _features(model, batch):
    return model.features(batch)


def _apply(graphdef, fn, state, batch):
    return fn(nnx.merge(graphdef, state), batch)


# One compiled function per (model structure, fn, batch shape), cached across calls: pass the same ``fn`` object
# (a module-level function, not a new lambda) to reuse it.
_apply_jit = jax.jit(_apply, static_argnums=(0, 1))


def extract_features(
    model: nnx.Module,
    x,
    *,
    fn: Callable[[nnx.Module, jax.Array], object] = _features,
    batch_size: int = 64,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    jit: bool = True,
    progress: bool = True,
):
    """Applies ``fn(model, batch)`` to ``x`` in batches, in eval mode, and returns the outputs as numpy arrays.

    One function is compiled for every batch: the last, partial batch is padded (with copies of its first row) and
    the padding dropped from the output. ``model`` is not changed (a copy is put in eval mode, so BatchNorm uses its
    running statistics and nothing is updated).

    Args:
        model: any NNX model.
        x: (n, ...) inputs (images, token ids, ...), a numpy array or anything indexable by a slice and with ``len``.
        fn: what to compute on a batch; the default ``model.features(batch)``. Return an array (b, ...) or a pytree
            of them, e.g. ``lambda m, b: m.layer_features(b)`` for every layer of a backbone, or
            ``lambda m, b: {"features": m.features(b), "logits": m(b)}`` for the features and the source head
            at once (what LEEP / NCE need next to LogME).
        batch_size: samples per batch.
        transform: applied to each numpy batch before the model (e.g. ``lambda b: efficientnet_preprocess(b, 224)``),
            so that a large preprocessed copy of ``x`` never has to exist.
        jit: compile ``fn`` (``False`` runs it eagerly, op by op: slower, for debugging and for benchmarks).
        progress: tqdm progress bar.

    Returns:
        The outputs of ``fn`` concatenated over the batches, as numpy arrays with leading axis n (same pytree).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> x = np.ones((10, 4), np.float32)
        >>> extract_features(model, x, batch_size=4, progress=False).shape  # batches of 4, 4, 2 (padded)
        (10, 8)
        >>> out = extract_features(model, x, fn=lambda m, b: {"features": m.features(b), "logits": m(b)},
        ...                        progress=False)
        >>> out["logits"].shape
        (10, 3)
    """
    n = len(x)
    if n == 0:
        raise ValueError("x is empty.")
    if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    model = nnx.clone(model)
    model.eval()
    graphdef, state = nnx.split(model)

    run = functools.partial(_apply_jit if jit else _apply, graphdef, fn)
    batch_size = min(batch_size, n)
    chunks = []
    starts = progress_bar(range(0, n, batch_size), enabled=progress, desc="features", unit="batch")
    for start in starts:
        batch = np.asarray(x[start : start + batch_size])
        size = len(batch)
        if transform is not None:
            batch = np.asarray(transform(batch))
            if batch.ndim == 0 or len(batch) != size:
                raise ValueError(
                    f"transform must keep one row per sample: a batch of {size} came back with "
                    f"{len(batch) if batch.ndim else 'no'} rows (samples {start}..{start + size - 1})."
                )
        if size < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - size, axis=0)])
        out = run(state, jnp.asarray(batch))
        for path, a in jax.tree_util.tree_leaves_with_path(out):
            if np.ndim(a) == 0 or np.shape(a)[0] != batch_size:
                raise ValueError(
                    f"fn must return arrays with one row per sample; output {jax.tree_util.keystr(path) or ''} has "
                    f"shape {np.shape(a)} for a batch of {batch_size}."
                )
        chunks.append(jax.tree.map(lambda a, size=size: np.asarray(a[:size]), out))
    result = jax.tree.map(lambda *parts: np.concatenate(parts), *chunks)
    bad = [jax.tree_util.keystr(p) for p, a in jax.tree_util.tree_leaves_with_path(result) if not np.isfinite(a).all()]
    if bad:
        raise FloatingPointError(f"non-finite features in {bad or 'the output'}: check the inputs and the model.")
    return result
