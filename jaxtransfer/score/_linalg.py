"""Small linear-algebra helpers shared by the feature-based scores: class statistics and PCA."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__: list[str] = []

_HI = jax.lax.Precision.HIGHEST


def class_counts(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    """(C,) number of samples of each class."""
    return jax.ops.segment_sum(jnp.ones(labels.shape, dtype), labels, num_segments=num_classes)


def class_means(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """(C, D) mean feature vector of each class."""
    sums = jax.ops.segment_sum(features, labels, num_segments=num_classes)
    return sums / class_counts(labels, num_classes, features.dtype)[:, None]


def covariance(x: jax.Array) -> jax.Array:
    """(D, D) biased covariance (1/n) sum (x - mean)(x - mean)^T of the rows of x (n, D)."""
    c = x - jnp.mean(x, axis=0, keepdims=True)
    return jnp.matmul(c.T, c, precision=_HI) / x.shape[0]


def pca(features: jax.Array, k: int) -> jax.Array:
    """Projects the centred features (n, D) on their top-k principal axes: (n, k).

    Sign convention (the scores that depend on it, e.g. PARC, need one): each axis is oriented so that its
    largest-magnitude loading is positive. k is clipped to min(n, D).
    """
    n, d = features.shape
    k = min(k, n, d)
    c = features - jnp.mean(features, axis=0, keepdims=True)
    _, vecs = jnp.linalg.eigh(jnp.matmul(c.T, c, precision=_HI))
    top = vecs[:, ::-1][:, :k]  # (D, k), descending variance
    sign = jnp.sign(top[jnp.argmax(jnp.abs(top), axis=0), jnp.arange(k)])
    return jnp.matmul(c, top * sign[None, :], precision=_HI)


def components_for_variance(features, fraction: float, *, concrete: bool = True):
    """The smallest number of principal components that explain ``fraction`` of the variance: a Python int
    (``concrete``, host-side) or a traced int32 scalar."""
    c = features - jnp.mean(features, axis=0, keepdims=True)
    ev = jnp.linalg.eigvalsh(jnp.matmul(c.T, c, precision=_HI))[::-1]
    ev = jnp.maximum(ev, 0)
    cum = jnp.cumsum(ev) / jnp.sum(ev)
    k = jnp.minimum(jnp.searchsorted(cum, fraction) + 1, min(features.shape))
    return int(k) if concrete else k
