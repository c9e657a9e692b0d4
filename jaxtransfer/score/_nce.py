"""NCE: negative conditional entropy of the target labels given the source labels (Tran et al., ICCV 2019)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer import _checks
from jaxtransfer.score._registry import register_score

__all__ = ["nce"]


@functools.partial(jax.jit, static_argnames=("num_classes", "num_source_classes"))
def _nce(source_labels, labels, *, num_classes, num_source_classes):
    n = labels.shape[0]
    cell = labels * num_source_classes + source_labels
    joint = jnp.zeros(num_classes * num_source_classes).at[cell].add(1.0 / n)
    joint = joint.reshape(num_classes, num_source_classes)  # P(y, z)
    marginal = jnp.sum(joint, axis=0)  # P(z)
    ratio = jnp.where(joint > 0, joint / jnp.where(marginal > 0, marginal, 1.0)[None, :], 1.0)
    return jnp.sum(joint * jnp.log(ratio))  # sum P(y, z) log P(y | z), 0 log 0 = 0


@register_score(input="source_labels", reference="Tran, Nguyen and Hassner, ICCV 2019", units="-H(Y | Z), nats")
def nce(source_labels, labels, *, num_classes: int | None = None, num_source_classes: int | None = None) -> jax.Array:
    """NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z), from the empirical joint of source and target labels.

    Args:
        source_labels: (n,) hard labels z_i in [0, C_s) that the source model assigns to the target samples
            (e.g. the argmax of its predictions).
        labels: (n,) target class ids in [0, C).
        num_classes, num_source_classes: C and C_s, if not the maximum id + 1.

    Returns:
        Scalar score <= 0 (0: the source labels determine the target labels). Higher = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> source_labels = (labels + (rng.random(60) < 0.2)) % 4
        >>> round(float(jt.nce(source_labels, labels)), 3)
        -0.274
    """
    lab, c = _checks.check_class_labels(labels, _checks.as_array(labels, "labels").shape[0], num_classes)
    src, cs = _checks.check_class_labels(
        source_labels,
        lab.shape[0],
        num_source_classes,
        require_all=False,
        name="source_labels",
        against="labels",
        min_classes=1,
    )
    return _nce(src, lab, num_classes=c, num_source_classes=cs)
