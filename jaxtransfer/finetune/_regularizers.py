"""Fine-tuning regularisers that use the pre-trained model: L2-SP, DELTA, BSS, Co-Tuning.

Parameter-space penalties are optax transformations (compose them with ``optax.chain``) or plain losses;
feature-space penalties are losses on arrays. All are pure JAX on pytrees and arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtransfer._checks import check_class_labels, check_probabilities
from jaxtransfer._pytree import check_finite
from jaxtransfer.finetune._surgery import is_head

__all__ = [
    "bss_penalty",
    "co_tuning_loss",
    "co_tuning_relationship",
    "delta_channel_weights",
    "delta_penalty",
    "l2_sp",
    "l2_sp_penalty",
]


def _check_anchor(params, anchor) -> None:
    if jax.tree.structure(params) != jax.tree.structure(anchor):
        raise ValueError(
            "anchor must have the tree structure of the parameters (e.g. nnx.state(model, nnx.Param) of the "
            f"pre-trained model with the new head): {jax.tree.structure(anchor)} vs {jax.tree.structure(params)}."
        )
    for (path, p), a in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(anchor), strict=True):
        if p.shape != a.shape:
            raise ValueError(f"anchor leaf {jax.tree_util.keystr(path)} has shape {a.shape}, parameter {p.shape}.")
    check_finite(anchor, "anchor")


def _check_weights(**weights) -> None:
    for name, w in weights.items():
        if not (isinstance(w, int | float | np.number) and np.isfinite(w) and w >= 0):
            raise ValueError(f"{name} must be >= 0; got {w!r}.")


def l2_sp_penalty(params, anchor, *, alpha: float = 0.01, beta: float = 0.01, is_new: Callable = is_head) -> jax.Array:
    """alpha/2 ||w - w0||^2 over the pre-trained leaves + beta/2 ||w||^2 over the new ones (Li, Grandvalet and Davoine,
    ICML 2018; defaults 0.01, 0.01 as published). ``is_new(path)`` picks the new leaves (default: under ``head``).

    Example:
        >>> import jax.numpy as jnp
        >>> anchor = {"body": jnp.zeros(3), "head": jnp.zeros(2)}
        >>> params = {"body": jnp.ones(3), "head": jnp.ones(2)}
        >>> print(f"{l2_sp_penalty(params, anchor, alpha=0.1, beta=0.01):.3f}")  # 0.05 * 3 + 0.005 * 2
        0.160
    """
    _check_weights(alpha=alpha, beta=beta)
    _check_anchor(params, anchor)

    def term(path, p, a):
        if is_new(path):
            return 0.5 * beta * jnp.sum(jnp.square(p))
        return 0.5 * alpha * jnp.sum(jnp.square(p - a))

    return sum(jax.tree.leaves(jax.tree_util.tree_map_with_path(term, params, anchor)))


class _L2SPState(NamedTuple):
    pass


def l2_sp(
    anchor, *, alpha: float = 0.01, beta: float = 0.01, is_new: Callable = is_head
) -> optax.GradientTransformation:
    """An optax transformation adding the gradient of :func:`l2_sp_penalty`: alpha (w - w0) or beta w.

    Chain it before the optimiser, as ``optax.add_decayed_weights`` is:
    ``optax.chain(l2_sp(anchor), optax.adam(1e-3))``.
    ``update`` needs the parameters (``tx.update(grads, state, params)``).

    Example:
        >>> import jax.numpy as jnp
        >>> anchor = {"body": jnp.zeros(2), "head": jnp.zeros(1)}
        >>> params = {"body": jnp.full(2, 2.0), "head": jnp.ones(1)}
        >>> tx = l2_sp(anchor, alpha=0.5, beta=0.1)
        >>> grads = {"body": jnp.zeros(2), "head": jnp.zeros(1)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> print(updates["body"], updates["head"])  # alpha (w - w0), beta w
        [1. 1.] [0.1]
    """
    _check_weights(alpha=alpha, beta=beta)

    def init(params):
        _check_anchor(params, anchor)
        return _L2SPState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("l2_sp needs the parameters: call update(grads, state, params).")

        def add(path, u, p, a):
            return u + (beta * p if is_new(path) else alpha * (p - a))

        return jax.tree_util.tree_map_with_path(add, updates, params, anchor), state

    return optax.GradientTransformation(init, update)


def delta_penalty(features_student, features_teacher, channel_weights=None) -> jax.Array:
    """DELTA feature-map distance (Li et al., ICLR 2019): mean over the batch of

        sum_c w_c ||FM_student[c] - FM_teacher[c]||^2 / (H W)

    for feature maps (n, H, W, C) (or (n, C): H W = 1). ``channel_weights`` (C,) default to 1 (the plain distance).
    Pass lists of feature maps (and of weights) to sum over several layers.

    Example:
        >>> import jax.numpy as jnp
        >>> student, teacher = jnp.ones((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 3))
        >>> float(delta_penalty(student, teacher))  # three channels, each at mean squared distance 1
        3.0
        >>> float(delta_penalty(student, teacher, jnp.array([1.0, 0.0, 0.0])))
        1.0
    """
    if isinstance(features_student, list | tuple):
        weights = channel_weights if channel_weights is not None else [None] * len(features_student)
        return sum(delta_penalty(s, t, w) for s, t, w in zip(features_student, features_teacher, weights, strict=True))
    s, t = jnp.asarray(features_student), jnp.asarray(features_teacher)
    if s.shape != t.shape:
        raise ValueError(f"student and teacher feature maps differ in shape: {s.shape} vs {t.shape}.")
    c = s.shape[-1]
    w = jnp.ones((c,), s.dtype) if channel_weights is None else jnp.asarray(channel_weights, s.dtype)
    if w.shape != (c,):
        raise ValueError(f"channel_weights must have shape ({c},); got {w.shape}.")
    sq = jnp.square(s - t).reshape(s.shape[0], -1, c)  # (n, H W, C)
    per_channel = jnp.mean(sq, axis=1)  # (n, C): ||.||^2 / (H W)
    return jnp.mean(jnp.sum(per_channel * w[None, :], axis=1))


def delta_channel_weights(
    head_loss: Callable[[jax.Array], jax.Array], features, *, temperature: float = 5.0
) -> jax.Array:
    """DELTA's channel attention: how much the frozen pre-trained model's loss rises when a channel is removed.

    With L = head_loss(features) and L_c = head_loss(features with channel c zeroed), d_c = L_c - L is standardised
    over channels and w = softmax(d_std / temperature) (temperature 5, as published). All channels are tried at once
    with ``jax.vmap``.

    Args:
        head_loss: features (n, ..., C) -> scalar loss of the frozen pre-trained model's upper part on target data.
        features: (n, ..., C) feature maps of the frozen pre-trained model.

    Returns:
        (C,) non-negative weights summing to 1.

    Example:
        >>> import jax.numpy as jnp
        >>> features = jnp.ones((4, 3))
        >>> head_loss = lambda f: -jnp.mean(f[:, 0])  # only channel 0 matters to the frozen head
        >>> w = delta_channel_weights(head_loss, features)
        >>> bool(w[0] > w[1]), bool(jnp.isclose(w[1], w[2])), f"{float(w.sum()):.3f}"
        (True, True, '1.000')
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    f = jnp.asarray(features)
    c = f.shape[-1]
    base = head_loss(f)
    masks = 1.0 - jnp.eye(c, dtype=f.dtype)  # row c zeroes channel c
    losses = jax.vmap(lambda m: head_loss(f * m.reshape((1,) * (f.ndim - 1) + (c,))))(masks)
    d = losses - base
    d = (d - jnp.mean(d)) / jnp.maximum(jnp.std(d), jnp.finfo(f.dtype).tiny)
    return jax.nn.softmax(d / temperature)


def bss_penalty(features, k: int = 1) -> jax.Array:
    """Batch spectral shrinkage (Chen et al., NeurIPS 2019): sum of the k smallest squared singular values of the
    batch feature matrix (n, D) (k = 1 as published; the published weight is 0.001).

    Example:
        >>> import jax.numpy as jnp
        >>> f = jnp.diag(jnp.array([3.0, 2.0, 0.5]))  # singular values 3, 2, 0.5
        >>> float(bss_penalty(f)), float(bss_penalty(f, k=2))
        (0.25, 4.25)
    """
    f = jnp.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"features must be a (n, D) batch matrix; got shape {f.shape}.")
    if not (isinstance(k, int) and 1 <= k <= min(f.shape)):
        raise ValueError(f"k must be an integer in [1, min(n, D)={min(f.shape)}]; got {k!r}.")
    s = jnp.linalg.svd(f, compute_uv=False)  # descending
    return jnp.sum(jnp.square(s[-k:]))


def co_tuning_relationship(source_probs, labels, num_classes: int) -> jax.Array:
    """Co-Tuning's category relationship p(source class | target class) (You et al., NeurIPS 2020), the
    "direct" variant: the mean of the source head's softmax outputs over the target samples of each class.

    Args:
        source_probs: (n, C_s) softmax outputs of the pre-trained source head on target data.
        labels: (n,) target classes in [0, num_classes).

    Returns:
        (num_classes, C_s), rows summing to 1.

    Raises:
        ValueError: ``source_probs`` not (n, C_s) rows of probabilities summing to 1 (within 1e-3), labels out of
            range (checked in their own dtype) or not one per row, a class without samples.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
        >>> print(co_tuning_relationship(probs, jnp.array([0, 0, 1]), num_classes=2).round(3))
        [[0.8 0.2]
         [0.2 0.8]]
    """
    p = check_probabilities(source_probs, np.shape(source_probs)[0] if np.ndim(source_probs) == 2 else -1)
    labels, _ = check_class_labels(labels, p.shape[0], num_classes, against="source_probs")
    sums = jax.ops.segment_sum(p, labels, num_segments=num_classes)
    counts = jax.ops.segment_sum(jnp.ones(labels.shape, p.dtype), labels, num_segments=num_classes)
    if bool(jnp.any(counts == 0)):
        raise ValueError("every target class needs at least one sample to estimate its relationship.")
    return sums / counts[:, None]


def co_tuning_loss(source_logits, labels, relationship) -> jax.Array:
    """Soft cross-entropy of the source head's logits against p(source | target label): the Co-Tuning auxiliary
    loss (published weight 2.3, added to the target cross-entropy).

    Example:
        >>> import jax.numpy as jnp
        >>> relationship = jnp.array([[0.5, 0.5], [0.5, 0.5]])
        >>> print(f"{co_tuning_loss(jnp.zeros((3, 2)), jnp.array([0, 1, 1]), relationship):.4f}")  # log 2
        0.6931
    """
    logits, rel = jnp.asarray(source_logits), jnp.asarray(relationship)
    if logits.ndim != 2 or rel.ndim != 2 or logits.shape[1] != rel.shape[1]:
        raise ValueError(
            f"source_logits (n, C_s) and relationship (C, C_s) must agree on C_s; got {logits.shape} and {rel.shape}."
        )
    return jnp.mean(optax.softmax_cross_entropy(logits, rel[labels]))
