"""Weight-interpolation probes of the loss landscape: the line between two models, the plane through three (or
along two directions), and the engine that evaluates any metric at many points of parameter space.

    theta(l) = (1 - l) theta_a + l theta_b,
    barrier = max_l  loss(theta(l)) - ((1 - l) loss(theta_a) + l loss(theta_b))     (linear mode connectivity).

Points are evaluated ``chunk`` at a time under ``jax.vmap``; the compiled evaluator is cached per (``loss_fn``,
kind, chunk), so a second path or plane with the same loss and shapes does not compile again. ``loss_fn`` may return
a scalar or a dict of scalars (``{"loss": ..., "accuracy": ...}``: every metric in one pass). With ``batches`` each
point's value is the size-weighted mean over the minibatches (a dataset that does not fit one call), and with
``checkpoint`` the values computed so far are saved after every chunk and a rerun resumes from them.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path as _FilePath

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._checks import check_positive_int
from jaxtransfer._files import atomic_write
from jaxtransfer._plotting import pyplot
from jaxtransfer._progress import progress_bar, wants_progress
from jaxtransfer._pytree import as_arrays, check_finite, check_same, is_float, lerp

__all__ = [
    "POINT_MAPS",
    "Path",
    "Plane",
    "barrier",
    "evaluate_points",
    "interpolate",
    "linear_path",
    "plane",
    "plane_axes",
    "random_directions",
]


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
    return lerp(theta_a, theta_b, lam)


def _along_line(base, c):
    return lerp(base[0], base[1], c)


def _in_plane(base, c):
    t0, u, v = base
    return jax.tree.map(lambda t, a, b: (t + c[0] * a + c[1] * b).astype(t.dtype) if is_float(t) else t, t0, u, v)


POINT_MAPS: dict[str, Callable] = {"line": _along_line, "plane": _in_plane}
"""How a coordinate becomes parameters: ``"line"`` (base = (theta_a, theta_b), c = l) and ``"plane"``
(base = (theta_0, u, v), c = (alpha, beta)). :func:`evaluate_points` takes one of these names."""

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(metric_fn: Callable, kind: str, chunk: int) -> Callable:
    """``jit(vmap(c -> metric_fn(point(base, c), data)))``, built once per (metric_fn, kind, chunk)."""
    try:
        cache = _COMPILED.setdefault(metric_fn, {})
        fn_ref = weakref.ref(metric_fn)  # the cached function must not keep its own key alive
    except TypeError:  # not weak-referenceable (e.g. a functools.partial of a builtin): compiled per call
        cache = {}

        def fn_ref():
            return metric_fn

    if (kind, chunk) not in cache:
        point = POINT_MAPS[kind]

        def run(base, data, coords):
            fn = fn_ref()  # called while tracing, when the caller holds metric_fn
            return jax.vmap(lambda c: fn(point(base, c), data))(coords)

        cache[(kind, chunk)] = jax.jit(run)
    return cache[(kind, chunk)]


def _batch_size(batch) -> int:
    leaves = jax.tree.leaves(batch)
    if not leaves or np.ndim(leaves[0]) == 0:
        raise ValueError("every batch must hold arrays with a leading batch axis (their sizes weight the mean).")
    return int(np.shape(leaves[0])[0])


def _as_metrics(out, points: int) -> dict[str, np.ndarray]:
    if isinstance(out, Mapping):
        metrics = {str(k): np.asarray(v, np.float64) for k, v in out.items()}
    else:
        metrics = {"loss": np.asarray(out, np.float64)}
    for name, values in metrics.items():
        if values.shape != (points,):
            raise ValueError(
                f"loss_fn must return a scalar or a dict of scalars; {name!r} has shape {values.shape[1:]} per point."
            )
    return metrics


def _fingerprint(kind: str, coords: np.ndarray, base) -> np.ndarray:
    """What a saved file must match to be resumed: the kind, the coordinates and a digest of the parameters (the sum
    and the sum of squares of every float leaf), so that a file of another model is refused."""
    floats = [x for x in jax.tree.leaves(base) if is_float(x)]
    digest = [
        float(v) for x in floats for v in (jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32))))
    ]
    return np.concatenate([np.frombuffer(kind.encode(), np.uint8).astype(np.float64), coords.ravel(), digest])


def _load_partial(checkpoint: _FilePath, fingerprint: np.ndarray) -> dict[str, np.ndarray]:
    with np.load(checkpoint) as saved:
        if "fingerprint" not in saved or not np.array_equal(saved["fingerprint"], fingerprint):
            raise ValueError(
                f"{checkpoint} holds the values of another path or plane (other kind, grid, span, coefficients or "
                "parameters); "
                "pass a new checkpoint path, or delete this file to start over."
            )
        return {k[len("metric:") :]: saved[k] for k in saved.files if k.startswith("metric:")}


def _save_partial(checkpoint: _FilePath, fingerprint: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
    arrays = {"fingerprint": fingerprint, **{f"metric:{k}": v for k, v in metrics.items()}}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(checkpoint, write)


def evaluate_points(
    metric_fn: Callable,
    kind: str,
    base,
    coords,
    data=None,
    *,
    batches: Sequence | None = None,
    chunk: int = 8,
    checkpoint: str | _FilePath | None = None,
    progress: bool | None = None,
    what: str = "the loss",
) -> dict[str, np.ndarray]:
    """``metric_fn(point(base, c), data)`` at every coordinate c of ``coords`` (P, ...): a dict of (P,) arrays.

    The engine behind :func:`linear_path`, :func:`plane` and the Hessian maps; ``kind`` names the map from a
    coordinate to parameters (:data:`POINT_MAPS`). ``batches`` (a re-iterable sequence of batches) replaces ``data``:
    each value is then the mean over the batches weighted by their sizes. A NaN metric raises; an Inf loss is a
    legitimate value far from a minimum and is kept.

    Args:
        metric_fn: ``(params, data) -> loss`` (a scalar) or a dict of scalars with a ``"loss"`` entry.
        kind: a key of :data:`POINT_MAPS`; base: what that map takes (a tuple of parameter pytrees).
        coords: (P,) for ``"line"``, (P, 2) for ``"plane"``; data: one batch (or ``batches``).
        chunk: points evaluated per compiled call (the last chunk is padded: one compilation).
        checkpoint: a file to save the values computed so far and to resume from (matched by a digest of
            ``kind``, ``coords`` and ``base``).

    Returns:
        ``{"loss": (P,), ...}``, one entry per metric.

    Example:
        >>> import jax.numpy as jnp
        >>> a, b = {"w": jnp.array(0.0)}, {"w": jnp.array(2.0)}
        >>> out = evaluate_points(lambda p, d: {"loss": (p["w"] - d) ** 2, "w": p["w"]}, "line", (a, b),
        ...                       jnp.array([0.0, 0.5, 1.0]), 1.0)
        >>> out["loss"].tolist(), out["w"].tolist()
        ([1.0, 0.0, 1.0], [0.0, 1.0, 2.0])
    """
    check_positive_int(chunk, "chunk")
    if batches is not None and data is not None:
        raise ValueError("pass data (one batch) or batches (a sequence of batches), not both.")
    if batches is not None:
        if isinstance(batches, Mapping) or not isinstance(batches, Sequence) or len(batches) == 0:
            raise ValueError(
                "batches must be a non-empty sequence (a list of batches, read once per chunk of points): "
                f"got {type(batches).__name__}."
            )
        sizes = [_batch_size(b) for b in batches]
    else:
        batches, sizes = [data], [1]
    coords = np.asarray(coords, np.float32)
    points = len(coords)
    checkpoint = None if checkpoint is None else _FilePath(checkpoint)
    # only with a file to match: the digest is a pass over every parameter
    fingerprint = None if checkpoint is None else _fingerprint(kind, coords, base)
    metrics: dict[str, np.ndarray] | None = None
    if checkpoint is not None and checkpoint.exists():
        metrics = _load_partial(checkpoint, fingerprint)
    run = _compiled(metric_fn, kind, chunk)
    total = float(sum(sizes))
    done = 0 if metrics is None else int(np.sum(~np.isnan(next(iter(metrics.values())))))
    bar = progress_bar(
        enabled=wants_progress(progress, (points - done) * len(batches), threshold=64),
        desc="landscape",
        unit="point",
        total=points,
    )
    bar.update(done)
    for start in range(0, points, chunk):
        if metrics is not None and not np.isnan(next(iter(metrics.values()))[start]):
            continue  # resumed: already computed
        part = coords[start : start + chunk]
        size = len(part)
        if size < chunk:  # pad with the last coordinate: one compiled shape for every chunk
            part = np.concatenate([part, np.repeat(part[-1:], chunk - size, axis=0)])
        acc = None
        for batch, weight in zip(batches, sizes, strict=True):
            out = _as_metrics(jax.tree.map(np.asarray, run(base, batch, jnp.asarray(part))), chunk)
            if acc is None:
                acc = {k: v * (weight / total) for k, v in out.items()}
                continue
            if acc.keys() != out.keys():
                raise ValueError("loss_fn returned different metrics for different batches.")
            acc = {k: acc[k] + out[k] * (weight / total) for k in acc}
        if metrics is None:
            if "loss" not in acc:
                raise ValueError(f"a dict returned by loss_fn must hold a 'loss' entry; got {sorted(acc)}.")
            metrics = {k: np.full(points, np.nan) for k in acc}
        for k, v in acc.items():
            if np.isnan(v[:size]).any():
                label = "" if k == "loss" else f" ({k!r})"
                raise FloatingPointError(
                    f"{what}{label} is NaN at {int(np.isnan(v[:size]).sum())} of {size} points (points {start} to "
                    f"{start + size - 1} of {points})."
                )
            metrics[k][start : start + size] = v[:size]
        if checkpoint is not None:
            _save_partial(checkpoint, fingerprint, metrics)
        bar.update(size)
    bar.close()
    return metrics


def _metrics_field(losses, metrics):
    out = {"loss": np.asarray(losses)} if metrics is None else {k: np.asarray(v) for k, v in metrics.items()}
    return out


@dataclasses.dataclass(frozen=True)
class Path:
    """Losses (and any other metrics ``loss_fn`` returned) along the straight line between two parameter sets.

    Attributes:
        lams: the coefficients, (num,).
        losses: the loss at each, (num,).
        metrics: every metric by name, each (num,), ``"loss"`` included.

    Example:
        >>> import jax.numpy as jnp
        >>> path = linear_path(lambda p, d: (p["w"] - d) ** 2, {"w": jnp.array(0.0)}, {"w": jnp.array(2.0)},
        ...                    jnp.array(1.0), num=3)
        >>> path.lams.tolist(), path.losses.tolist()
        ([0.0, 0.5, 1.0], [1.0, 0.0, 1.0])
    """

    lams: np.ndarray  # (num,)
    losses: np.ndarray  # (num,)
    metrics: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        object.__setattr__(self, "metrics", _metrics_field(self.losses, self.metrics))

    def plot(self, ax=None, label: str | None = None, metric: str = "loss", chord: bool = True):
        """The metric along the path; for the loss (with both endpoints on the path) also the chord between the
        endpoints, dashed, and the barrier: the point highest above the chord, marked with its height."""
        plt = pyplot()

        ax = ax or plt.subplots(figsize=(5, 3.5))[1]
        (line,) = ax.plot(self.lams, self.metrics[metric], marker="o", label=label)
        lams = np.asarray(self.lams, np.float64)
        if chord and metric == "loss" and np.isclose(lams, 0).any() and np.isclose(lams, 1).any():
            height, at = barrier(self)
            losses = np.asarray(self.losses, np.float64)
            start, end = losses[np.flatnonzero(np.isclose(lams, 0))[0]], losses[np.flatnonzero(np.isclose(lams, 1))[0]]
            ax.plot(lams, (1 - lams) * start + lams * end, "--", color=line.get_color(), alpha=0.6, linewidth=1)
            k = int(np.argmin(np.abs(lams - at)))
            ax.plot([at, at], [(1 - at) * start + at * end, losses[k]], ":", color=line.get_color())
            ax.annotate(f"barrier {height:.3g}", (at, losses[k]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)  # fmt: skip
        ax.set_xlabel("interpolation coefficient l (0: theta_a, 1: theta_b)")
        ax.set_ylabel(metric)
        if label:
            ax.legend()
        return ax


def linear_path(
    loss_fn: Callable[[object, object], jax.Array],
    theta_a,
    theta_b,
    data=None,
    num: int = 25,
    *,
    lams=None,
    extrapolate: bool = False,
    batches: Sequence | None = None,
    chunk: int = 8,
    checkpoint: str | _FilePath | None = None,
    progress: bool | None = None,
) -> Path:
    """loss_fn(theta(l), data) at ``num`` evenly spaced l in [0, 1] (or at the given ``lams``).

    Args:
        loss_fn: ``(params, data) -> scalar`` or a dict of scalars with a ``"loss"`` entry, jit-compatible; define it
            once and reuse it (the compiled evaluator is cached on this function object).
        theta_a, theta_b: parameter pytrees of identical structure, shapes and dtypes.
        data: the batch passed to ``loss_fn`` (or ``batches``: a sequence of batches, averaged by size).
        lams: explicit coefficients; values outside [0, 1] need ``extrapolate=True`` (the landscape papers plot
            -0.5..1.5).
        chunk: how many coefficients are evaluated at once under ``vmap``.
        checkpoint: an ``.npz`` file the values are saved to after every chunk; a rerun resumes from it.
        progress: a progress bar (default: when there are many evaluations).


    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import barrier, linear_path
        >>> def loss(p, data):  # two minima, at w = -1 and w = 1
        ...     return jnp.square(jnp.square(p['w']) - 1.0)
        >>> path = linear_path(loss, {'w': jnp.array(-1.0)}, {'w': jnp.array(1.0)}, None, num=5)
        >>> [round(float(v), 3) for v in path.losses]
        [0.0, 0.562, 1.0, 0.562, 0.0]

    Raises:
        ValueError: mismatched pytrees, coefficients outside [0, 1] without ``extrapolate``, num < 2, a checkpoint
            of another path.
    """
    theta_a, theta_b = as_arrays(theta_a), as_arrays(theta_b)
    check_same(theta_a, theta_b, names=("theta_a", "theta_b"))
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
    metrics = evaluate_points(
        loss_fn, "line", (theta_a, theta_b), lams, data, batches=batches, chunk=chunk, checkpoint=checkpoint,
        progress=progress, what="the loss along the path",
    )  # fmt: skip
    return Path(lams, metrics["loss"], metrics)


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
    """Losses (and any other metrics) over a 2-D grid of coordinates (alphas x betas) in a plane of parameter space.

    Attributes:
        alphas: (A,), betas: (B,) the coordinates; losses: (A, B); metrics: every metric by name, each (A, B).

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
    metrics: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        object.__setattr__(self, "metrics", _metrics_field(self.losses, self.metrics))

    def plot(self, ax=None, levels: int = 20, metric: str = "loss"):
        plt = pyplot()

        ax = ax or plt.subplots(figsize=(5, 4))[1]
        cs = ax.contourf(self.alphas, self.betas, np.asarray(self.metrics[metric]).T, levels=levels)
        ax.figure.colorbar(cs, ax=ax, label=metric)
        alphas, betas = np.asarray(self.alphas), np.asarray(self.betas)
        if alphas.min() <= 0 <= alphas.max() and betas.min() <= 0 <= betas.max():  # theta_0, the plane's origin
            ax.plot([0], [0], "wx", markersize=8)
            ax.annotate("theta_0", (0, 0), textcoords="offset points", xytext=(5, 5), color="w", fontsize=8)
        ax.set_xlabel("alpha (coefficient of direction 1)")
        ax.set_ylabel("beta (coefficient of direction 2)")
        ax.set_title(f"{metric} over a {len(alphas)} x {len(betas)} grid", fontsize=10)
        return ax


def plane_axes(theta_0, points, directions, grid, span, what: str = "plane"):
    """Checks the arguments shared by the plane probes; returns (theta_0, u, v, alphas, betas, coords (A*B, 2))."""
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
    alphas = np.linspace(span[0], span[1], grid[0], dtype=np.float32)
    betas = np.linspace(span[0], span[1], grid[1], dtype=np.float32)
    coords = np.stack(np.meshgrid(alphas, betas, indexing="ij"), -1).reshape(-1, 2)
    return theta_0, u, v, alphas, betas, coords


def plane(
    loss_fn: Callable[[object, object], jax.Array],
    theta_0,
    data=None,
    *,
    points=None,
    directions=None,
    grid: tuple[int, int] = (21, 21),
    span: tuple[float, float] = (-1.0, 1.0),
    batches: Sequence | None = None,
    chunk: int = 16,
    checkpoint: str | _FilePath | None = None,
    progress: bool | None = None,
) -> Plane:
    """Losses over a plane: theta_0 + alpha u + beta v for a ``grid`` of (alpha, beta) in ``span`` x ``span``.

    Either ``points=(theta_1, theta_2)`` (u = theta_1 - theta_0, v = theta_2 - theta_0: the plane through three
    models; use span (-0.5, 1.5)) or ``directions=(d_1, d_2)`` (two :func:`random_directions`, or the
    :func:`pca_directions` of a trajectory). ``batches``, ``chunk``, ``checkpoint`` (a 21 x 21 plane is 441
    evaluations: save and resume) and ``progress`` as in :func:`linear_path`.

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
    theta_0, u, v, alphas, betas, coords = plane_axes(theta_0, points, directions, grid, span)
    metrics = evaluate_points(
        loss_fn, "plane", (theta_0, u, v), coords, data, batches=batches, chunk=chunk, checkpoint=checkpoint,
        progress=progress, what="the loss over the plane",
    )  # fmt: skip
    metrics = {k: m.reshape(len(alphas), len(betas)) for k, m in metrics.items()}
    return Plane(alphas, betas, metrics["loss"], metrics)
