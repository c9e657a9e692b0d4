"""The naive LogME algorithm: per target and per iteration, form A = a I + b F^T F and factorise it.

Cost: the Gram matrix once (n D^2), then for each of the K targets and each iteration a Cholesky factorisation
and inverse of A (D^3) and a residual (n D): O(n D^2 + K T (D^3 + n D)) for T iterations. Kept as the reference
that the optimised algorithm is measured against (bench/) and as an independent path in the tests. It needs a
well-conditioned A: in float32 it breaks down (NaN, reported as an error) where the optimised method does not.
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


def naive_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target, one after another (``lax.map``), with explicit solves."""
    n, d = features.shape
    dtype = features.dtype
    gram = jnp.matmul(features.T, features, precision=_HI)
    eye = jnp.eye(d, dtype=dtype)
    tr_gram = jnp.trace(gram)
    eps = jnp.finfo(dtype).eps
    # Noise-free edge (b -> inf), defined when F F^T (n x n) is invertible.
    chol_k = jnp.linalg.cholesky(jnp.matmul(features, features.T, precision=_HI)) if n <= d else None

    def one_target(k):
        y = targets.column(k, dtype)
        fty = jnp.matmul(features.T, y, precision=_HI)

        def factor(a, b):
            chol = jnp.linalg.cholesky(a * eye + b * gram)
            return chol, b * jax.scipy.linalg.cho_solve((chol, True), fty)

        def stats(a, b):
            chol, m = factor(a, b)
            gamma = d - a * jnp.trace(jax.scipy.linalg.cho_solve((chol, True), eye))
            res = jnp.sum(jnp.square(jnp.matmul(features, m, precision=_HI) - y))
            # Once cond(A) <= 1 + b tr(F^T F) / a passes 1 / eps, A is singular in working precision and its
            # factorisation is noise: report it as a lost iterate (NaN), the loop stops there.
            res = jnp.where(b * tr_gram * eps > a, jnp.nan, res)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
            return Pieces(gamma, n - gamma, jnp.dot(m, m), res, logdet)

        a0, b0 = initial_point(n, d, jnp.dot(y, y), tr_gram)
        a, b, ev, it, done = maximize_evidence(stats, a0, b0, n=n, d=d, tol=tol, max_iter=max_iter)
        interior = LogMEEvidence(ev, a, b, factor(a, b)[1], it, done)
        noise_free = None
        if chol_k is not None:
            k_inv_y = jax.scipy.linalg.cho_solve((chol_k, True), y)
            quad = jnp.dot(y, k_inv_y)
            ev_nf = gaussian_evidence_per_sample(n, quad, 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_k))))
            ev_nf = jnp.where(jnp.isfinite(ev_nf), ev_nf, -jnp.inf)  # singular F F^T: no finite edge
            m_nf = jnp.matmul(features.T, k_inv_y, precision=_HI)
            noise_free = LogMEEvidence(ev_nf, n / quad, jnp.full_like(a, jnp.inf), m_nf, it, jnp.ones_like(done))
        batch = jax.tree.map(lambda x: x[None], (interior, noise_free))
        out = supremum(batch[0], n=n, yy=jnp.dot(y, y)[None], noise_free=batch[1], tol=tol)
        return jax.tree.map(lambda x: x[0], out)

    return jax.lax.map(one_target, jnp.arange(targets.num_targets))
