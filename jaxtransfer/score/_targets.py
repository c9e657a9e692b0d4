"""Target matrices Y (n, K) as LogME sees them: one-hot class labels (never materialised) or dense targets.

LogME touches Y only through M^T Y for a few (n, r) matrices M, the squared column norms y_k^T y_k, and (in the
naive algorithm) one column at a time. For class labels M^T Y is a segment sum of the rows of M by label, O(n r)
instead of O(n r K), and y_k^T y_k is the class count.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__: list[str] = []


class OneHot(NamedTuple):
    """Y[i, k] = 1 if labels[i] == k else 0, with K = num_classes."""

    labels: jax.Array  # (n,) int32
    num_classes: int

    def project(self, m: jax.Array) -> jax.Array:
        """M^T Y: (n, r) -> (r, K)."""
        return jax.ops.segment_sum(m, self.labels, num_segments=self.num_classes).T

    def sq_norms(self, dtype) -> jax.Array:
        """(K,) y_k^T y_k."""
        ones = jnp.ones(self.labels.shape, dtype)
        return jax.ops.segment_sum(ones, self.labels, num_segments=self.num_classes)

    def sums(self, dtype) -> jax.Array:
        """(K,) sum_i y_ik: the class counts."""
        return self.sq_norms(dtype)

    def centred_sq_norms(self, dtype) -> jax.Array:
        """(K,) ||y_k - mean(y_k)||^2 = n_k (n - n_k) / n, without a difference of large numbers."""
        counts = self.sq_norms(dtype)
        return counts * (self.labels.shape[0] - counts) / self.labels.shape[0]

    def column(self, k: jax.Array, dtype) -> jax.Array:
        return (self.labels == k).astype(dtype)

    @property
    def num_targets(self) -> int:
        return self.num_classes


class Dense(NamedTuple):
    """A real-valued target matrix Y (n, K)."""

    y: jax.Array

    def project(self, m: jax.Array) -> jax.Array:
        return jnp.matmul(m.T, self.y, precision=jax.lax.Precision.HIGHEST)

    def sq_norms(self, dtype) -> jax.Array:
        return jnp.sum(jnp.square(self.y), axis=0).astype(dtype)

    def sums(self, dtype) -> jax.Array:
        return jnp.sum(self.y, axis=0).astype(dtype)

    def centred_sq_norms(self, dtype) -> jax.Array:
        return jnp.sum(jnp.square(self.y - jnp.mean(self.y, axis=0, keepdims=True)), axis=0).astype(dtype)

    def column(self, k: jax.Array, dtype) -> jax.Array:
        return self.y[:, k].astype(dtype)

    @property
    def num_targets(self) -> int:
        return self.y.shape[1]
