"""The optimised LogME algorithm: one eigendecomposition, then O(r) work per target per profile evaluation.

Centred primal form (n > D, and the sufficient statistics): C^T C = V diag(s) V^T with C = F - 1 mu^T,
z = V^T C^T y (D,); the profile weights are w_i = z_i^2 / s_i, the centred least-squares residual
q0 = ||y_c||^2 - sum_i w_i (a difference: floored in ``_profile``), and the mean enters as an exact rank-one term.
Dual form (n <= D): F F^T = U diag(s) U^T (n x n, the same non-zero eigenvalues), p = U^T y,
w_i = p_i^2 and q0 = the sum of p_i^2 over zero eigenvalues (no cancellation). Eigenvalues that are zero to
working precision (``spectrum_cutoff``) are set to exactly 0, and the D - r zero eigenvalues of F^T F drop out of
the profile exactly, so nothing is over-counted when n < D (the published fast path drops the log a terms of
those eigenvalues and over-estimates the score). The global maximum over a / b is found per target by
``_profile.maximize_profiles`` (the K targets share one grid evaluation, a matrix product). The posterior mean
at t = a / b is m = V z / (t + s) (primal) or F^T U p / (t + s) (dual, by the push-through identity
(a I + b F^T F)^-1 F^T = F^T (a I + b F F^T)^-1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtransfer.score._evidence import LogMEEvidence
from jaxtransfer.score._profile import MeanPart, maximize_profiles, spectrum_cutoff
from jaxtransfer.score._targets import Dense, OneHot

__all__: list[str] = []

_HI = jax.lax.Precision.HIGHEST


def _clean_spectrum(s: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """(eigenvalues with those below the rank cutoff set to 0, mask of the positive ones)."""
    s = jnp.where(spectrum_cutoff(s, size), 0.0, jnp.maximum(s, 0.0))
    return s, s > 0


def _coefficients(x: jax.Array, s: jax.Array, pos: jax.Array, t: jax.Array) -> jax.Array:
    """(r, K) x / (t + s) on the positive eigenvalues (0 elsewhere): 0 at t = inf, x / s at t = 0."""
    return jnp.where(pos[:, None], x / (t[None, :] + jnp.where(pos, s, 1.0)[:, None]), 0.0)


def dual_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from the n x n Gram matrix F F^T (for n <= D)."""
    n = features.shape[0]
    yy = targets.sq_norms(features.dtype)
    s, u = jnp.linalg.eigh(jnp.matmul(features, features.T, precision=_HI))
    s, pos = _clean_spectrum(s, n)
    p = targets.project(u)  # (n, K) = U^T Y
    pp = jnp.square(p)
    w = jnp.where(pos[:, None], pp, 0.0)
    q0 = jnp.sum(jnp.where(pos[:, None], 0.0, pp), axis=0)
    res = maximize_profiles(s, w, q0, yy, n=n, tol=tol, max_iter=max_iter)
    coef = _coefficients(p, s, pos, res.t)
    weights = jnp.matmul(features.T, jnp.matmul(u, coef, precision=_HI), precision=_HI).T
    return LogMEEvidence(res.evidence, res.alpha, res.beta, weights, res.num_iter, res.converged, res.exact_fit)


def centred_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from the eigendecomposition of the centred Gram matrix (n > D).

    F^T F = C^T C + n mu mu^T with C = F - 1 mu^T (``_profile.MeanPart``). Features with a large shared mean
    (pooled ReLU activations) have a Gram matrix whose spread is a small fraction of its norm; float32 loses that
    spread in F^T F but keeps it in C^T C. The result is the same evidence, more precise.
    """
    n = features.shape[0]
    dtype = features.dtype
    mu = jnp.mean(features, axis=0)
    c = features - mu[None, :]
    return moments_evidence(
        jnp.matmul(c.T, c, precision=_HI),
        mu,
        targets.project(c),  # C^T y_c = C^T y (the columns of C sum to zero)
        targets.sums(dtype),
        targets.sq_norms(dtype),
        targets.centred_sq_norms(dtype),
        n,
        tol=tol,
        max_iter=max_iter,
    )


def moments_evidence(
    gram_c, mu, cross_c, sums, yy, yc_sq, n, *, tol: float, max_iter: int, weights: bool = True
) -> LogMEEvidence:
    """Maximised evidence of every target from centred moments (what ``centred_evidence`` and the streaming
    statistics compute).

    Args:
        gram_c: (D, D) C^T C with C = F - 1 mu^T.
        mu: (D,) the feature means.
        cross_c: (D, K) C^T Y.
        sums: (K,) 1^T y_k;  yy: (K,) y_k^T y_k;  yc_sq: (K,) ||y_k - mean(y_k)||^2.
        n: the number of samples.
        weights: compute the posterior mean weights (D^2 K work); with ``False`` the result's ``weights`` is
            ``None`` (what the score alone needs).
    """
    d = gram_c.shape[0]
    ybar = sums / n
    s, v = jnp.linalg.eigh(gram_c)
    s, pos = _clean_spectrum(s, d)
    zc = jnp.matmul(v.T, cross_c, precision=_HI)  # (D, K)
    zc = jnp.where(pos[:, None], zc, 0.0)
    w = jnp.where(pos[:, None], jnp.square(zc) / jnp.where(pos, s, 1.0)[:, None], 0.0)
    q0 = yc_sq - jnp.sum(w, axis=0)  # ||y_c||^2 - sum_i w_i
    mu_r = jnp.matmul(v.T, mu, precision=_HI)  # (D,)
    mean = MeanPart(jnp.square(mu_r), mu_r[:, None] * zc, ybar)
    res = maximize_profiles(s, w, q0, yy, n=n, tol=tol, max_iter=max_iter, mean=mean)
    if not weights:
        return LogMEEvidence(res.evidence, res.alpha, res.beta, None, res.num_iter, res.converged, res.exact_fit)
    # Posterior mean m = (F^T F + t I)^-1 F^T y by Sherman-Morrison on M = C^T C + t I.
    t = jnp.where(jnp.isfinite(res.t), res.t, 0.0)
    inv = jnp.where(pos[:, None] | (t[None, :] > 0), 1.0 / (t[None, :] + s[:, None]), 0.0)  # (D, K)
    rhs = zc + n * ybar[None, :] * mu_r[:, None]  # V^T F^T y
    m_inv_rhs = inv * rhs
    m_inv_mu = inv * mu_r[:, None]
    coef = (
        m_inv_rhs
        - m_inv_mu
        * (n * jnp.sum(mu_r[:, None] * m_inv_rhs, axis=0) / (1.0 + n * jnp.sum(mu_r[:, None] * m_inv_mu, axis=0)))[
            None, :
        ]
    )
    coef = jnp.where(jnp.isfinite(res.t)[None, :], coef, 0.0)
    weights = jnp.matmul(v, coef, precision=_HI).T
    return LogMEEvidence(res.evidence, res.alpha, res.beta, weights, res.num_iter, res.converged, res.exact_fit)


def optimized_evidence(features: jax.Array, targets: OneHot | Dense, *, tol: float, max_iter: int) -> LogMEEvidence:
    """Maximised evidence of every target from one eigendecomposition (dual if n <= D, else the centred primal)."""
    n, d = features.shape
    if n <= d:
        return dual_evidence(features, targets, tol=tol, max_iter=max_iter)
    return centred_evidence(features, targets, tol=tol, max_iter=max_iter)
