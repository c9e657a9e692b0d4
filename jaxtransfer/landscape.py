"""Weight-interpolation probes of the loss landscape, for any pytree of parameters (no Flax needed).

    theta(l) = (1 - l) theta_a + l theta_b,
    barrier = max_l  loss(theta(l)) - ((1 - l) loss(theta_a) + l loss(theta_b))     (linear mode connectivity).

Only floating-point leaves move; other leaves (counters, RNG keys) come from ``theta_a``. Losses along a path or
over a plane are evaluated with ``jax.vmap`` over the interpolation coefficients, in chunks (``lax.map`` with a
batch size) so that memory stays bounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._checks import check_positive_int
from jaxtransfer._pytree import as_arrays, check_finite, check_same, is_float

__all__ = ["Path", "Plane", "barrier", "interpolate", "linear_path", "plane", "random_directions"]


def interpolate(theta_a, theta_b, lam):
    """(1 - lam) theta_a + lam theta_b on the floating-point leaves (lam may be traced).


    Example:
        >>> import numpy as np
        >>> from jaxtransfer.landscape import interpolate
        >>> interpolate({'w': np.array([0.0, 2.0])}, {'w': np.array([4.0, 2.0])}, 0.25)['w'].tolist()
        [1.0, 2.0]

    Raises:
        ValueError: the pytrees differ in structure, shape (even where they would broadcast) or dtype; a
            concrete ``lam`` or leaf is NaN/Inf.
    """
    theta_a, theta_b = as_arrays(theta_a), as_arrays(theta_b)
    check_same(theta_a, theta_b, names=("theta_a", "theta_b"))
    if not isinstance(lam, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(lam, np.float64))):
        raise ValueError(f"lam must be finite; got {lam!r}.")
    return _mix(theta_a, theta_b, lam)


def _mix(theta_a, theta_b, lam):
    # (1 - lam) a + lam b (not a + lam (b - a)): both endpoints are then exact in floating point.
    return jax.tree.map(lambda a, b: ((1 - lam) * a + lam * b).astype(a.dtype) if is_float(a) else a, theta_a, theta_b)


def _check_chunk(chunk) -> None:
    check_positive_int(chunk, "chunk")


def _finite_losses(losses, shape, what: str) -> np.ndarray:
    """The losses as a numpy array of ``shape``; raises if ``loss_fn`` did not return one scalar per point or gave
    NaN (an Inf loss is a legitimate value far from a minimum and is kept)."""
    out = np.asarray(losses)
    if out.shape != shape:
        raise ValueError(f"loss_fn must return a scalar; {what} has shape {out.shape[1:]} per point.")
    if np.isnan(out).any():
        raise FloatingPointError(f"{what} is NaN at {int(np.isnan(out).sum())} of {out.size} points.")
    return out


@dataclasses.dataclass(frozen=True)
class Path:
    """Losses (or any scalar metric) along the straight line between two parameter sets.

    Example:
        >>> import jax.numpy as jnp
        >>> path = linear_path(lambda p, d: (p["w"] - d) ** 2, {"w": jnp.array(0.0)}, {"w": jnp.array(2.0)},
        ...                    jnp.array(1.0), num=3)
        >>> path.lams.tolist(), path.losses.tolist()
        ([0.0, 0.5, 1.0], [1.0, 0.0, 1.0])
    """

    lams: np.ndarray  # (num,)
    losses: np.ndarray  # (num,)

    def plot(self, ax=None, label: str | None = None):
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(5, 3.5))[1]
        ax.plot(self.lams, self.losses, marker="o", label=label)
        ax.set_xlabel("interpolation coefficient")
        ax.set_ylabel("loss")
        if label:
            ax.legend()
        return ax


def _evaluate(loss_fn, params_at, data, coords, chunk):
    def one(c):
        return loss_fn(params_at(c), data)

    return jax.lax.map(one, coords, batch_size=chunk)


def linear_path(
    loss_fn: Callable[[object, object], jax.Array],
    theta_a,
    theta_b,
    data,
    num: int = 25,
    *,
    lams=None,
    extrapolate: bool = False,
    chunk: int = 8,
) -> Path:
    """loss_fn(theta(l), data) at ``num`` evenly spaced l in [0, 1] (or at the given ``lams``).

    Args:
        loss_fn: ``(params, data) -> scalar``, jit-compatible.
        theta_a, theta_b: parameter pytrees of identical structure, shapes and dtypes.
        lams: explicit coefficients; values outside [0, 1] need ``extrapolate=True`` (the landscape papers plot
            -0.5..1.5).
        chunk: how many coefficients are evaluated at once under ``vmap``.


    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import barrier, linear_path
        >>> def loss(p, data):  # two minima, at w = -1 and w = 1
        ...     return jnp.square(jnp.square(p['w']) - 1.0)
        >>> path = linear_path(loss, {'w': jnp.array(-1.0)}, {'w': jnp.array(1.0)}, None, num=5)
        >>> [round(float(v), 3) for v in path.losses]
        [0.0, 0.562, 1.0, 0.562, 0.0]

    Raises:
        ValueError: mismatched pytrees, coefficients outside [0, 1] without ``extrapolate``, num < 2.
    """
    theta_a, theta_b = as_arrays(theta_a), as_arrays(theta_b)
    check_same(theta_a, theta_b, names=("theta_a", "theta_b"))
    _check_chunk(chunk)
    if lams is None:
        check_positive_int(num, "num", minimum=2)
        lams = np.linspace(0.0, 1.0, num)
    lams = np.asarray(lams, np.float32)
    if lams.ndim != 1 or lams.size == 0:
        raise ValueError(f"lams must be a non-empty 1-D sequence of coefficients; got shape {lams.shape}.")
    if not np.isfinite(lams).all():
        raise ValueError(f"lams must be finite; got {lams.tolist()}.")
    if not extrapolate and (lams.min() < 0 or lams.max() > 1):
        raise ValueError("interpolation coefficients outside [0, 1]: pass extrapolate=True to evaluate them.")
    losses = jax.jit(lambda a, b, d, ls: _evaluate(loss_fn, lambda lam: _mix(a, b, lam), d, ls, chunk))(
        theta_a, theta_b, data, jnp.asarray(lams)
    )
    return Path(lams, _finite_losses(losses, (lams.size,), "the loss along the path"))


def barrier(path: Path) -> tuple[float, float]:
    """Height and location of the loss barrier: max over l of loss(l) - ((1 - l) loss(0) + l loss(1)).

    The path must contain l = 0 and l = 1. A height <= 0 means the two endpoints are linearly connected.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.landscape import Path, barrier
        >>> barrier(Path(np.linspace(0, 1, 5), np.array([0.0, 0.5, 1.0, 0.5, 0.0])))
        (1.0, 0.5)
    """
    lams, losses = np.asarray(path.lams, np.float64), np.asarray(path.losses, np.float64)
    if lams.ndim != 1 or losses.shape != lams.shape:
        raise ValueError(
            f"path.lams and path.losses must be 1-D of one length (a loss per coefficient); got shapes {lams.shape} "
            f"and {losses.shape}."
        )
    if not (np.isfinite(lams).all() and np.isfinite(losses).all()):
        raise ValueError("path.lams and path.losses must be finite: a barrier over NaN or Inf losses is undefined.")
    i0, i1 = np.flatnonzero(np.isclose(lams, 0.0)), np.flatnonzero(np.isclose(lams, 1.0))
    if not (i0.size and i1.size):
        raise ValueError("the path must include the endpoints l = 0 and l = 1.")
    line = (1 - lams) * losses[i0[0]] + lams * losses[i1[0]]
    gap = losses - line
    k = int(np.argmax(gap))
    return float(gap[k]), float(lams[k])


def random_directions(theta, key: jax.Array, *, normalize: str | None = "filter"):
    """A Gaussian direction in parameter space, filter-normalised (Li et al., "Visualizing the loss landscape").

    ``normalize="filter"``: for every output filter f of every kernel (the last axis, as in Flax),
    d_f <- d_f ||w_f|| / (||d_f|| + 1e-10); leaves with one dimension (biases, norm scales) are zeroed.
    ``"layer"``: the same over whole leaves. ``None``: raw Gaussian. Non-float leaves are zero.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from jaxtransfer.landscape import random_directions
        >>> theta = {'w': jnp.ones((3, 2)), 'b': jnp.ones(2)}
        >>> d = random_directions(theta, jax.random.key(0))
        >>> np.linalg.norm(np.asarray(d['w']), axis=0).round(4).tolist(), d['b'].tolist()
        ([1.732100009918213, 1.732100009918213], [0.0, 0.0])
    """
    if normalize not in ("filter", "layer", None):
        raise ValueError(f"normalize must be 'filter', 'layer' or None; got {normalize!r}.")
    theta = as_arrays(theta)
    check_finite(theta, "theta")
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves, strict=True):
        if not is_float(w):
            out.append(jnp.zeros_like(w))
            continue
        d = jax.random.normal(k, w.shape, jnp.float32)
        if normalize is not None and w.ndim <= 1:
            d = jnp.zeros_like(d)
        elif normalize == "filter":
            # Every axis but the output axis (the last in Flax), for kernels of any rank (Dense 2-D, Conv 3-D to 5-D).
            axes = tuple(range(w.ndim - 1))
            w_norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
            d = d * w_norm / (jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True)) + 1e-10)
        elif normalize == "layer":
            d = d * jnp.linalg.norm(w) / (jnp.linalg.norm(d) + 1e-10)
        out.append(d.astype(w.dtype))
    return jax.tree.unflatten(treedef, out)


@dataclasses.dataclass(frozen=True)
class Plane:
    """Losses over a 2-D grid of coordinates (alphas x betas) in a plane of parameter space.

    Example:
        >>> import jax.numpy as jnp
        >>> theta = {"w": jnp.zeros(2)}
        >>> grid = plane(lambda p, d: jnp.sum(p["w"] ** 2), theta, None,
        ...              directions=({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])}), grid=(3, 3))
        >>> grid.losses.shape, float(grid.losses[1, 1]), float(grid.losses[0, 0])  # the centre is theta
        ((3, 3), 0.0, 2.0)
    """

    alphas: np.ndarray  # (A,)
    betas: np.ndarray  # (B,)
    losses: np.ndarray  # (A, B)

    def plot(self, ax=None, levels: int = 20):
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(5, 4))[1]
        cs = ax.contourf(self.alphas, self.betas, self.losses.T, levels=levels)
        ax.figure.colorbar(cs, ax=ax, label="loss")
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        return ax


def plane(
    loss_fn: Callable[[object, object], jax.Array],
    theta_0,
    data,
    *,
    points=None,
    directions=None,
    grid: tuple[int, int] = (21, 21),
    span: tuple[float, float] = (-1.0, 1.0),
    chunk: int = 16,
) -> Plane:
    """Losses over a plane: theta_0 + alpha u + beta v for a ``grid`` of (alpha, beta) in ``span`` x ``span``.

    Either ``points=(theta_1, theta_2)`` (u = theta_1 - theta_0, v = theta_2 - theta_0: the plane through three
    models; use span (-0.5, 1.5)) or ``directions=(d_1, d_2)`` (e.g. two :func:`random_directions`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import plane
        >>> def loss(p, data):
        ...     return jnp.sum(jnp.square(p['w']))
        >>> t0, t1, t2 = ({'w': jnp.array(v)} for v in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0]))
        >>> grid = plane(loss, t0, None, points=(t1, t2), grid=(3, 3), span=(0.0, 1.0))
        >>> grid.losses.round(3).tolist()
        [[0.0, 0.25, 1.0], [0.25, 0.5, 1.25], [1.0, 1.25, 2.0]]
    """
    if (points is None) == (directions is None):
        raise ValueError("pass exactly one of points=(theta_1, theta_2) or directions=(d_1, d_2).")
    arg = "points" if points is not None else "directions"
    pair = points if points is not None else directions
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ValueError(f"{arg} must be a pair of pytrees like theta_0; got {type(pair).__name__}.")
    theta_0, pair = as_arrays(theta_0), [as_arrays(p) for p in pair]
    for i, p in enumerate(pair):
        check_same(theta_0, p, names=("theta_0", f"{arg}[{i}]"))
    if points is not None:
        u, v = (jax.tree.map(lambda p, t: p - t if is_float(t) else jnp.zeros_like(t), p, theta_0) for p in pair)
    else:
        u, v = pair
    if (
        not isinstance(grid, tuple | list)
        or len(grid) != 2
        or not all(isinstance(g, int | np.integer) and not isinstance(g, bool) and g >= 1 for g in grid)
    ):
        raise ValueError(f"grid must be two positive integers (A, B); got {grid!r}.")
    if not (isinstance(span, tuple | list) and len(span) == 2 and np.isfinite(span).all() and span[0] < span[1]):
        raise ValueError(f"span must be two finite numbers (low, high) with low < high; got {span!r}.")
    _check_chunk(chunk)
    alphas = np.linspace(span[0], span[1], grid[0], dtype=np.float32)
    betas = np.linspace(span[0], span[1], grid[1], dtype=np.float32)
    coords = jnp.asarray(np.stack(np.meshgrid(alphas, betas, indexing="ij"), -1).reshape(-1, 2))

    def at(t0, u, v, c):
        return jax.tree.map(lambda t, a, b: (t + c[0] * a + c[1] * b).astype(t.dtype) if is_float(t) else t, t0, u, v)

    losses = jax.jit(lambda t0, u, v, d, cs: _evaluate(loss_fn, lambda c: at(t0, u, v, c), d, cs, chunk))(
        theta_0, u, v, data, coords
    )
    return Plane(alphas, betas, _finite_losses(losses, (grid[0] * grid[1],), "the loss over the plane").reshape(grid))
