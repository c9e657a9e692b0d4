"""NCE: negative conditional entropy of the target labels given the source labels (Tran et al., ICCV 2019)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer.score import _checks

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


def nce(source_labels, labels, *, num_classes: int | None = None, num_source_classes: int | None = None) -> jax.Array:
    """NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z), from the empirical joint of source and target labels.

    Args:
        source_labels: (n,) hard labels z_i in [0, C_s) that the source model assigns to the target samples
            (e.g. the argmax of its predictions).
        labels: (n,) target class ids in [0, C).
        num_classes, num_source_classes: C and C_s, if not the maximum id + 1.

    Returns:
        Scalar score <= 0 (0: the source labels determine the target labels). Higher = better transfer.
    """
    lab, c = _checks.check_class_labels(labels, _checks._as_array(labels, "labels").shape[0], num_classes)
    src = _checks._as_array(source_labels, "source_labels")
    if not jnp.issubdtype(src.dtype, jnp.integer) or src.ndim != 1:
        raise TypeError(
            f"source_labels must be a 1-D integer array of source class ids; got {src.dtype} of shape {src.shape}."
        )
    if src.shape[0] != lab.shape[0]:
        raise ValueError(f"source_labels has {src.shape[0]} entries but labels has {lab.shape[0]}.")
    src = jnp.asarray(src, jnp.int32)
    if _checks._is_concrete(src):
        lo, hi = int(src.min()), int(src.max())
        if lo < 0:
            raise ValueError(f"source_labels must be >= 0; got {lo}.")
        if num_source_classes is None:
            num_source_classes = hi + 1
        elif hi >= num_source_classes:
            raise ValueError(f"source_labels must be < num_source_classes={num_source_classes}; got {hi}.")
    elif num_source_classes is None:
        raise ValueError("num_source_classes must be given when source_labels are traced.")
    return _nce(src, lab, num_classes=c, num_source_classes=int(num_source_classes))
