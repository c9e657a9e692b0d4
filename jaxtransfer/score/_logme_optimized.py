"""The optimised LogME algorithm: one eigendecomposition, then O(r) work per target per iteration.

Primal form (n > D): F^T F = V diag(s) V^T, z = V^T F^T y (D,). Written with t = a / b so that nothing
overflows when b grows large,

    gamma = sum_i s_i / (t + s_i),        n - gamma = n - D + sum_i t / (t + s_i),
    m^T m = sum_i z_i^2 / (t + s_i)^2,    log det A = D log b + sum_i log(t + s_i),
    ||F m - y||^2 = y^T y - sum_i z_i^2 (2 t + s_i) / (t + s_i)^2.

Dual form (n <= D): F F^T = U diag(s) U^T (n x n, the same non-zero eigenvalues), p = U^T y (n,),
z_i^2 = s_i p_i^2. The residual then has a form without cancellation, sum_i p_i^2 (t / (t + s_i))^2, and the
D - n eigenvalues of F^T F that are zero still enter log det A as log a each (the published fast path drops them
and over-estimates the score when n < D). The posterior mean is m = V z / (t + s) (primal) or F^T U p / (t + s)
(dual, by the push-through identity (a I + b F^T F)^-1 F^T = F^T (a I + b F F^T)^-1). The K targets run together
under ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtransfer.score._evidence import (
    LogMEEvidence,
    Pieces,
    gaussian_evidence_per_sample,
    initial_point,
    maximize_evidence,
    supremum,
)
from jaxtransfer.score._targets import Dense, OneHot

__all__: list[str] = []

_HI = jax.lax.Precision.HIGHEST


def _solve(s, zz, yy, pp, *, n, d, tol, max_iter):
    """One target: s (r,) eigenvalues, zz (r,) = z^2, yy = y^T y, pp (r,) = p^2 in the dual form else None."""
    r = s.shape[0]
    tiny = jnp.finfo(s.dtype).tiny

    def stats(a, b):
        t = a / b
        ts = t + s
        gamma = jnp.sum(s / ts)
        n_minus_gamma = (n - r) + jnp.sum(t / ts)
        mm = jnp.sum(zz / jnp.square(ts))
        if pp is None:
            # A difference: at a near-perfect fit float rounding can leave it <= 0.
            res = jnp.maximum(yy - jnp.sum(zz * (2.0 * t + s) / jnp.square(ts)), tiny)
        else:
            res = jnp.sum(pp * jnp.square(t / ts))
        logdet = d * jnp.log(b) + jnp.sum(jnp.log(ts)) + (d - r) * jnp.log(t)
        return Pieces(gamma, n_minus_gamma, mm, res, logdet)

    a0, b0 = initial_point(n, d, yy, jnp.sum(s))
    a, b, ev, it, done = maximize_evidence(stats, a0, b0, n=n, d=d, tol=tol, max_iter=max_iter)
    return ev, a, b, it, done


def primal_evidence(gram: jax.Array, cross: jax.Array, yy: jax.Array, n, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from the sufficient statistics of the primal form.

    Args:
        gram: (D, D) F^T F.
        cross: (D, K) F^T Y.
        yy: (K,) y_k^T y_k.
        n: number of samples (a Python number or a scalar array).
    """
    d = gram.shape[0]
    s, v = jnp.linalg.eigh(gram)
    s = jnp.maximum(s, 0.0)
    z = jnp.matmul(v.T, cross, precision=_HI)  # (D, K)
    solve = jax.vmap(lambda zz, yy: _solve(s, zz, yy, None, n=n, d=d, tol=tol, max_iter=max_iter), in_axes=(1, 0))
    ev, a, b, it, done = solve(jnp.square(z), yy)
    coef = z / ((a / b)[None, :] + s[:, None])  # (D, K): column k is b z_k / (a + b s)
    weights = jnp.matmul(v, coef, precision=_HI).T
    return supremum(LogMEEvidence(ev, a, b, weights, it, done), n=n, yy=yy, noise_free=None, tol=tol)


def dual_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from the n x n Gram matrix F F^T (for n <= D)."""
    n, d = features.shape
    dtype = features.dtype
    yy = targets.sq_norms(dtype)
    s, u = jnp.linalg.eigh(jnp.matmul(features, features.T, precision=_HI))
    s = jnp.maximum(s, 0.0)
    p = targets.project(u)  # (n, K) = U^T Y
    pp = jnp.square(p)
    solve = jax.vmap(lambda zz, yy, pp: _solve(s, zz, yy, pp, n=n, d=d, tol=tol, max_iter=max_iter), in_axes=(1, 0, 1))
    ev, a, b, it, done = solve(s[:, None] * pp, yy, pp)
    coef = p / ((a / b)[None, :] + s[:, None])
    weights = jnp.matmul(features.T, jnp.matmul(u, coef, precision=_HI), precision=_HI).T
    interior = LogMEEvidence(ev, a, b, weights, it, done)
    # Noise-free edge: y^T (F F^T)^-1 y = sum p^2 / s, finite only when F F^T is numerically invertible.
    invertible = s[0] > s[-1] * n * jnp.finfo(dtype).eps
    s_safe = jnp.where(invertible, s, 1.0)
    quad = jnp.sum(pp / s_safe[:, None], axis=0)
    ev_nf = gaussian_evidence_per_sample(n, quad, jnp.sum(jnp.log(s_safe)))
    noise_free = LogMEEvidence(
        evidence=jnp.where(invertible, ev_nf, -jnp.inf),
        alpha=n / quad,
        beta=jnp.full_like(a, jnp.inf),
        weights=jnp.matmul(features.T, jnp.matmul(u, p / s_safe[:, None], precision=_HI)).T,
        num_iter=it,
        converged=jnp.ones_like(done),
    )
    return supremum(interior, n=n, yy=yy, noise_free=noise_free, tol=tol)


def optimized_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from one eigendecomposition (primal if n > D, else dual)."""
    n, d = features.shape
    if n <= d:
        return dual_evidence(features, targets, tol=tol, max_iter=max_iter)
    gram = jnp.matmul(features.T, features, precision=_HI)
    return primal_evidence(
        gram, targets.project(features), targets.sq_norms(features.dtype), n, tol=tol, max_iter=max_iter
    )
