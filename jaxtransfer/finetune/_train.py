"""One small fine-tuning loop: nnx.jit-compiled step, shuffling, progress bar, evaluation every epoch."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer._checks import check_positive_int
from jaxtransfer._progress import progress_bar
from jaxtransfer.finetune._strategy import get_strategy
from jaxtransfer.finetune._surgery import is_head

__all__ = ["evaluate", "finetune"]


def _loss(out, y, task):
    if task == "classification":
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return loss, jnp.mean(jnp.argmax(out, axis=-1) == y)
    out = out.reshape(y.shape)
    loss = jnp.mean(jnp.square(out - y))
    return loss, -loss


@functools.partial(jax.jit, static_argnames=("graphdef", "task"))
def _eval_step(graphdef, state, x, y, task):
    return _loss(nnx.merge(graphdef, state)(x), y, task)


def evaluate(model: nnx.Module, data, *, task: str = "classification", batch_size: int = 256) -> dict:
    """Mean loss and accuracy (classification) or negative MSE (regression) over ``data = (x, y)``.

    Puts the model in eval mode (``model.eval()``: BatchNorm uses its running statistics).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(2, [4], 2, rngs=nnx.Rngs(0))
        >>> x, y = np.ones((6, 2), np.float32), np.zeros(6, np.int32)
        >>> sorted(evaluate(model, (x, y)))
        ['accuracy', 'loss']
    """
    x, y = _check_data(data, "data")
    check_positive_int(batch_size, "batch_size")
    _check_targets(y, task, _num_outputs(model, x), "data")
    model.eval()
    graphdef, state = nnx.split(model)
    total, metric, n = 0.0, 0.0, len(y)
    for start in range(0, n, batch_size):
        xb, yb = jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size])
        loss, m = _eval_step(graphdef, state, xb, yb, task)
        total += float(loss) * len(yb)
        metric += float(m) * len(yb)
    key = "accuracy" if task == "classification" else "neg_mse"
    return {"loss": total / n, key: metric / n}


def _scale_backbone(tx: optax.GradientTransformation, factor: float) -> optax.GradientTransformation:
    """``tx`` for the head, ``tx`` followed by a scaling by ``factor`` for everything else."""

    def labels(params):
        def label(path, _):
            return "head" if is_head(path) else "backbone"

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"head": tx, "backbone": optax.chain(tx, optax.scale(factor))}, labels)


def _num_outputs(model: nnx.Module, x: np.ndarray) -> int:
    """The width of the model's output, from an abstract call on one sample (nothing is computed)."""
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(
        lambda s, xb: nnx.merge(graphdef, s)(xb), state, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    )
    return int(out.shape[-1]) if out.ndim > 1 else 1


def _check_targets(y: np.ndarray, task: str, num_outputs: int, name: str) -> None:
    """Class ids: integers in [0, num_outputs), checked in their own dtype; regression targets: finite reals."""
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{name} targets must be (n,) class ids; got shape {y.shape}.")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} targets must be integer class ids; got dtype {y.dtype} (cast with .astype(int)).")
        bad = np.flatnonzero((y < 0) | (y >= num_outputs))
        if bad.size:
            raise ValueError(
                f"{name} targets must be class ids in [0, {num_outputs}) (the model has {num_outputs} outputs); "
                f"target {bad[0]} is {y[bad[0]]} ({bad.size} out of range). Give the model a head of the right width."
            )
    elif not (np.issubdtype(y.dtype, np.number) and np.isfinite(y.astype(np.float64)).all()):
        raise ValueError(f"{name} targets must be finite real numbers for regression.")


def _check_finite_params(params, epoch: int) -> None:
    """Raises naming the first trained parameter that became NaN or Inf (the loss can stay finite meanwhile, e.g.
    when only a regulariser's gradient is NaN)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not bool(jnp.isfinite(leaf).all()):
            raise FloatingPointError(
                f"the trained parameter {jax.tree_util.keystr(path)} became NaN or Inf in epoch {epoch + 1} (check the "
                "regularizer's gradient, or lower the learning rate)."
            )


def _check_data(data, name):
    try:
        x, y = data
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (inputs, targets).") from err
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} targets.")
    if len(x) == 0:
        raise ValueError(f"{name} is empty.")
    if not np.isfinite(np.asarray(x, dtype=np.float64)).all():
        raise ValueError(f"{name} inputs contain NaN or Inf.")
    return np.asarray(x), np.asarray(y)


def finetune(
    model: nnx.Module,
    train_data,
    *,
    strategy: str = "ssf",
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    eval_data=None,
    task: str = "classification",
    seed: int = 0,
    progress: bool = True,
    regularizer: Callable[[nnx.Module, jax.Array, jax.Array], jax.Array] | None = None,
    backbone_lr_scale: float | None = None,
    freeze_batch_norm: bool = False,
) -> tuple[nnx.Module, list[dict]]:
    """Fine-tunes a copy of ``model``, training only the parameters ``strategy`` selects.

    Args:
        model: an NNX model (``inject_ssf`` / ``inject_lora`` it first for those strategies); not changed.
        train_data: ``(inputs, targets)``; targets are class ids (classification) or reals (regression).
        strategy: ``"linear_probe"``, ``"bitfit"``, ``"ssf"``, ``"lora"`` or ``"full"``.
        optimizer: an optax transformation (default ``optax.adam(1e-3)``: no weight decay, which SSF's gamma
            and beta should not get). For a smaller backbone learning rate use ``optax.multi_transform``.
        epochs, batch_size: the schedule; the last partial batch is dropped (one compiled step shape).
        eval_data: ``(inputs, targets)`` evaluated after every epoch.
        task: ``"classification"`` (softmax cross-entropy) or ``"regression"`` (mean squared error).
        seed: for the shuffling (the run is deterministic given the seed).
        progress: tqdm progress bar with loss and metric.
        regularizer: ``(model, x_batch, y_batch) -> scalar`` added to the loss, e.g. a DELTA or BSS penalty on
            ``model.features(x)`` (see ``jaxtransfer.finetune.regularizers``); parameter-space penalties such as
            L2-SP go into ``optimizer`` instead (``optax.chain(l2_sp(anchor), optax.adam(...))``).
        backbone_lr_scale: scale the updates of every trained parameter outside ``head`` by this factor (the
            published fine-tuning scripts use 0.1: the backbone learns ten times slower than the new head).
        freeze_batch_norm: keep every BatchNorm in inference mode while training: it normalises with the
            pre-trained running statistics, which stay unchanged (its scale and bias still train if selected).
            The usual choice when fine-tuning a pre-trained BatchNorm network on small batches or little data, where
            batch statistics are noisy and running averages adapted for a few hundred steps mix two domains.

    Returns:
        (trained model, history: one dict per epoch with ``loss``, the train metric, the eval metrics and
        ``seconds``, the epoch's wall time, compilation included in the first).

    Raises:
        ValueError: unknown strategy or task, no SSF / LoRA parameters for those strategies, bad data (inputs with
            NaN/Inf, class ids that are not integers in [0, number of outputs), non-finite regression targets),
            epochs or batch_size < 1.
        FloatingPointError: the loss or any trained parameter became NaN/Inf (checked after every epoch).

    Example:
        >>> import numpy as np
        >>> import optax
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(128, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int32)  # separable by the first input
        >>> model, history = finetune(MLP(4, [16], 2, rngs=nnx.Rngs(0)), (x, y), strategy="full",
        ...                           optimizer=optax.adam(1e-2), epochs=20, batch_size=32, progress=False)
        >>> history[0]["train_accuracy"] < 0.6, evaluate(model, (x, y))["accuracy"] > 0.95
        (True, True)
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression'; got {task!r}.")
    spec = get_strategy(strategy)
    wrt = spec.params
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if regularizer is not None and not callable(regularizer):
        raise TypeError(f"regularizer must be a callable (model, x, y) -> scalar; got {type(regularizer).__name__}.")
    x, y = _check_data(train_data, "train_data")
    width = _num_outputs(model, x)
    _check_targets(y, task, width, "train_data")
    if eval_data is not None:
        eval_data = _check_data(eval_data, "eval_data")
        _check_targets(eval_data[1], task, width, "eval_data")
    if spec.check is not None:
        spec.check(model)
    steps_per_epoch = len(x) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(x)} training samples.")
    model = nnx.clone(model)
    model.train()
    if freeze_batch_norm:
        model.set_attributes(use_running_average=True, raise_if_not_found=False)
    tx = optimizer or optax.adam(1e-3)
    if backbone_lr_scale is not None:
        if not backbone_lr_scale > 0:
            raise ValueError(f"backbone_lr_scale must be > 0; got {backbone_lr_scale!r}.")
        tx = _scale_backbone(tx, backbone_lr_scale)
    # The model is split into the trained parameters and everything else; a pure jax.jit step differentiates the
    # former only (the rest, e.g. BatchNorm statistics, is threaded through). This works in NNX graph and tree mode.
    graphdef, params, rest = nnx.split(model, wrt, ...)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, rest, opt_state, xb, yb):
        def loss_fn(params, rest):
            m = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables at this trace level
            loss, metric = _loss(m(xb), yb, task)
            if regularizer is not None:
                loss = loss + regularizer(m, xb, yb)
            return loss, (metric, nnx.split(m, wrt, ...)[2])

        (loss, (metric, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss, metric

    rng = np.random.default_rng(seed)
    history = []
    bar = progress_bar(enabled=progress, desc=f"finetune[{spec.name}]", unit="step", total=epochs * steps_per_epoch)
    for epoch in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(len(x))
        losses, metrics = [], []
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            params, rest, opt_state, loss, metric = step(
                params, rest, opt_state, jnp.asarray(x[idx]), jnp.asarray(y[idx])
            )
            losses.append(loss)
            metrics.append(metric)
            bar.update(1)
        loss, metric = float(jnp.mean(jnp.stack(losses))), float(jnp.mean(jnp.stack(metrics)))
        seconds = time.perf_counter() - started  # the first epoch includes compilation
        _check_finite_params(params, epoch)  # first: it names the parameter (a NaN gradient, then a NaN loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} in epoch {epoch + 1}; lower the learning rate.")
        record = {
            "epoch": epoch + 1,
            "seconds": seconds,
            "loss": loss,
            "train_" + ("accuracy" if task == "classification" else "neg_mse"): metric,
        }
        if eval_data is not None:
            snapshot = nnx.merge(graphdef, params, rest)
            record.update({f"eval_{k}": v for k, v in evaluate(snapshot, eval_data, task=task).items()})
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
    bar.close()
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model, history
