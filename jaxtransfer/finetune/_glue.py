"""The NNX glue users otherwise write by hand: a pure ``(params, x) -> outputs`` function of a model, and batched,
compiled predictions, so that soups, landscape probes and ensembles take an NNX model directly."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer._checks import check_positive_int
from jaxtransfer.finetune._batch_stats import batch_stats_fn
from jaxtransfer.models import extract_features

__all__ = ["accuracy", "apply_fn", "predict"]


def apply_fn(
    model: nnx.Module, filter=nnx.Param, *, batch_stats_from=None, batch_size: int | None = None
) -> tuple[nnx.State, Callable[[nnx.State, jax.Array], jax.Array]]:
    """``(params, fn)`` with ``fn(params, x) = model(x)`` in eval mode, pure and jit-able; ``params`` are the
    variables ``filter`` selects (default every ``nnx.Param``), the rest (e.g. BatchNorm statistics) is held fixed.

    With ``batch_stats_from`` (inputs (N, ...)), ``fn`` first re-estimates the BatchNorm statistics that ``params``
    give on those inputs (:func:`jaxtransfer.finetune.batch_stats_fn`, in batches of ``batch_size``, default all N at
    once; N must be a multiple), so that a soup, a merge or a point on a path or plane is evaluated with statistics
    of its own weights rather than one ingredient's.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> from jaxtransfer.soup import uniform_soup
        >>> models = [MLP(4, [8], 3, rngs=nnx.Rngs(s)) for s in range(3)]
        >>> params, fn = apply_fn(models[0])
        >>> soup = uniform_soup([apply_fn(m)[0] for m in models])  # average three models' weights
        >>> jax.jit(fn)(soup, jnp.ones((2, 4))).shape
        (2, 3)
    """
    m = nnx.clone(model)
    m.eval()
    if batch_stats_from is None:
        graphdef, params, rest = nnx.split(m, filter, ...)

        def fn(params, x):
            return nnx.merge(graphdef, params, rest, copy=True)(x)

        return params, fn
    inputs = jnp.asarray(batch_stats_from)
    size = inputs.shape[0] if batch_size is None else check_positive_int(batch_size, "batch_size")
    if inputs.ndim == 0 or inputs.shape[0] == 0 or inputs.shape[0] % size:
        raise ValueError(
            f"batch_stats_from must be (N, ...) inputs with N a multiple of batch_size; got shape {inputs.shape} "
            f"and batch_size {size}."
        )
    stacked = inputs.reshape(inputs.shape[0] // size, size, *inputs.shape[1:])
    stats_of = batch_stats_fn(m, filter)
    graphdef, params, _, rest = nnx.split(m, filter, nnx.BatchStat, ...)

    def fn_with_stats(params, x):
        return nnx.merge(graphdef, params, stats_of(params, stacked), rest, copy=True)(x)

    return params, fn_with_stats


def _outputs(model, batch):
    return model(batch)


def predict(model: nnx.Module, x, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs on ``x`` (n, ...) in eval mode, in compiled batches (the last one padded), as numpy:
    :func:`jaxtransfer.models.extract_features` with ``fn = model(batch)``; non-finite outputs raise.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> predict(MLP(4, [8], 3, rngs=nnx.Rngs(0)), np.ones((10, 4), np.float32), batch_size=4).shape
        (10, 3)
    """
    check_positive_int(batch_size, "batch_size")
    return extract_features(model, x, fn=_outputs, batch_size=batch_size, progress=False)


def accuracy(model: nnx.Module, x, y, *, batch_size: int = 256) -> float:
    """Fraction of ``x`` whose largest output is the class in ``y`` (n,).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> x = np.ones((5, 4), np.float32)
        >>> accuracy(model, x, predict(model, x).argmax(1))
        1.0
    """
    y = np.asarray(y)
    out = predict(model, x, batch_size=batch_size)
    if out.ndim != 2 or y.shape != (len(out),):
        raise ValueError(f"accuracy needs (n, C) outputs and (n,) labels; got {out.shape} and {y.shape}.")
    return float(np.mean(out.argmax(1) == y))
