"""LogME of many models' features on the same labels: equal widths stacked and scored under ``jax.vmap``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import _checks
from jaxtransfer.score._evidence import LogMEEvidence, check_result
from jaxtransfer.score._logme_optimized import optimized_evidence
from jaxtransfer.score._targets import Dense, OneHot

__all__ = ["logme_many"]


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def _many(stacked, y, tol, *, num_classes, max_iter) -> LogMEEvidence:
    targets = Dense(y) if num_classes is None else OneHot(y, num_classes)
    one = functools.partial(optimized_evidence, targets=targets, tol=tol, max_iter=max_iter)
    return jax.vmap(one)(stacked)


def logme_many(
    features: Sequence,
    labels,
    *,
    regression: bool = False,
    num_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> jax.Array:
    """LogME of many models' features on the same labels.

    Models with the same feature width D are stacked and scored together under ``jax.vmap`` (one compilation per
    distinct D); the groups run back to back. A second call with the same widths does not recompile.

    Args:
        features: a sequence of (n, D_m) feature matrices, one per model, all with the same n.
        labels: as :func:`jaxtransfer.logme`.

    Returns:
        (M,) scores in the order of ``features``.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> scores = jt.logme_many([features, features[:, :2], rng.normal(size=(60, 4))], labels)
        >>> [round(float(s), 3) for s in scores]
        [-0.52, -0.547, -0.869]
    """
    if isinstance(features, np.ndarray | jax.Array) or not isinstance(features, Sequence) or not features:
        raise TypeError("features must be a non-empty list of (n, D) arrays, one per model.")
    checked = [_checks.check_features(f, f"features[{i}]") for i, f in enumerate(features)]
    # LogME is invariant to the feature scale: an exact power-of-two rescaling keeps every Gram matrix in range.
    checked = [_checks.power_of_two_rescale(f)[0] for f in checked]
    n = checked[0].shape[0]
    for i, f in enumerate(checked):
        if f.shape[0] != n:
            raise ValueError(f"features[{i}] has {f.shape[0]} samples but features[0] has {n}.")
    _, y, c = _checks.check_logme_inputs(checked[0], labels, regression, num_classes, tol, max_iter, "optimized")
    dtype = np.result_type(*(f.dtype for f in checked))
    by_width: dict[int, list[int]] = {}
    for i, f in enumerate(checked):
        by_width.setdefault(f.shape[1], []).append(i)
    scores = [None] * len(checked)
    for idx in by_width.values():
        stacked = jnp.stack([checked[i].astype(dtype) for i in idx])
        result = _many(stacked, y, jnp.asarray(tol, dtype), num_classes=c, max_iter=max_iter)
        for j, i in enumerate(idx):
            one = jax.tree.map(lambda a, j=j: a[j], result)
            check_result(one, max_iter, "optimized", where=f"LogME of model {i} (features[{i}])")
            scores[i] = jnp.mean(one.evidence)
    return jnp.stack(scores)
