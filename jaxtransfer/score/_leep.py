"""LEEP: log expected empirical prediction (Nguyen, Hassner, Seeger and Archambeau, ICML 2020)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer import _checks
from jaxtransfer.score._registry import register_score

__all__ = ["leep"]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def leep_core(probs: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
    n = probs.shape[0]
    joint = jax.ops.segment_sum(probs, labels, num_segments=num_classes) / n  # (C, C_s): P(y, z)
    marginal = jnp.sum(joint, axis=0)  # (C_s,): P(z)
    safe = jnp.where(marginal > 0, marginal, 1.0)[None, :]
    conditional = jnp.where(marginal[None, :] > 0, joint / safe, 0.0)  # P(y | z)
    eep = jnp.sum(probs * conditional[labels], axis=1)  # sum_z P(y_i | z) theta(x_i)_z
    return jnp.mean(jnp.log(eep))


@register_score(
    input="source_probabilities",
    reference="Nguyen, Hassner, Seeger and Archambeau, ICML 2020",
    units="mean log-likelihood, nats",
)
def leep(source_probs, labels, *, num_classes: int | None = None) -> jax.Array:
    """LEEP score of a source classifier on target data (higher = better transfer).

    With theta(x) the source model's class probabilities,

        P(y, z) = (1/n) sum_{i: y_i = y} theta(x_i)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),
        LEEP = (1/n) sum_i log sum_z P(y_i | z) theta(x_i)_z.

    It is the average log-likelihood of the "expected empirical predictor", a classifier built without training
    from the source head. LEEP <= 0; 0 means the source predictions identify the target classes perfectly.
    (The code published with SFDA averages the likelihood without the log; this is the paper's definition.)

    Args:
        source_probs: (n, C_s) softmax outputs of the source model on the n target samples.
        labels: (n,) target class ids in [0, C).
        num_classes: C, if not ``max(labels) + 1``.

    Returns:
        Scalar score.


    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> logits = rng.normal(size=(60, 5)) + 2 * np.eye(3, 5)[labels]
        >>> probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        >>> round(float(jt.leep(probs, labels)), 3)
        -0.671

    Raises:
        ValueError, TypeError: bad shapes, NaN/Inf, negative probabilities, rows not summing to 1 (logits),
            bad labels (see :func:`jaxtransfer.logme`).
    """
    lab, c = _checks.check_class_labels(labels, _checks.as_array(labels, "labels").shape[0], num_classes)
    probs = _checks.check_probabilities(source_probs, lab.shape[0])
    return leep_core(probs, lab, num_classes=c)
