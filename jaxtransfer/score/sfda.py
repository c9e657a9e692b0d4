"""SFDA: self-challenging Fisher discriminant analysis (Shao et al., ECCV 2022)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer.score import _checks
from jaxtransfer.score._linalg import class_counts, class_means

__all__ = ["sfda"]

_HI = jax.lax.Precision.HIGHEST


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
    shrunk = (1 - shrinkage) * sw + shrinkage * jnp.trace(sw) / d * jnp.eye(d, dtype=x.dtype)
    coef = jnp.linalg.solve(shrunk, means.T).T  # (C, D): mu_k^T S^-1
    intercept = -0.5 * jnp.sum(coef * means, axis=1) + jnp.log(priors)
    return jax.nn.softmax(jnp.matmul(x, coef.T, precision=_HI) + intercept[None, :], axis=1), sw


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _sfda(x, labels, *, num_classes):
    means = class_means(x, labels, num_classes)
    sw = _within_scatter(x, labels, means)
    shrinkage = jnp.maximum(jnp.exp(-5.0 * jnp.linalg.eigvalsh(sw)[-1]), 1e-10)
    probs, _ = _fisher_probabilities(x, labels, num_classes, shrinkage)
    # ConfMix: soften the probabilities, then pull each sample towards the mean of the other classes' means
    # by (1 - its softened probability of the true class).
    soft = jax.nn.softmax(probs, axis=1)
    p_true = soft[jnp.arange(x.shape[0]), labels][:, None]
    others = (jnp.sum(means, axis=0, keepdims=True) - means) / (num_classes - 1)  # (C, D)
    mixed = p_true * x + (1 - p_true) * others[labels]
    probs2, _ = _fisher_probabilities(mixed, labels, num_classes, shrinkage)
    return jnp.mean(probs2[jnp.arange(x.shape[0]), labels])


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
    the score depends on the scale of the features through l.

    Args:
        features: (n, D); labels: (n,) class ids in [0, C), C >= 2; num_classes: C.

    Returns:
        Scalar in (0, 1], higher = better transfer.
    """
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes)
    return _sfda(f, lab, num_classes=c)
