"""The evidence of the Bayesian linear model and MacKay's fixed point that maximises it (shared by both methods).

Model (one target column y (n,), features F (n, D)): prior w ~ N(0, a^-1 I), noise y | F, w ~ N(F w, b^-1 I).
With A = a I + b F^T F and m = b A^-1 F^T y, the log evidence is

    L(a, b) = n/2 log b + D/2 log a - n/2 log 2pi - b/2 ||F m - y||^2 - a/2 m^T m - 1/2 log det A,

and it is maximised by iterating (You et al., 2021, Algorithm 1; MacKay, 1992), from ``initial_point``,

    gamma = sum_i b s_i / (a + b s_i),   a <- gamma / m^T m,   b <- (n - gamma) / ||F m - y||^2,

(s_i the eigenvalues of F^T F) until t = a / b changes by less than ``tol`` relative.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LogMEEvidence"]

_LOG_2PI = math.log(2 * math.pi)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LogMEEvidence:
    """Per-target result of the evidence maximisation (a pytree: passes through ``jit`` and ``vmap``).

    Attributes:
        evidence: (K,) maximised log evidence per sample, L_k(a_k, b_k) / n. LogME is its mean.
        alpha: (K,) prior precision a_k at the maximum.
        beta: (K,) noise precision b_k at the maximum.
        weights: (K, D) posterior mean weights m_k (a linear predictor of target k from the features).
        num_iter: (K,) fixed-point iterations used.
        converged: (K,) whether the iteration met a stopping rule (or reached an edge) within ``max_iter``.
    """

    evidence: jax.Array
    alpha: jax.Array
    beta: jax.Array
    weights: jax.Array
    num_iter: jax.Array
    converged: jax.Array


class Pieces(NamedTuple):
    """What one target's evidence needs at a point (a, b)."""

    gamma: jax.Array  # effective number of parameters, sum_i b s_i / (a + b s_i)
    n_minus_gamma: jax.Array  # n - gamma, computed without cancellation where gamma is close to n
    mm: jax.Array  # m^T m
    res: jax.Array  # ||F m - y||^2
    logdet: jax.Array  # log det(a I + b F^T F), all D eigenvalues counted


Stats = Callable[[jax.Array, jax.Array], Pieces]


def initial_point(n: int, d: int, yy: jax.Array, trace_gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A starting point that moves with the data: b0 = n / y^T y, a0 = b0 tr(F^T F) / D.

    The published code starts at a = b = 1. The evidence can have more than one local maximum (and an edge), so
    where the iteration ends depends on the start; starting at a point that scales with F and y makes the
    score exactly invariant to rescaling the features or the targets, as the maximised evidence is.
    """
    b0 = n / yy
    return b0 * jnp.maximum(trace_gram / d, jnp.finfo(yy.dtype).tiny), b0


def log_evidence_per_sample(a: jax.Array, b: jax.Array, p: Pieces, *, n: int, d: int) -> jax.Array:
    """L(a, b) / n from its pieces."""
    return (
        0.5 * jnp.log(b) + (0.5 * d / n) * jnp.log(a) - 0.5 * _LOG_2PI - (0.5 / n) * (b * p.res + a * p.mm + p.logdet)
    )


def maximize_evidence(
    stats: Stats, a0: jax.Array, b0: jax.Array, *, n: int, d: int, tol: float, max_iter: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Runs the fixed point from (a0, b0) with ``lax.while_loop``.

    Stops when t = a / b changes by less than ``tol`` relative (the published rule), or when the evidence itself
    has stopped changing in working precision (|dL / n| <= 8 eps (1 + |L / n|)). The second rule ends the
    iterations that run towards an edge of the domain (see ``supremum``), where t keeps shrinking or growing by
    a nearly constant factor while L converges.

    Returns:
        (a, b, L / n at (a, b), num_iter, converged) at the last iterate.
    """
    dtype = b0.dtype
    tiny = jnp.finfo(dtype).tiny
    huge = 1.0 / tiny
    settle = 8 * jnp.finfo(dtype).eps

    def cond(state):
        _, _, _, it, done, stuck = state
        return ~done & ~stuck & (it < max_iter)

    def body(state):
        a, b, ev_prev, it, _, _ = state
        p = stats(a, b)
        ev = log_evidence_per_sample(a, b, p, n=n, d=d)
        # Floors at the smallest normal number only keep a division by an exact zero finite; unlike an
        # epsilon added to the denominator they do not break the scale invariance of the maximised evidence.
        a_new = jnp.clip(p.gamma / jnp.maximum(p.mm, tiny), tiny, huge)
        b_new = jnp.clip(p.n_minus_gamma / jnp.maximum(p.res, tiny), tiny, huge)
        # Running towards an edge of the domain, the statistics can lose all precision (n - gamma in the
        # naive algorithm, a failed Cholesky factorisation): stop at the last valid iterate. ``supremum`` then
        # compares it with the edge limits.
        stuck = ~(jnp.isfinite(a_new) & jnp.isfinite(b_new) & (p.n_minus_gamma > 0) & jnp.isfinite(ev))
        a_new, b_new = jnp.where(stuck, a, a_new), jnp.where(stuck, b, b_new)
        t, t_new = a / b, a_new / b_new
        settled = jnp.abs(ev - ev_prev) <= settle * (1 + jnp.abs(ev))
        done = ~stuck & ((jnp.abs(t_new - t) <= tol * t) | settled)
        return a_new, b_new, ev, it + 1, done, stuck

    false = jnp.zeros((), bool)
    init = (a0, b0, jnp.full((), jnp.inf, dtype), jnp.zeros((), jnp.int32), false, false)
    a, b, _, it, done, _ = jax.lax.while_loop(cond, body, init)
    return a, b, log_evidence_per_sample(a, b, stats(a, b), n=n, d=d), it, done


def gaussian_evidence_per_sample(n: int, quad: jax.Array, logdet: jax.Array) -> jax.Array:
    """max over c of log N(y; 0, c^-1 K) / n, for y^T K^-1 y = ``quad`` and log det K = ``logdet``.

    The maximiser is c = n / quad. Both limits of L(a, b) at the edge of its domain have this form:
    a -> inf (the features are ignored, w = 0) with K = I, and b -> inf (noise-free interpolation, finite only
    when F F^T is invertible) with K = F F^T and c = a.
    """
    return 0.5 * jnp.log(n / quad) - 0.5 - 0.5 * _LOG_2PI - (0.5 / n) * logdet


def supremum(
    interior: LogMEEvidence,
    *,
    n: int,
    yy: jax.Array,
    noise_free: LogMEEvidence | None,
    tol: float,
) -> LogMEEvidence:
    """Picks, per target, the largest of the fixed point's value and the two edge limits of the evidence.

    The fixed point can run towards the edge of the (a, b) domain: a -> inf when the features carry no more
    information about the target than chance, b -> inf when n <= D and the target can be interpolated exactly.
    The evidence then increases towards a finite limit without the iteration ever meeting its stopping rule;
    the supremum is that limit, which is computed in closed form here (``gaussian_evidence_per_sample``).
    Which value is returned is visible in ``alpha`` / ``beta``: ``inf`` marks an edge. A target whose last
    iterate is within ``0.01 tol (1 + |L / n|)`` of an edge value counts as converged (to that edge).
    """
    null = LogMEEvidence(
        evidence=gaussian_evidence_per_sample(n, yy, jnp.zeros_like(yy)),
        alpha=jnp.full_like(yy, jnp.inf),
        beta=n / yy,
        weights=jnp.zeros_like(interior.weights),
        num_iter=interior.num_iter,
        converged=jnp.ones_like(interior.converged),
    )
    best = interior
    for edge in (null, noise_free):
        if edge is None:
            continue
        near = jnp.abs(edge.evidence - interior.evidence) <= 0.01 * tol * (1 + jnp.abs(interior.evidence))
        best = dataclasses.replace(best, converged=best.converged | near)
        take = (edge.evidence > best.evidence) | jnp.isnan(best.evidence)
        best = jax.tree.map(
            lambda e, x, take=take: jnp.where(take.reshape(take.shape + (1,) * (x.ndim - 1)), e, x),
            edge,
            best,
        )
    return best


def check_result(result: LogMEEvidence, max_iter: int, method: str) -> None:
    """Raises on a non-finite evidence (never returned silently); warns about targets that hit ``max_iter``."""
    if isinstance(result.converged, jax.core.Tracer):
        return
    bad = np.flatnonzero(~np.isfinite(np.asarray(result.evidence)))
    if bad.size:
        hint = (
            " The naive method factorises a I + b F^T F, which is too ill-conditioned here in "
            f"{result.evidence.dtype}: use method='optimized' or float64 (jax_enable_x64)."
            if method == "naive"
            else " Please report this with the shapes and scale of your features."
        )
        raise FloatingPointError(f"LogME: the evidence of target(s) {bad[:10].tolist()} is not finite.{hint}")
    stuck = np.flatnonzero(~np.asarray(result.converged))
    if stuck.size:
        warnings.warn(
            f"LogME: the evidence iteration of target(s) {stuck[:10].tolist()} did not converge in "
            f"max_iter={max_iter} iterations; the score is that of the last iterate. Raise max_iter.",
            RuntimeWarning,
            stacklevel=3,
        )
