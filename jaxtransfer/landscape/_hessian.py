"""Hessian eigenvalues of a loss by Lanczos on Hessian-vector products, and their map over a plane.

The Hessian is never formed: H v = d/dt grad(loss)(theta + t v) at t = 0 (``jax.jvp`` of ``jax.grad``), one
forward-over-reverse pass. m Lanczos steps with full re-orthogonalisation build an orthonormal basis Q (m, P) of the
Krylov space and the tridiagonal T = Q^T H Q; the eigenvalues of T (Ritz values) converge to the extreme eigenvalues
of H first. When the Krylov space is exhausted (an exact invariant subspace: the residual vanishes) the next basis
vector is a fresh random one orthogonal to Q and T decouples, so the Ritz values stay eigenvalues of H (no spurious
zeros). With m = P the result is the whole spectrum, exact to rounding.

Li et al. ("Visualizing the loss landscape", 2018) map ``|lambda_min / lambda_max|`` over a plane: near 0 where the
surface is convex, large where negative curvature dominates.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path as _FilePath

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxtransfer._checks import check_positive_int
from jaxtransfer._pytree import as_arrays, check_finite, is_float
from jaxtransfer.landscape._interpolation import Plane, evaluate_points, plane_axes

__all__ = ["hessian_eigenvalue_plane", "hessian_extreme_eigenvalues", "hessian_top_eigenvalues"]

_HI = jax.lax.Precision.HIGHEST


def _flattened(params):
    """(flat vector of the float leaves, rebuild: vector -> params with the other leaves unchanged)."""
    leaves, treedef = jax.tree.flatten(params)
    mask = [is_float(x) for x in leaves]
    flat, unravel = ravel_pytree([x for x, m in zip(leaves, mask, strict=True) if m])

    def rebuild(vec):
        floats = iter(unravel(vec))
        return jax.tree.unflatten(treedef, [next(floats) if m else x for x, m in zip(leaves, mask, strict=True)])

    return flat, rebuild


def _project_out(basis, w):
    # twice ("twice is enough", Kahan): keeps Q orthonormal to working precision over many steps
    for _ in range(2):
        w = w - jnp.matmul(basis.T, jnp.matmul(basis, w, precision=_HI), precision=_HI)
    return w


def _ritz_values(loss_fn: Callable, params, data, steps: int, seed: int) -> jax.Array:
    """Eigenvalues of the m x m Lanczos tridiagonal of the Hessian at ``params``, ascending (traceable)."""
    flat, rebuild = _flattened(params)
    flat = flat.astype(jnp.promote_types(flat.dtype, jnp.float32))
    n, dtype = flat.size, flat.dtype

    def loss_of(vec):
        return loss_fn(rebuild(vec.astype(flat.dtype)), data)

    grad = jax.grad(loss_of)

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    key = jax.random.key(seed)
    tol = 100 * jnp.finfo(dtype).eps

    def unit(x):
        return x / jnp.maximum(jnp.linalg.norm(x), jnp.finfo(dtype).tiny)

    def step(i, carry):
        basis, alphas, betas, v, v_prev, beta_prev, scale = carry
        basis = basis.at[i].set(v)
        w = hvp(v)
        a = jnp.vdot(w, v)
        w = _project_out(basis, w - a * v - beta_prev * v_prev)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b + beta_prev)
        broke = b <= tol * scale
        fresh = unit(_project_out(basis, jax.random.normal(jax.random.fold_in(key, i + 1), (n,), dtype)))
        v_next = jnp.where(broke, fresh, w / jnp.where(broke, 1, b))
        b = jnp.where(broke, 0, b)
        return basis, alphas.at[i].set(a), betas.at[i].set(b), v_next, v, b, scale

    v0 = unit(jax.random.normal(key, (n,), dtype))
    zero = jnp.zeros((), dtype)
    init = (jnp.zeros((steps, n), dtype), jnp.zeros(steps, dtype), jnp.zeros(steps, dtype), v0, jnp.zeros_like(v0),
            zero, zero)  # fmt: skip
    _, alphas, betas, *_ = jax.lax.fori_loop(0, steps, step, init)
    off = betas[: steps - 1]
    tri = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.eigvalsh(tri)


def _size(params) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params) if is_float(x)))


def _checked(params, num_iterations, what: str):
    params = as_arrays(params)
    check_finite(params, "params")
    n = _size(params)
    if n == 0:
        raise ValueError(f"{what}: params hold no floating-point leaves.")
    check_positive_int(num_iterations, "num_iterations")
    return params, n


def _finite(values, what: str) -> np.ndarray:
    out = np.asarray(values, np.float64)
    if not np.isfinite(out).all():
        raise FloatingPointError(f"{what}: the Hessian-vector products gave NaN or Inf (check loss_fn at params).")
    return out


def hessian_top_eigenvalues(
    loss_fn: Callable, params, data=None, *, k: int = 1, num_iterations: int | None = None, seed: int = 0
) -> np.ndarray:
    """The ``k`` largest eigenvalues of the Hessian of ``loss_fn(params, data)`` in the float leaves, largest first.

    Args:
        loss_fn: ``(params, data) -> scalar``, twice differentiable (jit-compatible).
        params: any pytree; its float leaves are the variables (P entries), the rest is held fixed.
        data: the batch (one batch: the Hessian of a mean over batches is not the mean of their eigenvalues).
        k: how many.
        num_iterations: Lanczos steps m (default max(20, 3k), at most P); more steps, more accurate interior values.
        seed: of the random start vector.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import hessian_top_eigenvalues
        >>> h = jnp.diag(jnp.array([5.0, 2.0, 1.0, -3.0]))
        >>> def loss(p, data):
        ...     return 0.5 * p["w"] @ h @ p["w"]
        >>> hessian_top_eigenvalues(loss, {"w": jnp.ones(4)}, k=2).round(4).tolist()
        [5.0, 2.0]
    """
    check_positive_int(k, "k")
    params, n = _checked(params, num_iterations or 1, "hessian_top_eigenvalues")
    if k > n:
        raise ValueError(f"k = {k} eigenvalues asked of a Hessian of size {n}.")
    steps = min(n, num_iterations or max(20, 3 * k))
    if steps < k:
        raise ValueError(f"num_iterations = {steps} < k = {k}: Lanczos gives at most one value per step.")
    values = jax.jit(lambda p, d: _ritz_values(loss_fn, p, d, steps, seed))(params, data)
    return _finite(values, "hessian_top_eigenvalues")[::-1][:k].copy()


def hessian_extreme_eigenvalues(
    loss_fn: Callable, params, data=None, *, num_iterations: int = 20, seed: int = 0
) -> tuple[float, float]:
    """(lambda_min, lambda_max) of the Hessian of ``loss_fn(params, data)`` (see :func:`hessian_top_eigenvalues`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import hessian_extreme_eigenvalues
        >>> def loss(p, data):  # a saddle: curvature 2 along x, -6 along y
        ...     return p["x"] ** 2 - 3 * p["y"] ** 2
        >>> [round(v, 4) for v in hessian_extreme_eigenvalues(loss, {"x": jnp.array(1.0), "y": jnp.array(0.5)})]
        [-6.0, 2.0]
    """
    params, n = _checked(params, num_iterations, "hessian_extreme_eigenvalues")
    steps = min(n, num_iterations)
    values = _finite(jax.jit(lambda p, d: _ritz_values(loss_fn, p, d, steps, seed))(params, data), "the Hessian")
    return float(values[0]), float(values[-1])


_METRICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _curvature_metrics(loss_fn: Callable, steps: int, seed: int) -> Callable:
    """``(params, data) -> {loss, min_eigenvalue, max_eigenvalue, ratio}``, one function object per settings (so
    the compiled plane evaluator is reused)."""
    try:
        cache = _METRICS.setdefault(loss_fn, {})
        fn_ref = weakref.ref(loss_fn)  # the cached function must not keep its own key alive
    except TypeError:
        cache = {}

        def fn_ref():
            return loss_fn

    if (steps, seed) not in cache:

        def metrics(params, data):
            loss_fn = fn_ref()
            ritz = _ritz_values(loss_fn, params, data, steps, seed)
            low, high = ritz[0], ritz[-1]
            ratio = jnp.abs(low) / jnp.maximum(jnp.abs(high), jnp.finfo(ritz.dtype).tiny)
            return {"loss": loss_fn(params, data), "min_eigenvalue": low, "max_eigenvalue": high, "ratio": ratio}

        cache[(steps, seed)] = metrics
    return cache[(steps, seed)]


def hessian_eigenvalue_plane(
    loss_fn: Callable,
    theta_0,
    data=None,
    *,
    points=None,
    directions=None,
    grid: tuple[int, int] = (21, 21),
    span: tuple[float, float] = (-1.0, 1.0),
    num_iterations: int = 20,
    seed: int = 0,
    chunk: int = 4,
    checkpoint: str | _FilePath | None = None,
    progress: bool | None = None,
) -> Plane:
    """The Hessian's extreme eigenvalues at every point of a plane (as :func:`plane`), and the ratio
    ``|lambda_min| / |lambda_max|`` that Li et al. map: ``Plane.metrics`` holds ``loss``, ``min_eigenvalue``,
    ``max_eigenvalue`` and ``ratio``, each (A, B). Each point costs ``num_iterations`` Hessian-vector products;
    ``chunk`` points are evaluated at once (memory: chunk x num_iterations x P).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.landscape import hessian_eigenvalue_plane
        >>> def loss(p, data):  # convex in w[0]; curvature 12 w[1]^2 - 4 in w[1]
        ...     return p["w"][0] ** 2 + p["w"][1] ** 4 - 2 * p["w"][1] ** 2
        >>> axes = ({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])})
        >>> grid = hessian_eigenvalue_plane(loss, {"w": jnp.zeros(2)}, directions=axes, grid=(1, 3), span=(-1.0, 1.0))
        >>> grid.metrics["min_eigenvalue"].round(3).tolist()  # along w[1] = -1, 0, 1
        [[2.0, -4.0, 2.0]]
    """
    theta_0, u, v, alphas, betas, coords = plane_axes(theta_0, points, directions, grid, span)
    _, n = _checked(theta_0, num_iterations, "hessian_eigenvalue_plane")
    metric_fn = _curvature_metrics(loss_fn, min(n, num_iterations), seed)
    metrics = evaluate_points(
        metric_fn, "plane", (theta_0, u, v), coords, data, chunk=chunk, checkpoint=checkpoint, progress=progress,
        what="the Hessian eigenvalues over the plane",
    )  # fmt: skip
    metrics = {k: m.reshape(len(alphas), len(betas)) for k, m in metrics.items()}
    return Plane(alphas, betas, metrics["loss"], metrics)
