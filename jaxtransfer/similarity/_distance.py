"""Distances between parameter pytrees (how far fine-tuning moved a model, how far apart two runs ended)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._pytree import as_arrays, check_same, is_float

__all__ = ["param_distance"]


def param_distance(theta_a, theta_b, *, per_leaf: bool = True) -> dict:
    """l2 distances between two parameter pytrees: ``{"total": ..., "relative": ||a - b|| / ||a||, "leaves": {...}}``.

    ``leaves`` maps each leaf's key path to its (l2, relative) pair when ``per_leaf``.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.similarity import param_distance
        >>> d = param_distance({'w': np.array([3.0, 0.0])}, {'w': np.array([0.0, 4.0])})
        >>> sorted(d)
        ['leaves', 'relative', 'total']
    """
    theta_a, theta_b = as_arrays(theta_a), as_arrays(theta_b)
    check_same(theta_a, theta_b, names=("theta_a", "theta_b"))
    total, norm_a, leaves = 0.0, 0.0, {}
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(theta_a), jax.tree.leaves(theta_b), strict=True):
        if not is_float(a):
            continue
        d = float(jnp.sum(jnp.square(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))
        na = float(jnp.sum(jnp.square(jnp.asarray(a, jnp.float32))))
        total, norm_a = total + d, norm_a + na
        if per_leaf:
            leaves[jax.tree_util.keystr(path)] = (np.sqrt(d), np.sqrt(d) / max(np.sqrt(na), 1e-30))
    out = {"total": float(np.sqrt(total)), "relative": float(np.sqrt(total) / max(np.sqrt(norm_a), 1e-30))}
    if per_leaf:
        out["leaves"] = leaves
    return out
