"""The global maximum of the LogME evidence, through its profile in t = a / b.

For a fixed ratio t = a / b the evidence L(a, b) is maximised over b in closed form, b = n / Q(t), with

    Q(t) = y^T y - y^T F (F^T F + t I)^-1 F^T y = q0 + sum_i w_i t / (t + s_i),

where s_i > 0 are the positive eigenvalues of F^T F (or, equally, of F F^T), w_i >= 0 the share of y^T y along
eigenvector i (primal form: w_i = z_i^2 / s_i with z = V^T F^T y; dual form: w_i = p_i^2 with p = U^T y), and
q0 >= 0 the part of y^T y that no linear function of the features explains (the least-squares residual).
Substituting b gives the profile, a smooth function of one variable u = log t:

    P(u) = max_b L(t b, b) / n = 1/2 (log n - log Q(t) - 1 - log 2 pi) - 1/(2n) sum_i log(1 + s_i / t).

Every term is a sum of positive numbers (no cancellation in any precision), and the D - r zero eigenvalues drop
out exactly (log(1 + 0 / t) = 0). P'(u) = gamma / n - t m^T m / Q(t) vanishes exactly at MacKay's fixed point
(You et al., 2021, Algorithm 1), so the maxima of P are the fixed points of the published iteration; but the
evidence can have several of them (seen on real low-level features), and the iteration ends in whichever basin
its start lies in. Here P is evaluated on a grid of ``GRID_SIZE`` points in u that covers the whole eigenvalue
range with margin (the function is monotone outside it), the best grid point is bracketed by its neighbours and
refined by golden-section search to a bracket of width ``tol`` in u (t known to a relative ``tol``), then by one
parabolic step. The two edges of the domain are candidates too:

- u -> +inf (a -> inf, w = 0, "no information"): P -> 1/2 (log(n / y^T y) - 1 - log 2 pi);
- u -> -inf (b -> inf, noise-free interpolation): finite only when all n eigenvalues of F F^T are positive
  (dual form, q0 = 0): P -> 1/2 (log n - log sum_i w_i / s_i - 1 - log 2 pi) - 1/(2n) sum_i log s_i.

When fewer than n eigenvalues are positive and q0 = 0 the target is an exact linear function of the features and
the evidence is unbounded above (b -> inf). In floating point q0 is then rounding noise; it is floored at
r eps y^T y (the rounding level of its computation), which keeps the maximum finite, and the target is flagged
(``exact_fit``) so that the caller can warn that the value is limited by precision rather than by the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__: list[str] = []

_LOG_2PI = math.log(2 * math.pi)
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0

GRID_SIZE = 256
# Points of each target's own grid below the spectrum, where its profile is smooth (at most one maximum there).
_LOW_GRID = 16
_HI = jax.lax.Precision.HIGHEST
# Margin of the grid beyond the eigenvalue range, in units of log t: outside [log s_min - M, log s_max + M] every
# term of P'(u) is within e^-M of its limit, so P is monotone there up to that relative amount.
_MARGIN = 12.0


def refine_maximum(
    profile: Callable[[jax.Array], jax.Array], grid: jax.Array, values: jax.Array, *, tol: jax.Array, max_iter: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Refines the best point of a grid of a 1-D function: golden section on its neighbours, then a parabolic step.

    Args:
        profile: scalar function of u (-inf where it cannot be evaluated).
        grid: (G,) increasing points, G >= 3; values: (G,) the function there.
        tol: width of the final bracket; max_iter: cap on golden-section iterations.

    Returns:
        (u, value at u, golden-section iterations, whether the bracket shrank to ``tol``).
    """
    size = grid.shape[0]
    j = jnp.clip(jnp.argmax(values), 1, size - 2)
    lo, hi = grid[j - 1], grid[j + 1]
    x1, x2 = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    init = (lo, x1, x2, hi, values[j - 1], profile(x1), profile(x2), values[j + 1], jnp.zeros((), jnp.int32))

    def cond(state):
        lo, _, _, hi, *_, it = state
        return (hi - lo > tol) & (it < max_iter)

    def body(state):
        lo, x1, x2, hi, f_lo, f1, f2, f_hi, it = state
        left = f1 >= f2  # the maximum lies in [lo, x2]
        lo, hi = jnp.where(left, lo, x1), jnp.where(left, x2, hi)
        f_lo, f_hi = jnp.where(left, f_lo, f1), jnp.where(left, f2, f_hi)
        new = jnp.where(left, hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo))
        f_new = profile(new)
        x1, x2 = jnp.where(left, new, x2), jnp.where(left, x1, new)
        f1, f2 = jnp.where(left, f_new, f2), jnp.where(left, f1, f_new)
        return lo, x1, x2, hi, f_lo, f1, f2, f_hi, it + 1

    lo, x1, x2, hi, f_lo, f1, f2, f_hi, it = jax.lax.while_loop(cond, body, init)
    # One parabolic step through the best point and its neighbours (exact for a quadratic peak).
    xs = jnp.stack([lo, x1, x2, hi])
    fs = jnp.stack([f_lo, f1, f2, f_hi])
    k = jnp.clip(jnp.argmax(fs), 1, 2)
    idx = jnp.stack([k - 1, k, k + 1])
    (xa, xb, xc), (fa, fb, fc) = xs[idx], fs[idx]
    num = (xb - xa) ** 2 * (fb - fc) - (xb - xc) ** 2 * (fb - fa)
    den = (xb - xa) * (fb - fc) - (xb - xc) * (fb - fa)
    ok = jnp.isfinite(num) & jnp.isfinite(den) & (den != 0)
    xv = xb - 0.5 * num / jnp.where(ok, den, 1.0)
    xv = jnp.where(ok & (xv > xa) & (xv < xc), xv, xb)
    cand_x = jnp.concatenate([xs, xv[None], grid[j][None]])
    cand_f = jnp.concatenate([fs, profile(xv)[None], values[j][None]])
    best = jnp.argmax(cand_f)
    return cand_x[best], cand_f[best], it, hi - lo <= tol


class ProfileMaximum(NamedTuple):
    """The maximum of one target's profile: value per sample, where it is, and how it was found."""

    evidence: jax.Array  # max_u P(u), or an edge limit
    alpha: jax.Array  # a at the maximum (inf at the a -> inf edge)
    beta: jax.Array  # b = n / Q(t) at the maximum (inf at the b -> inf edge)
    t: jax.Array  # a / b at the maximum (inf: the a -> inf edge; 0: the b -> inf edge)
    num_iter: jax.Array  # golden-section iterations
    converged: jax.Array  # the bracket shrank to ``tol`` within ``max_iter``
    exact_fit: jax.Array  # q0 was at rounding level with fewer than n positive eigenvalues: unbounded evidence


def spectrum_cutoff(s: jax.Array, size: int) -> jax.Array:
    """Eigenvalues of a Gram matrix that are zero to working precision: s_i <= s_max size eps (numpy's rank rule)."""
    return s <= jnp.max(s) * size * jnp.finfo(s.dtype).eps


class MeanPart(NamedTuple):
    """The rank-one mean term when the spectrum is that of the centred Gram matrix C^T C (see ``maximize_profile``)."""

    mu_sq: jax.Array  # (r,) (W^T mu)_i^2 over all eigenvectors W of C^T C, zero eigenvalues included
    mu_c: jax.Array  # (r, K) (W^T mu)_i (W^T C^T y_k)_i
    ybar: jax.Array  # (K,) the means of the targets


def maximize_profiles(
    s: jax.Array,
    w: jax.Array,
    q0: jax.Array,
    yy: jax.Array,
    *,
    n,
    tol: jax.Array,
    max_iter: int,
    mean: MeanPart | None = None,
) -> ProfileMaximum:
    """The global maximum over u = log(a / b) of the profile evidence P(u) of each of K targets.

    With ``mean``, ``s``, ``w`` and ``q0`` describe the centred problem (C = F - 1 mu^T, y_c = y - ybar): F^T F =
    C^T C + n mu mu^T is a rank-one update, and with M = C^T C + t I, w_c = M^-1 C^T y_c, alpha = mu^T M^-1 mu,

        Q(t) = Q_c(t) + n (ybar - mu^T w_c)^2 / (1 + n alpha),
        log det(I + F^T F / t) = log det(M / t) + log(1 + n alpha)

    (adding the row sqrt(n) mu with target sqrt(n) ybar to a ridge problem; the matrix determinant lemma). Every
    term stays a sum of positive numbers, and the eigendecomposition is that of C^T C, whose small eigenvalues
    float32 resolves where those of F^T F (dominated by n mu mu^T for features with a large mean) are lost.

    The targets share the eigenvalues, so the main grid (``GRID_SIZE`` points over the eigenvalue range with
    margin) is evaluated for all of them at once: sigmoid(u_g - log s_i) is one (G, r) matrix and the sums over
    the spectrum are a (G, r) x (r, K) matrix product, O(G r) transcendentals in all instead of O(G r K). Each
    target adds ``_LOW_GRID`` points of its own below the spectrum (where its profile may still rise, see the
    module docstring), then its refinement.

    Args:
        s: (r,) eigenvalues, exactly 0 where they are zero to working precision.
        w: (r, K) non-negative weights of y_k^T y_k along the eigenvectors, 0 where ``s`` is 0.
        q0: (K,) >= 0, the least-squares residuals y_k^T y_k - sum_i w_ik.
        yy: (K,) y_k^T y_k > 0.
        n: number of samples (a Python number or a traced scalar).
        tol: width of the final bracket in log t.
        max_iter: cap on golden-section iterations.
        mean: ``MeanPart`` with ``mu_sq`` (r,), ``mu_c`` (r, K) and ``ybar`` (K,), or None.

    Returns:
        A :class:`ProfileMaximum` whose fields are (K,).
    """
    dtype = s.dtype
    eps = jnp.finfo(dtype).eps
    pos = s > 0
    r = jnp.sum(pos, dtype=dtype)  # the rank, as a float: it enters the bounds below
    ls = jnp.where(pos, jnp.log(jnp.where(pos, s, 1.0)), -jnp.inf)
    s_safe = jnp.where(pos, s, 1.0)
    full_rank = r == n  # only possible in the dual form (n <= D): the b -> inf edge is finite
    floor = jnp.maximum(r, 1).astype(dtype) * eps * yy
    exact_fit = ~full_rank & (q0 <= floor)
    # With all n eigenvalues positive y lies in their span: q0 is 0 (what is computed is rounding noise).
    q0 = jnp.where(full_rank, 0.0, jnp.maximum(q0, floor))

    any_pos = r > 0
    ls_max = jnp.where(any_pos, jnp.max(ls), 0.0)
    ls_min = jnp.where(any_pos, jnp.min(jnp.where(pos, ls, jnp.inf)), 0.0)
    main = jnp.linspace(ls_min - _MARGIN, ls_max + _MARGIN, GRID_SIZE, dtype=dtype)  # (G,)

    # The main grid for every target at once.
    sig = jax.nn.sigmoid(main[:, None] - ls[None, :])  # (G, r): t / (t + s_i)
    log_det = jnp.sum(jax.nn.softplus(ls[None, :] - main[:, None]), axis=1)  # (G,) sum_i log(1 + s_i / t)
    q = q0[None, :] + jnp.matmul(sig, w, precision=_HI)  # (G, K)
    if mean is not None:
        inv = jnp.exp(-main)[:, None] * sig  # (G, r): 1 / (t + s_i), also for s_i = 0
        n_alpha = n * jnp.matmul(inv, mean.mu_sq, precision=_HI)  # (G,)
        fit = jnp.matmul(inv, mean.mu_c, precision=_HI)  # (G, K)
        q = q + n * jnp.square(mean.ybar[None, :] - fit) / (1.0 + n_alpha[:, None])
        log_det = log_det + jnp.log1p(n_alpha)
    main_values = null_evidence(n, q) - (0.5 / n) * log_det[:, None]  # (G, K)

    def one(w, q0, yy, floor, exact_fit, values, mu_c, ybar):
        def mean_terms(u):
            """(n alpha, n (ybar - mu^T w_c)^2 / (1 + n alpha)), or zeros without a mean part."""
            if mean is None:
                return 0.0, 0.0
            inv = jnp.exp(-u) * jax.nn.sigmoid(u - ls)  # 1 / (t + s_i), also for s_i = 0
            n_alpha = n * jnp.sum(mean.mu_sq * inv)
            return n_alpha, n * jnp.square(ybar - jnp.sum(mu_c * inv)) / (1.0 + n_alpha)

        def q_and_n_alpha(u):
            n_alpha, extra = mean_terms(u)
            return q0 + jnp.sum(w * jax.nn.sigmoid(u - ls)) + extra, n_alpha  # t / (t + s) = sigmoid(u - log s)

        def profile(u):
            q, n_alpha = q_and_n_alpha(u)
            return null_evidence(n, q) - (0.5 / n) * (jnp.sum(jax.nn.softplus(ls - u)) + jnp.log1p(n_alpha))

        # Below the spectrum: with q0 > 0 and r < n, P rises as t falls below s_min until
        # t* = r q0 / ((n - r) sum_i w_i / s_i), which can lie far below s_min when q0 is small.
        c = jnp.sum(jnp.where(pos, w / s_safe, 0.0))  # dQ/dt at t = 0
        t_star = r * q0 / (jnp.maximum(n - r, 1) * c)
        u_star = jnp.where(~full_rank & (c > 0) & (t_star > 0), jnp.log(t_star), jnp.inf)
        u_lo = jnp.minimum(ls_min - _MARGIN, u_star - 4.0)
        width = main[0] - u_lo
        low = u_lo + width * jnp.arange(_LOW_GRID, dtype=dtype) / _LOW_GRID  # (L,), below main[0]
        low_values = jnp.where(width > 0, jax.vmap(profile)(low), -jnp.inf)
        grid = jnp.concatenate([low, main])
        u_best, f_best, it, converged = refine_maximum(
            profile, grid, jnp.concatenate([low_values, values]), tol=tol, max_iter=max_iter
        )
        t_best, q_best = jnp.exp(u_best), q_and_n_alpha(u_best)[0]
        if mean is not None:  # the residual left at the smallest t must be at rounding level too for an exact fit
            exact_fit = exact_fit & (mean_terms(u_lo)[1] <= floor)

        # The edges.
        f_null = null_evidence(n, yy)
        quad = c  # y^T (F F^T)^-1 y: the same sum as dQ/dt at t = 0
        f_free = noise_free_evidence(n, quad, jnp.sum(jnp.where(pos, ls, 0.0)))
        f_free = jnp.where(full_rank, f_free, -jnp.inf)
        evidence, take_null, take_free = best_of(f_best, f_null, f_free)
        t = jnp.where(take_null, jnp.inf, jnp.where(take_free, 0.0, t_best))
        b_best = n / q_best
        alpha = jnp.where(take_null, jnp.inf, jnp.where(take_free, n / quad, t_best * b_best))
        beta = jnp.where(take_null, n / yy, jnp.where(take_free, jnp.inf, b_best))
        return ProfileMaximum(evidence, alpha, beta, t, it, converged | take_null | take_free, exact_fit & ~take_null)

    k = q0.shape[0]
    mu_c = mean.mu_c if mean is not None else jnp.zeros((1, k), dtype)
    ybar = mean.ybar if mean is not None else jnp.zeros((k,), dtype)
    return jax.vmap(one, in_axes=(1, 0, 0, 0, 0, 1, 1, 0))(w, q0, yy, floor, exact_fit, main_values, mu_c, ybar)


def maximize_profile(s, w, q0, yy, *, n, tol, max_iter, mean: MeanPart | None = None) -> ProfileMaximum:
    """One target's :func:`maximize_profiles`: ``w`` (r,), ``q0`` and ``yy`` scalars, ``mean.mu_c`` (r,)."""
    if mean is not None:
        mean = MeanPart(mean.mu_sq, mean.mu_c[:, None], jnp.reshape(mean.ybar, (1,)))
    res = maximize_profiles(
        s, w[:, None], jnp.reshape(q0, (1,)), jnp.reshape(yy, (1,)), n=n, tol=tol, max_iter=max_iter, mean=mean
    )
    return jax.tree.map(lambda a: a[0], res)


def null_evidence(n, yy: jax.Array) -> jax.Array:
    """The a -> inf limit of the evidence per sample (w = 0): max over b of log N(y; 0, b^-1 I) / n."""
    return 0.5 * (jnp.log(n / yy) - 1.0 - _LOG_2PI)


def noise_free_evidence(n, quad: jax.Array, logdet: jax.Array) -> jax.Array:
    """The b -> inf limit per sample: max over a of log N(y; 0, a^-1 F F^T) / n, for quad = y^T (F F^T)^-1 y."""
    return 0.5 * (jnp.log(n / quad) - 1.0 - _LOG_2PI) - (0.5 / n) * logdet


def best_of(interior: jax.Array, null: jax.Array, noise_free: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(largest value, whether it is the a -> inf edge, whether it is the b -> inf edge); NaN stays NaN."""
    take_null = (null >= interior) & (null >= noise_free)
    take_free = ~take_null & (noise_free > interior)
    value = jnp.where(take_null, null, jnp.where(take_free, noise_free, interior))
    return value, take_null, take_free
