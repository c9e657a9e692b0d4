"""SFDA: self-challenging Fisher discriminant analysis (Shao et al., ECCV 2022)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer import _checks
from jaxtransfer.score._linalg import class_counts, class_means
from jaxtransfer.score._registry import register_score

__all__ = ["sfda"]

_HI = jax.lax.Precision.HIGHEST
# Eigenvalues of S_w below _CUTOFF eps lambda_max are rounding noise. 8 keeps real ones down to ~1e-6 lambda_max in
# float32 (the demo's mlp128 features need 2e-6); D eps (numpy's rank rule, used before) cut those and gave 0.693 for
# a float64 0.936, and 32 still cut some of them.
_CUTOFF = 8


def _within_scatter(x, labels, means):
    """S_w = sum_k (n_k / n) cov_k = (1/n) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T."""
    r = x - means[labels]
    return jnp.matmul(r.T, r, precision=_HI) / x.shape[0]


def _fisher_probabilities(x, labels, num_classes, shrinkage):
    """p(y | x) of the Gaussian classifier with the shrunk within-class scatter (regularised FDA)."""
    d = x.shape[1]
    means = class_means(x, labels, num_classes)
    priors = class_counts(labels, num_classes, x.dtype) / x.shape[0]
    sw = _within_scatter(x, labels, means)
    # (1 - l) S_w + l (tr S_w / D) I is inverted in the eigenbasis of S_w. With D >= n, S_w has D - n + C zero
    # eigenvalues and l can be as small as 1e-10: a direct solve in float32 then sees eigenvalue noise
    # (~eps lambda_max) far above l tr / D and returns garbage (the score collapsed to 1/C). Those eigenvalues are
    # set to exactly 0, so float32 inverts the same matrix as float64.
    lam, vecs = jnp.linalg.eigh(sw)  # ascending
    # S_w is a sum over n residuals from C class means: rank <= n - C, so the smallest D - (n - C) eigenvalues are
    # zero exactly (D >= n); the others are kept unless at rounding level (c eps lambda_max).
    known_zero = jnp.arange(d) < d - (x.shape[0] - num_classes)
    lam = jnp.where(known_zero | (lam <= jnp.max(lam) * _CUTOFF * jnp.finfo(x.dtype).eps), 0.0, lam)
    inv = 1.0 / ((1 - shrinkage) * lam + shrinkage * jnp.sum(lam) / d)
    coef = jnp.matmul(jnp.matmul(means, vecs, precision=_HI) * inv[None, :], vecs.T, precision=_HI)  # mu_k^T S^-1
    intercept = -0.5 * jnp.sum(coef * means, axis=1) + jnp.log(priors)
    return jax.nn.softmax(jnp.matmul(x, coef.T, precision=_HI) + intercept[None, :], axis=1), sw


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _sfda(x, labels, *, num_classes):
    means = class_means(x, labels, num_classes)
    sw = _within_scatter(x, labels, means)
    spread = jnp.max(jnp.abs(x))
    if_degenerate = jnp.where(spread > 0, 0.0, jnp.nan)  # all-zero features: no scatter to shrink towards
    shrinkage = jnp.maximum(jnp.exp(-5.0 * jnp.linalg.eigvalsh(sw)[-1]), 1e-10) + if_degenerate
    probs, _ = _fisher_probabilities(x, labels, num_classes, shrinkage)
    # ConfMix: soften the probabilities, then pull each sample towards the mean of the other classes' means
    # by (1 - its softened probability of the true class).
    soft = jax.nn.softmax(probs, axis=1)
    p_true = soft[jnp.arange(x.shape[0]), labels][:, None]
    others = (jnp.sum(means, axis=0, keepdims=True) - means) / (num_classes - 1)  # (C, D)
    mixed = p_true * x + (1 - p_true) * others[labels]
    probs2, _ = _fisher_probabilities(mixed, labels, num_classes, shrinkage)
    return jnp.mean(probs2[jnp.arange(x.shape[0]), labels])


@register_score(reference="Shao et al., ECCV 2022", units="mean probability of the true class")
def sfda(features, labels, *, num_classes: int | None = None) -> jax.Array:
    """SFDA score: mean probability of the true class under regularised FDA after self-challenging mixing.

    1. Regularised FDA: within-class scatter S_w = sum_k (n_k/n) cov_k, shrunk to
       (1 - l) S_w + l (tr S_w / D) I with l = max(exp(-5 lambda_max(S_w)), 1e-10); class posteriors of the
       Gaussian classifier with shared covariance (the projection on all Fisher directions followed by the
       nearest-mean rule reduces to it).
    2. ConfMix: with q_i the softmax of those posteriors at the true class,
       x_i <- q_i x_i + (1 - q_i) mean_{k != y_i} mu_k, hardening the task where the classes overlap.
    3. Regularised FDA again (same l) on the mixed features; the score is the mean posterior of the true class.

    lambda_max is computed exactly (the published code runs three power iterations). Note that, as published,
    the score depends on the scale of the features through l (until l reaches its floor 1e-10). With D >= n the
    within-class scatter is singular and the classifier separates the training samples: the score is then close
    to 1 for any features (float32 and float64 agree; it carries little information there).

    Args:
        features: (n, D); labels: (n,) class ids in [0, C), C >= 2; num_classes: C.

    Returns:
        Scalar in (0, 1], higher = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.sfda(features, labels)), 3)
        0.664
    """
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, centre=True)
    return _checks.finite_result(_sfda(f, lab, num_classes=c), "sfda")
