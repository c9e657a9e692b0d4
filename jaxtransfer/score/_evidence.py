"""The result of LogME's evidence maximisation, and its check (shared by both methods).

Model (one target column y (n,), features F (n, D)): prior w ~ N(0, a^-1 I), noise y | F, w ~ N(F w, b^-1 I).
With A = a I + b F^T F and m = b A^-1 F^T y, the log evidence is

    L(a, b) = n/2 log b + D/2 log a - n/2 log 2pi - b/2 ||F m - y||^2 - a/2 m^T m - 1/2 log det A.

The published algorithm (You et al., 2021, Algorithm 1; MacKay, 1992) maximises it by the fixed point
gamma = sum_i b s_i / (a + b s_i), a <- gamma / m^T m, b <- (n - gamma) / ||F m - y||^2, which ends in a local
maximum that depends on its start; both methods here find the global maximum through the profile in a / b
(``_profile.py``), whose stationary points are exactly the fixed points of that iteration.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np

__all__ = ["LogMEEvidence"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LogMEEvidence:
    """Per-target result of the evidence maximisation (a pytree: passes through ``jit`` and ``vmap``).

    Attributes:
        evidence: (K,) maximised log evidence per sample, L_k(a_k, b_k) / n. LogME is its mean.
        alpha: (K,) prior precision a_k at the maximum.
        beta: (K,) noise precision b_k at the maximum.
        weights: (K, D) posterior mean weights m_k (a linear predictor of target k from the features).
        num_iter: (K,) golden-section iterations used to refine the maximum (0 at an edge found on the grid).
        converged: (K,) whether the maximum was located to a relative ``tol`` in a / b within ``max_iter`` (or
            is an edge of the domain).
        exact_fit: (K,) the target is a linear function of the features to working precision (least-squares
            residual at rounding level): its evidence is unbounded and the value returned is limited by the
            precision (a ``RuntimeWarning`` says so). Always False for ``method="naive"``.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer import logme_evidence
        >>> f = np.random.default_rng(0).normal(size=(30, 4))
        >>> res = logme_evidence(f, np.arange(30) % 3)  # three classes: K = 3 one-hot targets
        >>> res.evidence.shape, res.weights.shape, bool(res.converged.all())
        ((3,), (3, 4), True)
    """

    evidence: jax.Array
    alpha: jax.Array
    beta: jax.Array
    weights: jax.Array
    num_iter: jax.Array
    converged: jax.Array
    exact_fit: jax.Array


def check_result(
    result: LogMEEvidence, max_iter: int, method: str, where: str = "LogME", *, stacklevel: int = 3
) -> None:
    """Raises on a non-finite evidence (never returned silently); warns about targets that hit ``max_iter``.

    ``where`` starts every message (e.g. ``"LogME of model 3"``); ``stacklevel`` is that of the warnings, counted
    from this function (3: the caller of its caller).
    """
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
        raise FloatingPointError(f"{where}: the evidence of target(s) {bad[:10].tolist()} is not finite.{hint}")
    exact = np.flatnonzero(np.asarray(result.exact_fit))
    if exact.size:
        warnings.warn(
            f"{where}: target(s) {exact[:10].tolist()} are linear functions of the features to working precision "
            f"(least-squares residual at rounding level in {result.evidence.dtype}): their evidence is unbounded "
            "and the value returned is limited by the precision, not by the data. Remove such targets, add noise, "
            "or compare models on other targets.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    stuck = np.flatnonzero(~np.asarray(result.converged))
    if stuck.size:
        warnings.warn(
            f"{where}: the maximum of target(s) {stuck[:10].tolist()} was not located to tol in "
            f"max_iter={max_iter} iterations; the score is the best value found. Raise max_iter.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
