"""The optimisation trajectory in the plane of its two principal directions (Li et al., "Visualizing the loss
landscape of neural nets", 2018, section 7).

With checkpoints theta_0 .. theta_n (theta_n the final model), the rows of M are theta_i - theta_n (i < n); the
directions are the top two principal components of M (rows centred, as a PCA does) and each checkpoint is drawn at
the least-squares coordinates c of theta_i - theta_n in span(d_1, d_2). Random directions in a space of millions of
dimensions are nearly orthogonal to the path, which is why a random plane shows a trajectory as a point.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from jaxtransfer._pytree import as_arrays, check_same, is_float

__all__ = ["pca_directions", "project_trajectory"]


def _flat(tree) -> np.ndarray:
    parts = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree) if is_float(x)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _unflat(vec: np.ndarray, like):
    leaves, treedef = jax.tree.flatten(like)
    out, i = [], 0
    for x in leaves:
        if is_float(x):
            size = int(np.size(x))
            out.append(np.asarray(vec[i : i + size].reshape(np.shape(x)), x.dtype))
            i += size
        else:
            out.append(np.zeros_like(x))
    return jax.tree.unflatten(treedef, out)


def _checkpoints(checkpoints: Sequence, minimum: int) -> list:
    if isinstance(checkpoints, dict) or not isinstance(checkpoints, Sequence):
        raise TypeError(f"checkpoints must be a sequence of pytrees, oldest first; got {type(checkpoints).__name__}.")
    if len(checkpoints) < minimum:
        raise ValueError(f"need at least {minimum} checkpoints, oldest first (the last is the final model).")
    out = [as_arrays(c) for c in checkpoints]
    for i, c in enumerate(out):
        check_same(out[-1], c, names=("the final checkpoint", f"checkpoints[{i}]"))
    return out


def pca_directions(checkpoints: Sequence) -> tuple[tuple[object, object], np.ndarray]:
    """The top two principal directions of a trajectory relative to its final point.

    Args:
        checkpoints: pytrees of one structure, oldest first; the last is the final model (the plane's origin). At
            least 4 (after centring, 3 differences span at most 2 directions).

    Returns:
        ((d_1, d_2) unit-norm pytrees like the checkpoints (zeros on non-float leaves), explained variance ratio (2,)).

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.landscape import pca_directions
        >>> path = [{"w": np.array([t, t**2, 0.0])} for t in np.linspace(-1, 1, 7)]
        >>> (d1, d2), ratio = pca_directions(path)
        >>> [abs(float(d["w"][2])) for d in (d1, d2)], round(float(ratio.sum()), 6)  # the path lies in a plane
        ([0.0, 0.0], 1.0)
    """
    checkpoints = _checkpoints(checkpoints, 4)
    final = _flat(checkpoints[-1])
    m = np.stack([_flat(c) - final for c in checkpoints[:-1]])
    m = m - m.mean(axis=0, keepdims=True)
    gram = m @ m.T  # (n, n): the small side of the SVD of M
    values, vectors = np.linalg.eigh(gram)
    values, vectors = values[::-1], vectors[:, ::-1]
    total = float(values.clip(0).sum())
    if not values[1] > 1e-12 * max(values[0], np.finfo(np.float64).tiny):
        raise ValueError("the trajectory spans fewer than two directions (the checkpoints lie on a line or coincide).")
    directions = []
    for j in range(2):
        d = m.T @ vectors[:, j] / np.sqrt(values[j])
        d = d * (1.0 if d[np.argmax(np.abs(d))] >= 0 else -1.0)  # sign: the largest entry positive
        directions.append(_unflat(d, checkpoints[-1]))
    return (directions[0], directions[1]), values[:2] / total


def project_trajectory(checkpoints: Sequence, directions: tuple[object, object], *, origin=None) -> np.ndarray:
    """Coordinates (n, 2) of each checkpoint in the plane ``origin + a d_1 + b d_2`` (least squares).

    ``origin`` defaults to the last checkpoint. The least-squares fit is exact for checkpoints in the plane and the
    orthogonal projection otherwise (the directions need not be orthogonal).

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.landscape import project_trajectory
        >>> axes = ({"w": np.array([1.0, 0.0])}, {"w": np.array([1.0, 1.0])})
        >>> project_trajectory([{"w": np.array([3.0, 2.0])}, {"w": np.array([0.0, 0.0])}], axes).round(6).tolist()
        [[1.0, 2.0], [0.0, 0.0]]
    """
    checkpoints = _checkpoints(checkpoints, 1)
    origin = checkpoints[-1] if origin is None else as_arrays(origin)
    check_same(checkpoints[-1], origin, names=("the final checkpoint", "origin"))
    if not isinstance(directions, tuple | list) or len(directions) != 2:
        raise ValueError("directions must be a pair (d_1, d_2) of pytrees like the checkpoints.")
    basis = []
    for i, d in enumerate(directions):
        d = as_arrays(d)
        shapes = [np.shape(x) for x in jax.tree.leaves(origin)]
        if jax.tree.structure(d) != jax.tree.structure(origin) or [np.shape(x) for x in jax.tree.leaves(d)] != shapes:
            raise ValueError(f"directions[{i}] differs from the checkpoints in structure or shapes.")
        basis.append(_flat(d))
    basis = np.stack(basis, axis=1)  # (P, 2)
    if np.linalg.matrix_rank(basis) < 2:
        raise ValueError("the two directions are parallel (or zero): they do not span a plane.")
    o = _flat(origin)
    coords = [np.linalg.lstsq(basis, _flat(c) - o, rcond=None)[0] for c in checkpoints]
    return np.stack(coords)
