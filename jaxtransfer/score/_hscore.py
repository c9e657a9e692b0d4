"""H-score (Bao et al., ICIP 2019) and its shrinkage-regularised form (Ibrahim, Ponomareva and Mazumder, 2022)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer import _checks
from jaxtransfer.score._linalg import class_means, covariance
from jaxtransfer.score._registry import register_score

__all__ = ["hscore", "hscore_regularized", "ledoit_wolf_shrinkage"]

_HI = jax.lax.Precision.HIGHEST


def _between_class_cov(f, labels, num_classes):
    """cov(E[f | y]): the covariance of the features with every sample replaced by its class mean."""
    return covariance(class_means(f, labels, num_classes)[labels])


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _hscore(f, labels, *, num_classes):
    # With F_c = F - 1 mu^T = U S V^T (thin SVD) and P the projection on the class indicators,
    # tr(cov(f)^+ cov(E[f|y])) = tr((F_c^T F_c)^+ F_c^T P F_c) = sum_k ||U_r^T y_k||^2 / n_k over the r singular
    # vectors above the relative cutoff max(n, D) eps s_max. The left singular vectors of F_c are accurate in
    # float32 where the pseudo-inverse of a float32 covariance (eigenvalues s^2, noise eps s_max^2) is not.
    n, d = f.shape
    c = f - jnp.mean(f, axis=0, keepdims=True)
    u, sv, _ = jnp.linalg.svd(c, full_matrices=False)
    keep = sv > jnp.max(sv) * max(n, d) * jnp.finfo(f.dtype).eps
    proj = jax.ops.segment_sum(u, labels, num_segments=num_classes)  # (C, r) = Y^T U
    counts = jax.ops.segment_sum(jnp.ones((n,), f.dtype), labels, num_segments=num_classes)
    return jnp.sum(jnp.where(keep[None, :], jnp.square(proj), 0.0) / counts[:, None])


def ledoit_wolf_shrinkage(features) -> jax.Array:
    """Ledoit-Wolf optimal shrinkage a in (1 - a) S + a (tr S / D) I for the covariance S of (n, D) features.

        delta = ||S - mu I||_F^2 / D,   beta = min(delta, (1/n^2) sum_i ||x_i x_i^T - S||_F^2 / D),   a = beta / delta,

    with x_i the centred rows and mu = tr(S) / D (Ledoit and Wolf, 2004). Invariant to the feature scale (the
    features are rescaled by a power of two first, so no product overflows).


    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.ledoit_wolf_shrinkage(features)), 3)
        0.358

    Raises:
        ValueError: features not (n, D) with n >= 2, or with NaN/Inf.
    """
    f = _checks.check_features(features)
    return _shrinkage(_checks.power_of_two_rescale(f)[0])


def _shrinkage(f: jax.Array) -> jax.Array:
    x = f - jnp.mean(f, axis=0, keepdims=True)
    n, d = x.shape
    s = jnp.matmul(x.T, x, precision=_HI) / n
    mu = jnp.trace(s) / d
    delta = jnp.sum(jnp.square(s - mu * jnp.eye(d, dtype=s.dtype))) / d
    # sum_i ||x_i x_i^T - S||_F^2 = sum_i ||x_i||^4 - n ||S||_F^2
    beta = (jnp.sum(jnp.square(jnp.sum(x * x, axis=1))) / n - jnp.sum(s * s)) / (n * d)
    return jnp.where(delta > 0, jnp.minimum(beta, delta) / jnp.where(delta > 0, delta, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _hscore_regularized(f, labels, *, num_classes):
    d = f.shape[1]
    a = _shrinkage(f)
    cov_f = covariance(f)
    shrunk = (1 - a) * cov_f + a * jnp.trace(cov_f) / d * jnp.eye(d, dtype=f.dtype)
    between = (1 - a) * _between_class_cov(f, labels, num_classes)
    return jnp.trace(jnp.linalg.solve(shrunk, between))


@register_score(reference="Bao et al., ICIP 2019", units="tr(cov(f)^+ cov(E[f | y]))")
def hscore(features, labels, *, num_classes: int | None = None) -> jax.Array:
    """H-score: tr(cov(f)^+ cov(E[f | y])), how well a linear classifier can separate the classes.

    Args:
        features: (n, D) features; labels: (n,) class ids in [0, C); num_classes: C if not max + 1.

    Returns:
        Scalar in [0, min(D, C - 1)], higher = better transfer. cov(f)^+ is the pseudo-inverse, so n < D and
        constant features are allowed (the estimate is then noisy: prefer :func:`hscore_regularized`).

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.hscore(features, labels)), 3)
        1.348
    """
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, rescale=True, centre=True)
    return _checks.finite_result(_hscore(f, lab, num_classes=c), "hscore")


@register_score(reference="Ibrahim, Ponomareva and Mazumder, ICLR 2022", units="shrunk tr(cov(f)^-1 cov(E[f | y]))")
def hscore_regularized(features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Shrinkage H-score: tr(cov_a(f)^-1 (1 - a) cov(E[f | y])), cov_a the Ledoit-Wolf shrunk covariance.

    The estimate of cov(f) from few samples is poor; shrinking it towards (tr/D) I with the Ledoit-Wolf
    coefficient a (:func:`ledoit_wolf_shrinkage`) makes the score reliable for small n (Ibrahim et al., 2022).

    Args:
        features: (n, D); labels: (n,) class ids in [0, C); num_classes: C, if not ``max(labels) + 1``.

    Returns:
        Scalar >= 0, higher = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.hscore_regularized(features, labels)), 3)
        0.943
    """
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, rescale=True, centre=True)
    return _checks.finite_result(_hscore_regularized(f, lab, num_classes=c), "hscore_regularized")
