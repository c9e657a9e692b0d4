"""BatchNorm running statistics re-estimated for new weights (after averaging, interpolating or merging models).

The running statistics of a soup or of a point between two models belong to neither ingredient: averaging the
ingredients' statistics mis-normalises the averaged weights (as SWA's ``update_bn`` addresses). Here every
BatchNorm's statistics are re-estimated on ``batches`` of inputs: the model runs in training mode (each BatchNorm
normalises with the statistics of the batch, dropout off) and each layer accumulates the size-weighted moments of
its input, so that over batches b of sizes n_b

    mean = sum_b n_b m_b / N,        var = sum_b n_b (v_b + m_b^2) / N - mean^2,

the exact population mean and (biased, as Flax stores it) variance of the layer's input over all the batches (the
inputs of later layers depend on the batching only through the earlier layers' batch statistics, as in training).
The recomputation is a pure function of the parameters (:func:`batch_stats_fn`), so a loss along a path or over a
plane can recompute them at every point under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer._checks import check_positive_int

__all__ = ["batch_stats_fn", "has_batch_norm", "merged_model", "recompute_batch_stats"]


def _batch_norms(model: nnx.Module) -> list[nnx.BatchNorm]:
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def has_batch_norm(model: nnx.Module) -> bool:
    """Whether ``model`` holds an ``nnx.BatchNorm`` (whose statistics then follow the weights).

    Example:
        >>> from flax import nnx
        >>> has_batch_norm(nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0))))
        True
    """
    return bool(_batch_norms(model))


def _inputs(batch):
    return batch[0] if isinstance(batch, tuple | list) else batch


def _recomputer(model: nnx.Module, filter):
    """(moments, write): ``moments(params, x)`` gives each BatchNorm's [(mean, mean of squares)] of its input on the
    batch x (training mode), ``write(params, means, variances)`` the ``nnx.BatchStat`` state holding them."""
    m = nnx.clone(model)
    m.eval()
    norms = _batch_norms(m)
    if not norms:
        raise ValueError("the model has no nnx.BatchNorm: there are no running statistics to recompute.")
    for bn in norms:
        bn.use_running_average = False  # normalise with the batch statistics, and store them (momentum 0)
        bn.momentum = 0.0
    graphdef, _, stats_like, rest = nnx.split(m, filter, nnx.BatchStat, ...)

    def moments(params, x):
        module = nnx.merge(graphdef, params, stats_like, rest, copy=True)
        module(x)
        out = []
        for bn in _batch_norms(module):
            mean = bn.mean[...].astype(jnp.float32)
            out.append((mean, bn.var[...].astype(jnp.float32) + jnp.square(mean)))
        return out

    def write(params, means, variances):
        module = nnx.merge(graphdef, params, stats_like, rest, copy=True)
        for bn, mean, var in zip(_batch_norms(module), means, variances, strict=True):
            bn.mean[...] = jnp.asarray(mean).astype(bn.mean.dtype)
            bn.var[...] = jnp.asarray(var).astype(bn.var.dtype)
        return nnx.state(module, nnx.BatchStat)

    return moments, write


def batch_stats_fn(model: nnx.Module, filter=nnx.Param) -> Callable:
    """A pure ``fn(params, inputs) -> nnx.State`` of the BatchNorm statistics (``nnx.BatchStat``) that ``params``
    give on ``inputs`` (S, B, ...): S batches of B inputs (see the module docstring); jit- and vmap-able.

    ``params`` is the state ``filter`` selects (as :func:`jaxtransfer.finetune.apply_fn` returns it).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> fn = batch_stats_fn(model)
        >>> stats = fn(nnx.state(model, nnx.Param), jnp.ones((3, 4, 2)))  # 3 batches of 4 identical inputs
        >>> [float(v) for v in stats["layers"][1]["var"][...]]  # the variance of a constant is 0
        [0.0, 0.0]
    """
    moments, write = _recomputer(model, filter)

    def fn(params, inputs):
        inputs = jnp.asarray(inputs)
        total = jax.lax.fori_loop(
            1, inputs.shape[0], lambda i, acc: jax.tree.map(jnp.add, acc, moments(params, inputs[i])),
            moments(params, inputs[0]),
        )  # fmt: skip
        means = [s1 / inputs.shape[0] for s1, _ in total]
        variances = [
            jnp.maximum(s2 / inputs.shape[0] - jnp.square(mu), 0) for (_, s2), mu in zip(total, means, strict=True)
        ]
        return write(params, means, variances)

    return fn


def recompute_batch_stats(model: nnx.Module, batches, *, batch_size: int | None = None) -> nnx.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``batches`` (the module docstring).

    Args:
        model: an NNX model (not modified).
        batches: a sequence or iterable of input batches (arrays (B, ...), or (x, y) tuples whose x is used), of
            any sizes; or one array (N, ...) with ``batch_size``.
        batch_size: split an array of inputs into batches of this size (the last may be smaller).

    Returns:
        The copy, in the model's mode; a model without BatchNorm is returned as a plain copy.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> model = nnx.Sequential(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.BatchNorm(1, rngs=nnx.Rngs(0)))
        >>> model.layers[0].kernel[...] = np.ones((1, 1), np.float32)  # the identity map, no bias
        >>> x = np.array([[1.0], [2.0], [3.0], [6.0]], np.float32)
        >>> fresh = recompute_batch_stats(model, [x[:1], x[1:]])  # batches of 1 and 3
        >>> float(fresh.layers[1].mean[0]), float(fresh.layers[1].var[0])  # mean 3, variance 3.5 of all four
        (3.0, 3.5)
    """
    out = nnx.clone(model)
    if not has_batch_norm(out):
        return out
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
        arr = np.asarray(_inputs(batches))
        batches = [arr[i : i + batch_size] for i in range(0, len(arr), batch_size)]
    moments, write = _recomputer(out, nnx.Param)
    moments = jax.jit(moments)
    params = nnx.state(out, nnx.Param)
    sums, count = None, 0
    for i, batch in enumerate(batches):
        x = jnp.asarray(_inputs(batch))
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"batch {i} is empty: every batch needs at least one input.")
        if jnp.issubdtype(x.dtype, jnp.floating) and not bool(jnp.isfinite(x).all()):
            raise ValueError(f"batch {i} contains NaN or Inf.")
        n = x.shape[0]
        part = [(n * np.asarray(a, np.float64), n * np.asarray(b, np.float64)) for a, b in moments(params, x)]
        sums = part if sums is None else [(s1 + a, s2 + b) for (s1, s2), (a, b) in zip(sums, part, strict=True)]
        count += n
    if sums is None:
        raise ValueError("recompute_batch_stats needs at least one batch of inputs.")
    means = [s1 / count for s1, _ in sums]
    variances = [np.maximum(s2 / count - mu**2, 0) for (_, s2), mu in zip(sums, means, strict=True)]
    nnx.update(out, write(params, means, variances))
    return out


def merged_model(model: nnx.Module, params, *, batches: Sequence | None = None, **kwargs) -> nnx.Module:
    """A copy of ``model`` holding ``params`` (e.g. a soup, a WiSE-FT or TIES merge of ``nnx.state(m, nnx.Param)``),
    with its BatchNorm statistics re-estimated on ``batches`` when given and the model has BatchNorm.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> from jaxtransfer.soup import uniform_soup
        >>> models = [MLP(4, [8], 3, rngs=nnx.Rngs(s)) for s in range(3)]
        >>> soup = merged_model(models[0], uniform_soup([nnx.state(m, nnx.Param) for m in models]))
        >>> soup(jnp.ones((2, 4))).shape
        (2, 3)
    """
    out = nnx.clone(model)
    nnx.update(out, params)
    if batches is not None and has_batch_norm(out):
        out = recompute_batch_stats(out, batches, **kwargs)
    return out
