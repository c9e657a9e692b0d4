"""The naive LogME algorithm: every evaluation of the evidence factorises a D x D matrix.

Each evaluation of the profile evidence P(u) (see ``_profile``) at t = a / b = e^u takes a Cholesky factorisation
L L^T = F^T F + t I: Q(t) = y^T y - ||L^-1 F^T y||^2 and log det(I + F^T F / t) = 2 sum log diag L - D log t
(for n <= D the n x n F F^T + t I instead, with Q(t) = t ||L^-1 y||^2: no difference to lose precision in).
A grid of ``GRID_SIZE`` such factorisations, shared by the K targets, brackets each target's global maximum, which
golden-section search then refines with one factorisation per step. Cost: the Gram matrix once (n D^2), then
(G + K T) D^3 / 3 for T golden-section steps: the reference that the optimised algorithm (one eigendecomposition,
O(D) per evaluation) is measured against (bench/), and an independent numerical path in the tests. It needs a
well-conditioned F^T F + t I: where the factorisation fails the point is skipped; in float32 it loses precision
(Q is a difference) where the optimised method does not. It does not detect exact fits (``exact_fit`` is False).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtransfer.score._evidence import LogMEEvidence
from jaxtransfer.score._profile import best_of, noise_free_evidence, null_evidence, refine_maximum
from jaxtransfer.score._targets import Dense, OneHot

__all__: list[str] = []

_HI = jax.lax.Precision.HIGHEST
GRID_SIZE = 64
_MARGIN = 12.0


def naive_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target, one after another (``lax.map``), with explicit factorisations."""
    n, d = features.shape
    dtype = features.dtype
    dual = n <= d
    # Primal: M = F^T F (D x D), Q = y^T y - ||L^-1 F^T y||^2. Dual (n <= D, where that difference would lose
    # all precision near the b -> inf edge): M = F F^T (n x n), Q = t ||L^-1 y||^2. det(I + M / t) is the same.
    if dual:
        mat = jnp.matmul(features, features.T, precision=_HI)
        rhs = jnp.stack([targets.column(k, dtype) for k in range(targets.num_targets)], axis=1)  # (n, K)
    else:
        mat = jnp.matmul(features.T, features, precision=_HI)
        rhs = targets.project(features)  # (D, K) = F^T Y
    size = mat.shape[0]
    yy = targets.sq_norms(dtype)
    eye = jnp.eye(size, dtype=dtype)
    tr = jnp.maximum(jnp.trace(mat), jnp.finfo(dtype).tiny)

    def profile(u, c, yy):
        """P(u) for the targets whose right-hand sides are the columns of c; also Q and (M + t I)^-1 c."""
        t = jnp.exp(u)
        chol = jnp.linalg.cholesky(mat + t * eye)
        proj = jax.scipy.linalg.solve_triangular(chol, c, lower=True)
        sq = jnp.sum(jnp.square(proj), axis=0)
        q = t * sq if dual else yy - sq
        value = null_evidence(n, q) - (0.5 / n) * (2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))) - size * u)
        value = jnp.where((q > 0) & jnp.isfinite(value), value, -jnp.inf)
        return value, q, jax.scipy.linalg.solve_triangular(chol.T, proj, lower=False)

    # t from tr(M) size eps (below it M + t I is singular in working precision) to tr(M) e^M.
    grid = jnp.linspace(jnp.log(tr * size * jnp.finfo(dtype).eps), jnp.log(tr) + _MARGIN, GRID_SIZE, dtype=dtype)
    values = jax.lax.map(lambda u: profile(u, rhs, yy)[0], grid)  # (G, K)

    # b -> inf edge, defined when F F^T (n x n) is invertible.
    if dual:
        chol_k = jnp.linalg.cholesky(mat)
        logdet_k = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_k)))

    def one_target(k):
        c, yk = jax.lax.dynamic_slice_in_dim(rhs, k, 1, axis=1), yy[k]
        u, f, it, converged = refine_maximum(
            lambda u: profile(u, c, yk)[0][0], grid, values[:, k], tol=tol, max_iter=max_iter
        )
        _, q, m = profile(u, c, yk)
        m = jnp.matmul(features.T, m, precision=_HI) if dual else m  # the posterior mean (D, 1)
        b = n / q[0]
        f_null = null_evidence(n, yk)
        f_free, a_free, m_free = -jnp.inf, jnp.inf, jnp.zeros((d,), dtype)
        if dual:
            y = c[:, 0]
            k_inv_y = jax.scipy.linalg.cho_solve((chol_k, True), y)
            quad = jnp.dot(y, k_inv_y)
            f_free = noise_free_evidence(n, quad, logdet_k)
            f_free = jnp.where(jnp.isfinite(f_free), f_free, -jnp.inf)  # singular F F^T: no finite edge
            a_free, m_free = n / quad, jnp.matmul(features.T, k_inv_y, precision=_HI)
        evidence, take_null, take_free = best_of(f, f_null, f_free)
        alpha = jnp.where(take_null, jnp.inf, jnp.where(take_free, a_free, jnp.exp(u) * b))
        beta = jnp.where(take_null, n / yk, jnp.where(take_free, jnp.inf, b))
        weights = jnp.where(take_null, 0.0, jnp.where(take_free, m_free, m[:, 0]))
        return LogMEEvidence(evidence, alpha, beta, weights, it, converged | take_null | take_free, jnp.zeros((), bool))

    return jax.lax.map(one_target, jnp.arange(targets.num_targets))
