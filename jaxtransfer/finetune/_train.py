"""The fine-tuning trainer: arrays or streams, per-batch transforms on device, per-parameter rules, mixed precision,
data-parallel meshes, best-epoch selection, early stopping, checkpoints and exact resume.

One compiled train step and one eval step exist per (model structure, batch shape, recipe) and are cached across
calls: a second ``finetune`` on the same model, shapes and optimiser object compiles nothing, and the last partial
batch is padded and masked instead of compiled again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer._checks import check_positive_int
from jaxtransfer._progress import progress_bar
from jaxtransfer.finetune._data import epoch_batches, is_array_data, takes_epoch
from jaxtransfer.finetune._losses import check_task, mean_average_precision, per_example_loss, per_example_metrics
from jaxtransfer.finetune._optim import BuiltinAdam, build_optimizer, learning_rate_schedule
from jaxtransfer.finetune._rules import Rule, check_rules, rule_for
from jaxtransfer.finetune._strategy import get_strategy
from jaxtransfer.finetune._surgery import path_str

__all__ = ["evaluate", "finetune"]

_PRECISIONS = {None: None, "float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_GROWTH_INTERVAL = 2000  # float16 loss scaling: double the scale after this many finite steps (as in Apex / jmp)


def _is_float(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _adapter_filter():
    """Variable types of the multiplicative and low-rank adapters, which stay float32 under mixed precision."""
    from jaxtransfer.finetune._ia3 import IA3Param
    from jaxtransfer.finetune._ssf import SSFParam

    return nnx.Any(SSFParam, nnx.LoRAParam, IA3Param)


def _compute_states(states, dtype):
    """The NNX states with their float leaves cast to ``dtype``, adapter parameters kept (mixed precision)."""
    keep = _adapter_filter()
    out = []
    for state in states:
        kept, other = nnx.split_state(state, keep, ...)
        out += [kept, jax.tree.map(lambda v: v.astype(dtype) if _is_float(v) else v, other)]
    return out


def _like(new, old):
    """``new`` with the dtypes of ``old`` (mixed precision returns BatchNorm statistics in the compute type)."""
    return jax.tree.map(lambda n, o: n.astype(o.dtype) if hasattr(o, "dtype") else n, new, old)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """Everything static about a train step (hashable: the key of the compiled-step cache)."""

    graphdef: object
    wrt: object
    tx: optax.GradientTransformation
    task: object
    label_smoothing: float
    top_k: tuple[int, ...]
    transform: Callable | None
    regularizer: Callable | None
    compute_dtype: object
    dynamic_scale: bool
    ema_decay: float | None


def _forward_loss(recipe: _Recipe, params, rest, x, y, mask):
    dtype = recipe.compute_dtype
    if dtype is not None:
        states = _compute_states((params, rest), dtype)
        xin = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    else:
        states, xin = (params, rest), x
    model = nnx.merge(recipe.graphdef, *states, copy=True)
    out = model(xin).astype(jnp.float32)
    per = per_example_loss(out, y, recipe.task, label_smoothing=recipe.label_smoothing)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(per * mask) / count
    if recipe.regularizer is not None:
        loss = loss + recipe.regularizer(model, xin, y)
    metrics = {k: jnp.sum(v * mask) for k, v in per_example_metrics(out, y, recipe.task, recipe.top_k).items()}
    new_rest = _like(nnx.split(model, recipe.wrt, ...)[2], rest)
    return loss, (metrics, new_rest)


@functools.partial(jax.jit, static_argnames=("recipe",), donate_argnames=("params", "opt_state", "aux"))
def _train_step(recipe: _Recipe, params, rest, opt_state, aux, x, y, mask, key):
    if recipe.transform is not None:
        x, y = recipe.transform((x, y), key)
    scale = aux["loss_scale"]

    def scaled(params):
        loss, extra = _forward_loss(recipe, params, rest, x, y, mask)
        return loss * scale, (loss, *extra)

    (_, (loss, metrics, new_rest)), grads = jax.value_and_grad(scaled, has_aux=True)(params)
    grads = jax.tree.map(lambda g: g / scale, grads)
    updates, new_opt = recipe.tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_aux = dict(aux)
    if recipe.dynamic_scale:  # float16: skip a step whose gradients overflowed, halve the scale; grow it slowly
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        pick = functools.partial(jax.tree.map, lambda a, b: jnp.where(finite, a, b))
        new_params, new_opt, new_rest = pick(new_params, params), pick(new_opt, opt_state), pick(new_rest, rest)
        good = jnp.where(finite, aux["good_steps"] + 1, 0)
        grow = good >= _GROWTH_INTERVAL
        new_aux["loss_scale"] = jnp.where(finite, jnp.where(grow, scale * 2, scale), jnp.maximum(scale / 2, 1.0))
        new_aux["good_steps"] = jnp.where(grow, 0, good)
    if recipe.ema_decay is not None:
        d = recipe.ema_decay
        new_aux["ema"] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, aux["ema"], new_params)
    return new_params, new_rest, new_opt, new_aux, loss, metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "task", "top_k", "want_outputs"))
def _eval_step(graphdef, state, x, y, mask, task, top_k, want_outputs):
    out = nnx.merge(graphdef, state)(x).astype(jnp.float32)
    per = per_example_loss(out, y, task)
    metrics = {k: jnp.sum(v * mask) for k, v in per_example_metrics(out, y, task, top_k).items()}
    return jnp.sum(per * mask), metrics, (out if want_outputs else None)


def _metric_name(task) -> str:
    return {"classification": "accuracy", "multilabel": "label_accuracy", "regression": "neg_mse"}.get(task, "loss")


def _check_arrays(data, name: str):
    """Validates ``(x, y)`` arrays (shapes, finiteness)."""
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ValueError(f"{name} must be a pair (inputs, targets), an iterable of such batches or a function.")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} targets.")
    if len(x) == 0:
        raise ValueError(f"{name} is empty.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} inputs contain NaN or Inf.")
    return x, y


def _check_targets(y: np.ndarray, task, num_outputs: int, name: str) -> None:
    """Class ids: integers in [0, num_outputs), checked in their own dtype (or probability rows); multilabel: (n, C)
    finite; regression: finite reals."""
    if callable(task):
        return
    if task == "classification" and y.ndim == 2 and np.issubdtype(y.dtype, np.floating):
        if y.shape[1] != num_outputs or not np.isfinite(y.astype(np.float64)).all() or (y < 0).any():
            raise ValueError(f"{name} probability targets must be (n, {num_outputs}) rows, finite and >= 0.")
        return
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{name} targets must be (n,) class ids or (n, C) probability rows; got shape {y.shape}.")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} targets must be integer class ids; got dtype {y.dtype} (cast with .astype(int)).")
        bad = np.flatnonzero((y < 0) | (y >= num_outputs))
        if bad.size:
            raise ValueError(
                f"{name} targets must be class ids in [0, {num_outputs}) (the model has {num_outputs} outputs); "
                f"target {bad[0]} is {y[bad[0]]} ({bad.size} out of range). Give the model a head of the right width."
            )
        return
    if not (np.issubdtype(y.dtype, np.number) and np.isfinite(y.astype(np.float64)).all()):
        raise ValueError(f"{name} targets must be finite real numbers for {task}.")
    if task == "multilabel" and (y.ndim != 2 or y.shape[1] != num_outputs):
        raise ValueError(f"{name} multilabel targets must be (n, {num_outputs}); got shape {y.shape}.")


def _num_outputs(model: nnx.Module, x: np.ndarray) -> int:
    m = nnx.clone(model)
    m.eval()
    out = nnx.eval_shape(lambda m, x: m(x), m, jnp.asarray(x[:1]))
    return int(out.shape[-1]) if out.ndim > 1 else 1


def _looks_like_arrays(data) -> bool:
    return isinstance(data, tuple | list) and len(data) == 2 and all(hasattr(a, "shape") for a in data)


def _check_stream(data, name: str) -> None:
    if hasattr(data, "shape") or isinstance(data, str | bytes | dict):
        raise ValueError(
            f"{name} must be a pair (inputs, targets) of arrays, an iterable of such batches or a function returning "
            f"one; got {type(data).__name__}."
        )


def _peek(data):
    """The first batch's inputs and targets (numpy), without consuming a one-shot iterator of the caller's."""
    if is_array_data(data):
        return np.asarray(data[0][:1]), np.asarray(data[1][:1])
    if callable(data):
        batch = next(iter(data(0) if takes_epoch(data) else data()))
    elif isinstance(data, list | tuple):
        batch = data[0]
    else:
        raise ValueError(
            "a one-shot iterator cannot be inspected before training; pass a list of batches or a function that "
            "returns a fresh iterator."
        )
    return np.asarray(batch[0][:1]), np.asarray(batch[1][:1])


def evaluate(
    model: nnx.Module,
    data,
    *,
    task: str | Callable = "classification",
    batch_size: int = 256,
    top_k: Sequence[int] = (),
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> dict:
    """Mean loss and the task's metrics over ``data`` (arrays or a stream of batches, as ``finetune`` takes).

    The model is evaluated in eval mode (BatchNorm uses its running statistics) on a copy; ``model`` is unchanged.
    Batches are padded to ``batch_size`` and masked, so one compiled step serves them all (cached across calls).

    Returns:
        ``{"loss", "accuracy"}`` (+ ``"top{k}_accuracy"``) for classification, ``{"loss", "label_accuracy",
        "mean_average_precision"}`` for multilabel, ``{"loss", "neg_mse"}`` for regression, ``{"loss"}`` for a
        callable task.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(2, [4], 2, rngs=nnx.Rngs(0))
        >>> x, y = np.ones((6, 2), np.float32), np.zeros(6, np.int32)
        >>> sorted(evaluate(model, (x, y)))
        ['accuracy', 'loss']
    """
    check_task(task)
    check_positive_int(batch_size, "batch_size")
    top_k = tuple(int(k) for k in top_k)
    if _looks_like_arrays(data):
        x, y = _check_arrays(data, "data")
        _check_targets(y, task, _num_outputs(model, x), "data")
        data = (x, y)
        batch_size = min(batch_size, len(x))
    else:
        _check_stream(data, "data")
    if mesh is not None:  # padding fills the batch up to a multiple of the devices
        devices = mesh.shape[mesh.axis_names[0]]
        batch_size = -(-batch_size // devices) * devices
    m = nnx.clone(model)
    m.eval()
    graphdef, state = nnx.split(m)
    put = _placer(mesh, batch_size)
    if mesh is not None:
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    total, sums, count, outputs, targets = 0.0, {}, 0.0, [], []
    want = task == "multilabel"
    bar = progress_bar(enabled=progress, desc="evaluate", unit="batch")
    for xb, yb, mask in epoch_batches(data, batch_size, epoch=0, seed=0, shuffle=False, name="data"):
        loss, metrics, out = _eval_step(graphdef, state, *put(xb, yb, mask), task, top_k, want)
        total += float(loss)
        count += float(mask.sum())
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if want:
            keep = mask > 0
            outputs.append(np.asarray(out)[keep])
            targets.append(yb[keep])
        bar.update(1)
    bar.close()
    if count == 0:
        raise ValueError("data yielded no batch.")
    result = {"loss": total / count, **{k: v / count for k, v in sums.items()}}
    if want:
        result["mean_average_precision"] = mean_average_precision(np.concatenate(outputs), np.concatenate(targets))
    return result


def _placer(mesh, batch_size):
    """Puts a batch on the device(s): sharded along the mesh's first axis when ``mesh`` is given."""
    if mesh is None:
        return lambda *arrays: tuple(jnp.asarray(a) for a in arrays)
    axis = mesh.axis_names[0]
    if batch_size % mesh.shape[axis]:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the mesh's {mesh.shape[axis]} devices.")
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    return lambda *arrays: tuple(jax.device_put(a, sharding) for a in arrays)


def _leaf_rules(params, rules: tuple[Rule, ...], weight_decay: float):
    """(frozen paths, decay mask tree, multiplier tree) of the trained parameters."""
    flat = jax.tree_util.tree_leaves_with_path(params)
    chosen = [rule_for(_variable_path(p), rules) for p, _ in flat]
    treedef = jax.tree.structure(params)
    mask = [
        r.weight_decay if r.weight_decay is not None else np.ndim(v) >= 2
        for r, (_, v) in zip(chosen, flat, strict=True)
    ]
    mults = [r.lr_scale for r in chosen]
    if weight_decay == 0 and any(r.weight_decay for r in chosen):
        raise ValueError("a rule switches weight decay on but weight_decay=0; give finetune(weight_decay=...).")
    return jax.tree.unflatten(treedef, mask), jax.tree.unflatten(treedef, mults)


def _variable_path(path: tuple) -> tuple:
    """A State leaf's key path without the trailing ``.value`` of its Variable: the module path of the parameter."""
    last = path[-1] if path else None
    return path[:-1] if isinstance(last, jax.tree_util.GetAttrKey) and last.name == "value" else path


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """NNX filter of the parameters a rule freezes (hashable: part of the compiled step's cache key)."""

    rules: tuple[Rule, ...]

    def __call__(self, path, _value) -> bool:
        return rule_for(path, self.rules).frozen


class _Checkpointer:
    """Orbax checkpoints of the whole training state at epoch ends (atomic, keep-last-k) and the resume."""

    def __init__(self, directory, keep: int):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest(self):
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        args = self.ocp.args.Composite(state=self.ocp.args.StandardSave(state), meta=self.ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def delete(self, step: int) -> None:
        self.manager.delete(step)

    def restore(self, epoch: int, like):
        abstract = jax.tree.map(self.ocp.utils.to_shape_dtype_struct, like)
        args = self.ocp.args.Composite(state=self.ocp.args.StandardRestore(abstract), meta=self.ocp.args.JsonRestore())
        out = self.manager.restore(epoch, args=args)
        return out["state"], out["meta"]

    def close(self):
        self.manager.close()


def finetune(
    model: nnx.Module,
    train_data,
    *,
    strategy: str = "ssf",
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    lr_decay: str = "constant",
    param_rules: Sequence[Rule] | Rule | None = None,
    clip_grad_norm: float | None = None,
    accumulate_steps: int = 1,
    ema_decay: float | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    steps_per_epoch: int | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    transform: Callable | None = None,
    eval_data=None,
    eval_batch_size: int = 256,
    task: str | Callable = "classification",
    label_smoothing: float = 0.0,
    top_k: Sequence[int] = (),
    select: str = "last",
    select_metric: str | None = None,
    patience: int | None = None,
    precision: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    checkpoint_every_steps: int | None = None,
    keep_checkpoints: int = 2,
    seed: int = 0,
    progress: bool = True,
    regularizer: Callable[[nnx.Module, jax.Array, jax.Array], jax.Array] | None = None,
    backbone_lr_scale: float | None = None,
    freeze_batch_norm: bool | None = None,
) -> tuple[nnx.Module, list[dict]]:
    """Fine-tunes a copy of ``model``, training only the parameters ``strategy`` selects (and no rule freezes).

    Args:
        model: an NNX model (``inject_ssf`` / ``inject_lora`` it first for those strategies); not changed.
        train_data: ``(inputs, targets)`` arrays, a function returning a fresh iterable of ``(x, y)`` batches per
            epoch, or a re-iterable of batches (see :mod:`jaxtransfer.finetune._data`); batches up to
            ``batch_size`` rows, the short ones padded and masked.
        strategy: a registered strategy: ``"linear_probe"``, ``"bitfit"``, ``"ssf"``, ``"lora"``, ``"full"``, ...
        optimizer: any optax transformation; default the built-in Adam with ``learning_rate``, ``warmup_steps``,
            ``lr_decay`` and decoupled ``weight_decay`` (AdamW). Pass the same object again to reuse the compiled
            step.
        learning_rate, warmup_steps, lr_decay: the built-in schedule (``"constant"`` or ``"cosine"`` to 0 at the
            end; cosine with a stream needs ``steps_per_epoch``).
        weight_decay: decoupled weight decay of the built-in optimiser, on leaves with >= 2 axes unless a rule says
            otherwise (default 0: SSF's gamma and beta, and biases, should not decay).
        param_rules: :class:`Rule` s by path glob / regex: learning-rate multiplier, weight decay on/off, frozen.
        clip_grad_norm: clip the global gradient norm first.
        accumulate_steps: average the gradients of this many batches per update (``optax.MultiSteps``).
        ema_decay: keep an exponential moving average of the trained weights (e.g. 0.999); evaluation, selection
            and the returned model use it.
        epochs, batch_size: the schedule; ``steps_per_epoch`` only sizes the cosine schedule and the progress bar
            of a stream.
        shuffle: reshuffle arrays every epoch (seeded by ``(seed, epoch)``); streams come in their own order.
        drop_last: skip the last partial batch (padding and masking it is the default).
        transform: ``(batch, key) -> batch`` applied to each training batch inside the compiled step, with a key
            derived from ``seed`` and the step (see :mod:`jaxtransfer.finetune.transforms`).
        eval_data, eval_batch_size: evaluated after every epoch (arrays or a stream).
        task: ``"classification"``, ``"multilabel"``, ``"regression"``, or ``(outputs, targets) -> (n,) losses``.
        label_smoothing: classification only.
        top_k: also report top-k accuracies (classification).
        select: ``"last"`` returns the last epoch's weights, ``"best"`` those of the best epoch by
            ``select_metric`` (default the eval accuracy / label accuracy / negative MSE / loss; needs eval_data).
        patience: stop after this many epochs without improvement of ``select_metric``.
        precision: ``None`` (float32), ``"bfloat16"`` or ``"float16"``: the forward and backward pass compute in
            that type from float32 master weights; adapter parameters (SSF, LoRA) stay float32; float16 uses
            dynamic loss scaling (a step with overflowing gradients is skipped and the scale halved).
        mesh: a ``jax.sharding.Mesh``: data-parallel over its first axis (batches sharded, parameters
            replicated; XLA averages the gradients). ``batch_size`` must be a multiple of that axis' devices.
        checkpoint_dir: save the whole training state every ``checkpoint_every`` epochs with orbax (atomic,
            the last ``keep_checkpoints`` kept); calling ``finetune`` again with the same directory resumes from the
            latest one and ends with the weights an uninterrupted run would have. ``checkpoint_every_steps`` also
            saves every that many steps inside an epoch; a resume then skips the batches the epoch already trained
            on (arrays: the same order from ``(seed, epoch)``; a stream is read again up to that point).
        seed: shuffling and transform keys; the run is deterministic given the seed.
        progress: a progress bar (it says when the step is compiling, then shows examples/s and an ETA).
        regularizer: ``(model, x_batch, y_batch) -> scalar`` added to the loss (DELTA, BSS, ...).
        backbone_lr_scale: shorthand for ``Rule("*", lr_scale=s)`` after a rule keeping ``head`` at 1.
        freeze_batch_norm: keep BatchNorm in inference mode (pre-trained running statistics, unchanged; its scale
            and bias still train if selected). Default: frozen for every strategy except ``"full"``: adapting the
            statistics on a few hundred images cost SSF on EfficientNet-Lite0 a third of its accuracy (test 0.47
            against 0.75 frozen, README).

    Returns:
        (trained model in eval mode, history: one dict per epoch with ``epoch``, ``loss``, the train metric,
        ``eval_*`` metrics, ``seconds`` (compile included in the first epoch's), ``compile_seconds``,
        ``examples_per_second`` (compile excluded), ``selected`` (True on the epoch whose weights are returned),
        ``stopped_early`` on the last).

    Raises:
        ValueError: unknown strategy or task, no SSF / LoRA parameters for those strategies, bad data (inputs with
            NaN/Inf, class ids that are not integers in [0, number of outputs), non-finite targets), bad settings.
        FloatingPointError: the loss or any trained parameter became NaN/Inf (checked after every epoch).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(128, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int32)  # separable by the first input
        >>> model, history = finetune(MLP(4, [16], 2, rngs=nnx.Rngs(0)), (x, y), strategy="full",
        ...                           learning_rate=1e-2, epochs=20, batch_size=32, progress=False)
        >>> history[0]["train_accuracy"] < 0.6, evaluate(model, (x, y))["accuracy"] > 0.95
        (True, True)
    """
    # ---- settings ----
    check_task(task)
    spec = get_strategy(strategy)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(accumulate_steps, "accumulate_steps")
    check_positive_int(checkpoint_every, "checkpoint_every")
    if checkpoint_every_steps is not None:
        check_positive_int(checkpoint_every_steps, "checkpoint_every_steps")
    check_positive_int(keep_checkpoints, "keep_checkpoints")
    if regularizer is not None and not callable(regularizer):
        raise TypeError(f"regularizer must be a callable (model, x, y) -> scalar; got {type(regularizer).__name__}.")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a callable (batch, key) -> batch; got {type(transform).__name__}.")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be None, 'float32', 'bfloat16' or 'float16'; got {precision!r}.")
    if select not in ("last", "best"):
        raise ValueError(f"select must be 'last' or 'best'; got {select!r}.")
    if (select == "best" or patience is not None) and eval_data is None and select_metric != "loss":
        raise ValueError("select='best' and patience need eval_data to measure the epochs on.")
    if patience is not None:
        check_positive_int(patience, "patience")
    if ema_decay is not None and not (0 < ema_decay < 1):
        raise ValueError(f"ema_decay must be in (0, 1); got {ema_decay!r}.")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0; got {clip_grad_norm!r}.")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}.")
    if not (isinstance(weight_decay, int | float) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
    if optimizer is not None and (weight_decay or warmup_steps or lr_decay != "constant"):
        raise ValueError(
            "weight_decay, warmup_steps and lr_decay configure the built-in optimiser; with optimizer= give your "
            "transformation its own schedule and decay (e.g. optax.adamw(schedule, weight_decay=..., mask=...))."
        )
    rules = check_rules(param_rules)
    if backbone_lr_scale is not None:
        if not backbone_lr_scale > 0:
            raise ValueError(f"backbone_lr_scale must be > 0; got {backbone_lr_scale!r}.")
        rules = (*rules, Rule("head"), Rule("head.*"), Rule("*", lr_scale=float(backbone_lr_scale)))
    top_k = tuple(int(k) for k in top_k)

    # ---- data ----
    arrays = _looks_like_arrays(train_data)
    if arrays:
        x, y = _check_arrays(train_data, "train_data")
        train_data = (x, y)
        n_steps = (len(x) // batch_size) if drop_last else math.ceil(len(x) / batch_size)
        if len(x) < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the {len(x)} training samples.")
    else:
        _check_stream(train_data, "train_data")
        n_steps = steps_per_epoch
    x0, y0 = _peek(train_data)
    width = _num_outputs(model, x0)
    _check_targets(y0 if not arrays else train_data[1], task, width, "train_data")
    if eval_data is not None and _looks_like_arrays(eval_data):
        ex, ey = _check_arrays(eval_data, "eval_data")
        _check_targets(ey, task, width, "eval_data")
        eval_data = (ex, ey)
    if spec.check is not None:
        spec.check(model)

    # ---- model split ----
    model = nnx.clone(model)
    model.train()
    freeze = (spec.name != "full") if freeze_batch_norm is None else bool(freeze_batch_norm)
    if freeze:
        model.set_attributes(use_running_average=True, raise_if_not_found=False)
    wrt = nnx.All(spec.params, nnx.Not(_Frozen(rules))) if any(r.frozen for r in rules) else spec.params
    graphdef, params, rest = nnx.split(model, wrt, ...)
    params = jax.tree.map(jnp.copy, params)  # the step donates its buffers: never the caller's arrays
    if not jax.tree.leaves(params):
        raise ValueError(f"strategy {spec.name!r} with these rules trains no parameter.")
    decay_mask, mults = _leaf_rules(params, rules, weight_decay)
    if optimizer is None:
        total = None if n_steps is None else epochs * math.ceil(n_steps / accumulate_steps)
        schedule = learning_rate_schedule(learning_rate, warmup_steps=warmup_steps, decay=lr_decay, total_steps=total)
        base = BuiltinAdam(schedule)
    else:
        base = optimizer
    tx = build_optimizer(base, params, weight_decay=weight_decay, decay_mask=decay_mask if weight_decay else None,
                         multipliers=mults, clip=clip_grad_norm, accumulate=accumulate_steps)  # fmt: skip
    compute_dtype = _PRECISIONS[precision]
    recipe = _Recipe(graphdef, wrt, tx, task, float(label_smoothing), top_k, transform, regularizer, compute_dtype,
                     precision == "float16", ema_decay)  # fmt: skip
    opt_state = tx.init(params)
    aux = {"loss_scale": jnp.asarray(2.0**15 if precision == "float16" else 1.0, jnp.float32),
           "good_steps": jnp.zeros((), jnp.int32)}  # fmt: skip
    if ema_decay is not None:
        aux["ema"] = jax.tree.map(jnp.copy, params)
    put = _placer(mesh, batch_size)
    metric_key = select_metric or (f"eval_{_metric_name(task)}" if eval_data is not None else "loss")
    higher_better = not metric_key.endswith("loss")

    # ---- resume ----
    history: list[dict] = []
    start_epoch, best = 0, {"value": None, "epoch": None, "params": None, "rest": None, "bad": 0}
    partial = None  # an epoch saved part-way: {"steps", "loss_sum", "count", "sums"}
    ckpt = _Checkpointer(checkpoint_dir, keep_checkpoints) if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.latest() is not None:
        state = {"params": params, "rest": rest, "opt_state": opt_state, "aux": aux, "best": params}
        restored, meta = ckpt.restore(ckpt.latest(), state)
        if meta.get("recipe") != _describe(spec.name, params, epochs, batch_size, seed):
            ckpt.close()
            raise ValueError(
                f"{checkpoint_dir} holds a checkpoint of another run ({meta.get('recipe')}); use a new directory."
            )
        params, rest, opt_state, aux = (restored[k] for k in ("params", "rest", "opt_state", "aux"))
        history, start_epoch = meta["history"], int(meta["epoch"])
        best.update(value=meta["best_value"], epoch=meta["best_epoch"], bad=meta["bad_epochs"])
        if meta["best_epoch"] is not None:
            best["params"], best["rest"] = restored["best"], rest
        partial = meta.get("partial")
        if meta.get("stopped"):
            start_epoch, partial = epochs, None

    if mesh is not None:  # parameters and optimiser state replicated over the mesh (after a resume too)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        params, rest, opt_state, aux = jax.device_put((params, rest, opt_state, aux), replicated)

    # ---- loop ----
    base_key = jax.random.key(seed)
    step_index = sum(h.get("steps", 0) for h in history) + (partial["steps"] if partial else 0)
    n_examples = len(train_data[0]) if arrays else None
    bar = progress_bar(enabled=progress, desc=f"finetune[{spec.name}]", unit="ex",
                       total=None if n_examples is None else (epochs - start_epoch) * n_examples)  # fmt: skip
    stopped = False
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        compile_seconds, losses, count, sums, steps = 0.0, [], 0.0, {}, 0
        skip = 0
        if partial is not None and epoch == start_epoch:  # resume inside this epoch
            skip, steps, count = partial["steps"], partial["steps"], partial["count"]
            losses = [jnp.asarray(partial["loss_sum"], jnp.float32)]
            sums = {k: [jnp.asarray(v, jnp.float32)] for k, v in partial["sums"].items()}
        for xb, yb, mask in epoch_batches(train_data, batch_size, epoch=epoch, seed=seed, shuffle=shuffle,
                                          drop_last=drop_last, name="train_data"):  # fmt: skip
            if skip:
                skip -= 1
                continue
            t0 = time.perf_counter()
            first = compile_seconds == 0.0 and epoch == start_epoch
            if first:
                bar.set_postfix_str("compiling the train step")
            key = jax.random.fold_in(base_key, step_index)
            params, rest, opt_state, aux, loss, metrics = _train_step(
                recipe, params, rest, opt_state, aux, *put(xb, yb, mask), key
            )
            real = float(mask.sum())
            if first:
                jax.block_until_ready(loss)
                compile_seconds = time.perf_counter() - t0
                # restart the bar's clock: its rate (examples/s) and ETA leave the compilation out
                bar.reset(total=None if bar.total is None else bar.total - int(real))
                bar.set_postfix_str("")
            losses.append(loss * real)  # on the device: no host sync inside the epoch
            count += real
            for k, v in metrics.items():
                sums.setdefault(k, []).append(v)
            steps += 1
            step_index += 1
            if not first:
                bar.update(int(real))
            if ckpt is not None and checkpoint_every_steps and step_index % checkpoint_every_steps == 0:
                part = {"steps": steps, "count": count, "loss_sum": float(jnp.sum(jnp.stack(losses))),
                        "sums": {k: float(jnp.sum(jnp.stack(v))) for k, v in sums.items()}}  # fmt: skip
                meta = {"epoch": epoch, "step_index": step_index, "partial": part, "history": history,
                        "best_value": best["value"], "best_epoch": best["epoch"], "bad_epochs": best["bad"],
                        "stopped": False, "recipe": _describe(spec.name, params, epochs, batch_size, seed)}  # fmt: skip
                keep = best["params"] if best["params"] is not None else params
                state = {"params": params, "rest": rest, "opt_state": opt_state, "aux": aux, "best": keep}
                ckpt.save(step_index, state, meta)
        if steps == 0:
            raise ValueError(
                f"train_data yielded no batch in epoch {epoch + 1} (a one-shot iterator is used up after one epoch: "
                "pass a function that returns a fresh iterator)."
            )
        loss = float(jnp.sum(jnp.stack(losses))) / count
        sums = {k: float(jnp.sum(jnp.stack(v))) for k, v in sums.items()}
        seconds = time.perf_counter() - started
        weights = aux["ema"] if ema_decay is not None else params
        _check_finite_params(weights, epoch)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} in epoch {epoch + 1}; lower the learning rate.")
        record = {"epoch": epoch + 1, "steps": steps, "seconds": seconds, "compile_seconds": compile_seconds,
                  "examples_per_second": count / max(seconds - compile_seconds, 1e-9), "loss": loss}  # fmt: skip
        record.update({f"train_{k}": v / count for k, v in sums.items()})
        if eval_data is not None:
            snapshot = nnx.merge(graphdef, weights, rest)
            ev = evaluate(snapshot, eval_data, task=task, batch_size=eval_batch_size, top_k=top_k, mesh=mesh)
            record.update({f"eval_{k}": v for k, v in ev.items()})
        if metric_key not in record:
            raise ValueError(f"select_metric {metric_key!r} is not in the history's keys {sorted(record)}.")
        value = record[metric_key]
        improved = best["value"] is None or (value > best["value"] if higher_better else value < best["value"])
        if improved:
            best.update(value=value, epoch=epoch + 1, bad=0)
            if select == "best":
                best["params"], best["rest"] = jax.tree.map(jnp.copy, weights), rest
        else:
            best["bad"] += 1
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("loss", metric_key)})
        stopped = patience is not None and best["bad"] >= patience
        if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or stopped):
            meta = {"epoch": epoch + 1, "step_index": step_index, "partial": None, "history": history,
                    "best_value": best["value"], "best_epoch": best["epoch"], "bad_epochs": best["bad"],
                    "stopped": stopped, "recipe": _describe(spec.name, params, epochs, batch_size, seed)}  # fmt: skip
            keep = best["params"] if best["params"] is not None else weights
            state = {"params": params, "rest": rest, "opt_state": opt_state, "aux": aux, "best": keep}
            if ckpt.latest() == step_index:  # a step checkpoint at the epoch's last step: replace it
                ckpt.delete(step_index)
            ckpt.save(step_index, state, meta)
        if stopped:
            break
    bar.close()
    if ckpt is not None:
        ckpt.close()
    if history:
        history[-1]["stopped_early"] = bool(stopped or len(history) < epochs)
    final_params, final_rest = params if ema_decay is None else aux["ema"], rest
    chosen = len(history)
    if select == "best" and best["params"] is not None:
        final_params, final_rest, chosen = best["params"], best["rest"], best["epoch"]
    for h in history:
        h["selected"] = h["epoch"] == chosen
    out = nnx.merge(graphdef, final_params, final_rest)
    out.eval()
    return out, history


def _describe(strategy: str, params, epochs: int, batch_size: int, seed: int) -> str:
    """What a checkpoint must match to be resumed: the strategy, the trained leaves' shapes and the schedule."""
    shapes = ";".join(f"{path_str(p)}{tuple(np.shape(v))}" for p, v in jax.tree_util.tree_leaves_with_path(params))
    return f"{strategy}|{epochs}|{batch_size}|{seed}|{hashlib.sha256(shapes.encode()).hexdigest()[:16]}"


def _check_finite_params(params, epoch: int) -> None:
    """Raises naming the first trained parameter that became NaN or Inf (the loss can stay finite meanwhile, e.g.
    when only a regulariser's gradient is NaN)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not bool(jnp.isfinite(leaf).all()):
            raise FloatingPointError(
                f"the trained parameter {path_str(_variable_path(path))} became NaN or Inf in epoch {epoch + 1} "
                "(check the regularizer's gradient, or lower the learning rate)."
            )
