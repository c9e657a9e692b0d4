"""The trainer's losses and metrics, per task: per-example values, so that padded rows can be masked out.

A *task* names a loss and the metrics reported with it:

========================  =========================================  ==========================================
task                      loss (per example)                         metrics
========================  =========================================  ==========================================
``"classification"``      softmax cross-entropy (label smoothing)    ``accuracy``, ``top{k}_accuracy``
``"multilabel"``          sigmoid binary cross-entropy, mean over    ``mean_average_precision`` (``evaluate``),
                          the labels                                 ``label_accuracy``
``"regression"``          squared error, mean over the outputs       ``neg_mse``
========================  =========================================  ==========================================

Classification targets are integer class ids (n,) or probability rows (n, C) (e.g. after mixup / cutmix).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["TASKS", "mean_average_precision", "per_example_loss", "top_k_accuracy"]

TASKS = ("classification", "multilabel", "regression")


def check_task(task) -> None:
    """ValueError unless ``task`` is one of :data:`TASKS` or a callable."""
    if not (callable(task) or task in TASKS):
        raise ValueError(f"task must be one of {TASKS} or a callable (outputs, targets) -> (n,) losses; got {task!r}.")


def per_example_loss(
    outputs: jax.Array, targets: jax.Array, task: str | Callable = "classification", *, label_smoothing: float = 0.0
) -> jax.Array:
    """The loss of each example, (n,), in float32 (or the outputs' wider float type).

    Args:
        outputs: (n, C) logits (classification, multilabel) or (n, K) / (n,) predictions (regression).
        targets: class ids (n,) or probability rows (n, C); multilabel: (n, C) in {0, 1} (or soft); regression:
            the shape of ``outputs`` (or (n,) for a single output).
        task: see the module docstring, or a callable ``(outputs, targets) -> (n,)``.
        label_smoothing: classification only: the targets become (1 - s) onehot + s / C (Szegedy et al. 2016).

    Example:
        >>> import jax.numpy as jnp
        >>> print(per_example_loss(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
        [1.3862944 1.3862944]
        >>> print(per_example_loss(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 1.0]), "regression"))
        [1. 4.]
    """
    if callable(task):
        return task(outputs, targets)
    check_task(task)
    dtype = jnp.promote_types(outputs.dtype, jnp.float32)
    out = outputs.astype(dtype)
    if task == "classification":
        c = out.shape[-1]
        soft = targets.astype(dtype) if targets.ndim == 2 else jax.nn.one_hot(targets, c, dtype=dtype)
        if label_smoothing:
            soft = (1.0 - label_smoothing) * soft + label_smoothing / c
        return optax.softmax_cross_entropy(out, soft)
    if task == "multilabel":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out, targets.astype(dtype)), axis=-1)
    out = out.reshape(targets.shape)
    sq = jnp.square(out - targets.astype(dtype))
    return sq.reshape(sq.shape[0], -1).mean(axis=1)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
    """(n,) 1.0 where the true class is among the k largest logits (ties broken by the lower class id).

    Example:
        >>> import jax.numpy as jnp
        >>> logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
        >>> print(top_k_accuracy(logits, jnp.array([2, 0]), k=1), top_k_accuracy(logits, jnp.array([2, 0]), k=2))
        [0. 1.] [1. 1.]
    """
    if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= logits.shape[-1]):
        raise ValueError(f"k must be an integer in [1, {logits.shape[-1]}] (the number of classes); got {k!r}.")
    if labels.ndim == 2:  # probability rows: the most likely class counts as the label
        labels = jnp.argmax(labels, axis=-1)
    true = jnp.take_along_axis(logits, labels[:, None], axis=1)
    ids = jnp.arange(logits.shape[1])[None, :]
    ahead = (logits > true) | ((logits == true) & (ids < labels[:, None]))
    return (jnp.sum(ahead, axis=1) < k).astype(jnp.float32)


def per_example_metrics(outputs, targets, task, top_k: tuple[int, ...] = ()) -> dict[str, jax.Array]:
    """The (n,) metric values the trainer averages (mean average precision needs all rows: see ``evaluate``)."""
    if callable(task):
        return {}
    if task == "classification":
        out = {"accuracy": top_k_accuracy(outputs, targets, 1)}
        out.update({f"top{k}_accuracy": top_k_accuracy(outputs, targets, k) for k in top_k if k != 1})
        return out
    if task == "multilabel":
        hit = (outputs > 0) == (targets > 0.5)
        return {"label_accuracy": jnp.mean(hit.astype(jnp.float32), axis=-1)}
    return {"neg_mse": -per_example_loss(outputs, targets, "regression")}


def mean_average_precision(scores, labels) -> float:
    """Mean over the labels of the average precision of ranking the samples by ``scores`` (multi-label metric).

    AP of one label = the mean, over its positive samples, of the precision among the samples scored at least as
    high (ties count against: all tied samples are ranked first). Labels without a positive sample are left out.

    Args:
        scores: (n, C) real scores (logits or probabilities).
        labels: (n, C) in {0, 1}.

    Example:
        >>> import numpy as np
        >>> scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.2]])
        >>> labels = np.array([[1, 0], [0, 1], [1, 0]])
        >>> round(mean_average_precision(scores, labels), 4)  # label 0: (1 + 2/3) / 2, label 1: 1
        0.9167
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels) > 0.5
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"scores and labels must both be (n, C); got {s.shape} and {y.shape}.")
    aps = []
    for c in range(s.shape[1]):
        pos = y[:, c]
        if not pos.any():
            continue
        # rank of each positive: samples scored >= it (ties against), positives among them
        at_least = s[:, c][None, :] >= s[pos, c][:, None]  # (P, n)
        precision = (at_least & pos[None, :]).sum(1) / at_least.sum(1)
        aps.append(precision.mean())
    if not aps:
        raise ValueError("mean average precision needs at least one positive label.")
    return float(np.mean(aps))
