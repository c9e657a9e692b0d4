"""Transfer from early pre-training checkpoints (Neyshabur, Sedghi and Zhang, NeurIPS 2020, section 5: downstream
accuracy can saturate long before pre-training ends, and models fine-tuned from a checkpoint land in one basin once
the checkpoint is past the early phase).

For each checkpoint: fine-tune it twice on the target (two shuffling seeds), report both test accuracies, the loss
barrier on the straight line between the two fine-tuned models (a small barrier: one basin), the distance between
them, and how far fine-tuning moved each from its start.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer.finetune import apply_fn, finetune
from jaxtransfer.finetune import evaluate as evaluate_model
from jaxtransfer.landscape import barrier, linear_path
from jaxtransfer.similarity import param_distance

__all__ = ["pretraining_checkpoints", "transfer_from_checkpoints"]


def pretraining_checkpoints(model: nnx.Module, source, *, epochs: Sequence[int] = (1, 2, 4, 8), **finetune_kwargs):
    """Checkpoints of one pre-training run on ``source``: ``{epoch: model}`` after each of ``epochs`` (increasing).

    The run is continued segment by segment (``finetune`` with ``strategy="full"`` and the given settings); each
    segment starts a fresh optimiser state, so with Adam this approximates one uninterrupted run (the moment
    estimates restart), which is exact for plain SGD at a constant learning rate.

    Example (an MLP on the real digits 0-4, flattened):
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> from jaxtransfer.data import digits_transfer
        >>> x, y = digits_transfer(seed=0)["source"]
        >>> source = (x.reshape(len(x), -1), y)
        >>> ckpts = pretraining_checkpoints(MLP(64, [16], 5, rngs=nnx.Rngs(0)), source, epochs=(1, 2), progress=False)
        >>> sorted(ckpts)
        [1, 2]
    """
    epochs = [int(e) for e in epochs]
    if not epochs or any(e < 1 for e in epochs) or any(b <= a for a, b in itertools.pairwise(epochs)):
        raise ValueError(f"epochs must be increasing positive integers; got {epochs}.")
    finetune_kwargs.setdefault("strategy", "full")
    out, current, done = {}, model, 0
    for e in epochs:
        current, _ = finetune(current, source, epochs=e - done, **finetune_kwargs)
        out[e] = nnx.clone(current)
        done = e
    return out


def _cross_entropy_fn(model: nnx.Module, batch_stats_from):
    _, fn = apply_fn(model, batch_stats_from=batch_stats_from)

    def loss(p, data):
        logits = fn(p, data[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, data[1]).mean()

    return loss


def transfer_from_checkpoints(
    checkpoints: Mapping,
    train,
    test,
    *,
    new_head: Callable[[nnx.Module], nnx.Module] | None = None,
    seeds: tuple[int, int] = (0, 1),
    num: int = 11,
    batch_stats_from=None,
    **finetune_kwargs,
) -> list[dict]:
    """Fine-tunes every checkpoint twice and measures accuracy and basin (the module docstring).

    Args:
        checkpoints: ``{label: model}`` (e.g. from :func:`pretraining_checkpoints`), in the order to report.
        train, test: (x, y) arrays of the target task.
        new_head: turns a checkpoint into the model to fine-tune (e.g. a new classifier for the target classes);
            applied once per checkpoint, so both runs start from the same weights.
        seeds: the two fine-tuning runs' seeds (data order).
        num: points on the line between the two fine-tuned models.
        batch_stats_from: inputs to re-estimate BatchNorm statistics at every point of that line (models with
            BatchNorm: see :func:`jaxtransfer.finetune.apply_fn`).
        finetune_kwargs: passed to :func:`jaxtransfer.finetune.finetune` (``strategy``, ``optimizer``, ``epochs``...).

    Returns:
        One dict per checkpoint: ``checkpoint``, ``test_accuracy`` (the two runs), ``mean_accuracy``, ``barrier``
        (test cross-entropy), ``distance_between_runs``, ``relative_distance_from_start`` (the two runs).

    Example (one random-init "checkpoint", 64 real digits, one epoch: a smoke run):
        >>> from flax import nnx
        >>> from jaxtransfer.data import digits_transfer
        >>> from jaxtransfer.models import MLP
        >>> task = digits_transfer(seed=0)
        >>> (x, y), (xt, yt) = task["target_train"], task["target_test"]
        >>> train, test = (x[:64].reshape(64, -1), y[:64]), (xt[:32].reshape(32, -1), yt[:32])
        >>> rows = transfer_from_checkpoints({"init": MLP(64, [8], 5, rngs=nnx.Rngs(0))}, train, test, epochs=1, num=3)
        >>> rows[0]["checkpoint"], len(rows[0]["test_accuracy"]), rows[0]["distance_between_runs"] > 0
        ('init', 2, True)
    """
    if not isinstance(checkpoints, Mapping) or not checkpoints:
        raise ValueError("checkpoints must be a non-empty dict label -> model.")
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different seeds; got {seeds!r}.")
    finetune_kwargs.setdefault("strategy", "full")
    finetune_kwargs.setdefault("progress", False)
    xt, yt = jnp.asarray(test[0]), jnp.asarray(test[1])
    rows = []
    for label, ckpt in checkpoints.items():
        start = new_head(nnx.clone(ckpt)) if new_head is not None else nnx.clone(ckpt)
        runs = [finetune(start, train, seed=s, **finetune_kwargs)[0] for s in seeds]
        accuracy = [float(evaluate_model(m, test)["accuracy"]) for m in runs]
        p0, p1, p2 = (nnx.state(m, nnx.Param) for m in (start, *runs))
        loss = _cross_entropy_fn(runs[0], batch_stats_from)
        height, _ = barrier(linear_path(loss, p1, p2, (xt, yt), num=num))
        rows.append({
            "checkpoint": label,
            "test_accuracy": accuracy,
            "mean_accuracy": float(np.mean(accuracy)),
            "barrier": height,
            "distance_between_runs": param_distance(p1, p2, per_leaf=False)["total"],
            "relative_distance_from_start": [param_distance(p0, p, per_leaf=False)["relative"] for p in (p1, p2)],
        })  # fmt: skip
    return rows
