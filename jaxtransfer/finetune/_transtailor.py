"""TransTailor (Liu et al., AAAI 2021): prune a pre-trained model to the target task, then fine-tune what is left.

A *filter group* is a set of channels produced inside a block and read by one consumer layer: the hidden channels of
a residual block (conv1 -> BatchNorm -> conv2), an inverted bottleneck's expanded channels (expand conv -> BN ->
depthwise -> BN -> project), a bottleneck's inner widths, a transformer MLP's hidden units (fc1 -> fc2). Every layer
between producer and consumer acts channel by channel, so a channel c can be removed by deleting the producer's
output c, the per-channel parameters c and the consumer's input row c.

TransTailor puts a scale alpha_c in front of the consumer, y = consumer(alpha * h), and:

1. trains alpha on the target with every weight frozen (alpha starts at 1);
2. scores each filter by the first-order Taylor estimate of the loss change when it is removed,
   Theta_c = ``|dL/d alpha_c * alpha_c|`` (averaged over the target data), normalised per group by its L2 norm
   Theta_c / ||Theta_group||_2, and ranks all filters globally;
3. removes the lowest ones *physically* (fewer channels, fewer parameters and FLOPs, not a mask);
4. importance-aware fine-tuning: alpha is folded into the consumer's weights (W_c <- alpha_c W_c) and the pruned
   model is fine-tuned;

and repeats 1-4 until the requested share of filters is gone. Choices where the paper leaves room (documented
because there is no official code to follow): the scales sit at the consumer's input (so that a zero scale is
exactly a removed channel whatever the per-channel layers do, e.g. BatchNorm's bias); at least ``min_keep``
channels stay in every group; LayerNorm between producer and consumer mixes channels and makes a group ineligible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer.finetune._losses import per_example_loss
from jaxtransfer.finetune._strategy import Strategy, count_params
from jaxtransfer.finetune._surgery import path_str, replace_module
from jaxtransfer.finetune._train import evaluate, finetune
from jaxtransfer.models import ChannelAffine, DepthwiseConv

__all__ = [
    "FilterGroup",
    "TailorScale",
    "TailorScaled",
    "filter_groups",
    "fold_tailor_scales",
    "inject_tailor_scales",
    "prune_filters",
    "tailor_importance",
    "transtailor",
]

_PER_CHANNEL = (nnx.Conv, nnx.Linear, nnx.BatchNorm, DepthwiseConv, ChannelAffine)
# (producers and per-channel layers, whose last axis is the channel; consumer, whose kernel reads it on axis -2)
_PATTERNS = (
    (("conv1", "norm1"), "conv2"),
    (("fc1",), "fc2"),
    (("expand_conv", "expand_bn", "depthwise", "depthwise_bn"), "project"),
    (("a.conv", "a.affine"), "b.conv"),
    (("b.conv", "b.affine"), "c.conv"),
)


class TailorScale(nnx.Variable):
    """TransTailor's per-filter scale alpha (not an ``nnx.Param``: only the scale-training step trains it).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_tailor_scales
        >>> from jaxtransfer.models import CNN
        >>> scaled = inject_tailor_scales(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> count_params(scaled, TailorScale), count_params(scaled, nnx.Param) == count_params(
        ...     CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        (16, True)
    """


@dataclasses.dataclass(frozen=True)
class FilterGroup:
    """Channels produced by ``producers`` (paths from the model root) and read by ``consumer`` (its kernel's
    axis -2).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import filter_groups
        >>> from jaxtransfer.models import CNN
        >>> group = filter_groups(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))[0]
        >>> group.producers, group.consumer  # conv1 and its BatchNorm make the channels conv2 reads
        ((('blocks', 0, 'conv1'), ('blocks', 0, 'norm1')), ('blocks', 0, 'conv2'))
    """

    producers: tuple[tuple, ...]
    consumer: tuple

    @property
    def name(self) -> str:
        return path_str(self.consumer)


def _get(module, path: tuple):
    for k in path:
        module = module[k] if isinstance(k, int) else getattr(module, k, None)
        if module is None:
            return None
    return module


def _split(dotted: str) -> tuple:
    return tuple(int(k) if k.isdigit() else k for k in dotted.split("."))


def _inner(module):
    return module.consumer if isinstance(module, TailorScaled) else module


def filter_groups(model: nnx.Module) -> list[FilterGroup]:
    """The prunable filter groups of ``model``, found by the layer names of its blocks (see the module docstring).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> [g.name for g in filter_groups(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))]
        ['blocks.0.conv2', 'blocks.1.conv2']
    """
    groups = []
    for path, module in nnx.iter_modules(model):
        if path and path[0] == "head":
            continue
        for producers, consumer in _PATTERNS:
            mods = [_get(module, _split(p)) for p in producers]
            cons = _get(module, _split(consumer))
            if cons is None or any(m is None for m in mods):
                continue
            if not all(isinstance(_inner(m), _PER_CHANNEL) for m in mods):
                continue
            c = _inner(mods[0]).kernel.shape[-1]
            if _inner(cons).kernel.shape[-2] != c:
                continue
            groups.append(FilterGroup(tuple(path + _split(p) for p in producers), path + _split(consumer)))
    return groups


class TailorScaled(nnx.Module):
    """``consumer(alpha * h)``: the consumer layer with TransTailor's per-input-channel scales in front.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> conv = nnx.Conv(4, 2, (1, 1), rngs=nnx.Rngs(0))
        >>> site = TailorScaled(conv)
        >>> site.alpha[...] = jnp.array([1.0, 0.0, 1.0, 1.0])  # channel 1 switched off
        >>> h = jnp.ones((1, 3, 3, 4))
        >>> bool(jnp.allclose(site(h), conv(h.at[..., 1].set(0.0))))
        True
    """

    def __init__(self, consumer: nnx.Module):
        self.consumer = consumer
        self.alpha = TailorScale(jnp.ones((consumer.kernel.shape[-2],), jnp.float32))

    def __call__(self, h: jax.Array) -> jax.Array:
        a = self.alpha[...].astype(h.dtype).reshape((1,) * (h.ndim - 1) + (-1,))
        return self.consumer(h * a)


def inject_tailor_scales(model: nnx.Module, groups: Sequence[FilterGroup] | None = None) -> nnx.Module:
    """A copy of ``model`` with a :class:`TailorScaled` (alpha = 1: the same outputs) at every group's consumer.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0))
        >>> scaled = inject_tailor_scales(model)
        >>> scaled.blocks[0].conv2.alpha.shape
        (8,)
    """
    model = nnx.clone(model)
    groups = filter_groups(model) if groups is None else groups
    if not groups:
        raise ValueError(f"{type(model).__name__} has no prunable filter group (see filter_groups).")
    for g in groups:
        site = _get(model, g.consumer)
        if not isinstance(site, TailorScaled):
            replace_module(model, g.consumer, TailorScaled(site))
    return model


def _scaled_sites(model) -> list[tuple[tuple, TailorScaled]]:
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, TailorScaled)]


def tailor_importance(
    model: nnx.Module, x, y, *, task="classification", batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Theta_c = ``|dL/d alpha_c * alpha_c|`` per filter of each scaled consumer, with dL/d alpha the gradient of the
    mean loss over ``(x, y)`` (accumulated over batches of ``batch_size``; eval mode).

    Args:
        model: with TransTailor scales (:func:`inject_tailor_scales`); not changed.
        x, y: (n, ...) inputs and their targets; task: the loss (as :func:`finetune`'s).

    Returns:
        ``{consumer path: (C,) importances}`` (not yet normalised).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_tailor_scales
        >>> from jaxtransfer.models import CNN
        >>> scaled = inject_tailor_scales(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> x, y = np.random.default_rng(0).normal(size=(8, 8, 8, 3)), np.arange(8) % 5
        >>> theta = tailor_importance(scaled, x, y)
        >>> {k: v.shape for k, v in theta.items()}, bool(all((v >= 0).all() for v in theta.values()))
        ({'blocks.0.conv2': (8,), 'blocks.1.conv2': (8,)}, True)
    """
    m = nnx.clone(model)
    m.eval()
    graphdef, scales, rest = nnx.split(m, TailorScale, ...)
    if not jax.tree.leaves(scales):
        raise ValueError("the model has no TransTailor scales: call inject_tailor_scales(model) first.")

    @jax.jit
    def grad_sum(scales, xb, yb):
        def loss(s):
            out = nnx.merge(graphdef, s, rest)(xb).astype(jnp.float32)
            return jnp.sum(per_example_loss(out, yb, task))

        return jax.grad(loss)(scales)

    x, y = np.asarray(x), np.asarray(y)
    total = None
    for i in range(0, len(x), batch_size):
        g = grad_sum(scales, jnp.asarray(x[i : i + batch_size]), jnp.asarray(y[i : i + batch_size]))
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    grads = jax.tree.map(lambda t: t / len(x), total)
    nnx.update(m, grads)
    out = {}
    for path, site in _scaled_sites(m):  # m's scales now hold the gradients
        out[path_str(path)] = np.abs(np.asarray(site.alpha[...]) * np.asarray(_get(model, path).alpha[...]))
    return out


def _slice_last(module: nnx.Module, keep: np.ndarray) -> None:
    module = _inner(module)
    for path, var in list(nnx.iter_graph(module)):
        if path and isinstance(var, nnx.Variable) and hasattr(var[...], "shape") and var[...].ndim >= 1:
            var.set_value(jnp.take(var[...], keep, axis=-1))
    for attr in ("out_features", "num_features"):
        if hasattr(module, attr):
            setattr(module, attr, len(keep))


def prune_filters(model: nnx.Module, keep: dict[str, Sequence[int]]) -> nnx.Module:
    """A physically smaller copy of a scaled model: in each group named in ``keep`` only those channels remain
    (producer outputs, per-channel parameters, the consumer's input rows and its scales). Groups not named keep all.

    The result equals the scaled model with alpha_c = 0 for every removed channel (the masked model).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_tailor_scales
        >>> from jaxtransfer.models import CNN
        >>> scaled = inject_tailor_scales(CNN(3, 8, 2, 10, norm="batch", rngs=nnx.Rngs(0)))
        >>> small = prune_filters(scaled, {"blocks.0.conv2": [0, 2, 5]})  # 3 of block 0's 8 inner filters stay
        >>> small.blocks[0].conv1.out_features, count_params(small) < count_params(scaled)
        (3, True)
    """
    model = nnx.clone(model)
    sites = dict((path_str(p), p) for p, _ in _scaled_sites(model))
    groups = {g.name: g for g in filter_groups(model)}
    for name, idx in keep.items():
        if name not in sites or name not in groups:
            raise ValueError(f"no scaled filter group {name!r}; the groups are {sorted(sites)}.")
        site = _get(model, sites[name])
        c = site.alpha.shape[0]
        idx = np.unique(np.asarray(idx, np.int64))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= c:
            raise ValueError(f"group {name!r}: keep needs >= 1 channel index in [0, {c}); got {idx.tolist()}.")
        for p in groups[name].producers:
            _slice_last(_get(model, p), idx)
        site.alpha.set_value(site.alpha[...][idx])
        k = site.consumer.kernel
        k.set_value(jnp.take(k[...], idx, axis=-2))
        if hasattr(site.consumer, "in_features"):
            site.consumer.in_features = int(idx.size)
    return model


def fold_tailor_scales(model: nnx.Module) -> nnx.Module:
    """Importance-aware weights: a copy with every :class:`TailorScaled` replaced by its consumer whose kernel rows
    are multiplied by alpha (W_c <- alpha_c W_c): the same function, the original layer types.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_tailor_scales
        >>> from jaxtransfer.models import CNN
        >>> plain = fold_tailor_scales(inject_tailor_scales(CNN(3, 8, 2, 10, norm="batch", rngs=nnx.Rngs(0))))
        >>> type(plain.blocks[0].conv2).__name__
        'Conv'
    """
    model = nnx.clone(model)
    for path, site in _scaled_sites(model):
        k = site.consumer.kernel
        a = site.alpha[...].astype(k.dtype)
        k.set_value(k[...] * a.reshape((1,) * (k.ndim - 2) + (-1, 1)))
        replace_module(model, path, site.consumer)
    return model


_SCALES = Strategy("transtailor_scales", TailorScale, reference="Liu et al., TransTailor, AAAI 2021")


def _channels(model) -> dict[str, int]:
    return {g.name: int(_inner(_get(model, g.consumer)).kernel.shape[-2]) for g in filter_groups(model)}


def transtailor(
    model: nnx.Module,
    train_data: tuple,
    *,
    prune_ratio: float = 0.5,
    iterations: int = 5,
    scale_epochs: int = 2,
    finetune_epochs: int = 2,
    final_epochs: int = 5,
    min_keep: int = 1,
    eval_data: tuple | None = None,
    task="classification",
    batch_size: int = 64,
    scale_learning_rate: float = 1e-2,
    **finetune_kwargs,
) -> tuple[nnx.Module, list[dict]]:
    """Target-aware pruning and importance-aware fine-tuning (the loop of the module docstring).

    Args:
        model: a pre-trained model with its new ``head``, usually fine-tuned on the target first; not changed.
        train_data: ``(inputs, targets)`` arrays (importances are computed on them).
        prune_ratio: share of all filters of the groups removed in the end, in ``iterations`` equal steps.
        scale_epochs, finetune_epochs: epochs of alpha training and of weight fine-tuning per iteration;
            ``final_epochs`` of fine-tuning at the end.
        min_keep: channels that stay in every group.
        eval_data: reported after every iteration.
        finetune_kwargs: passed to every weight fine-tuning ``finetune`` call (``strategy`` defaults to "full").

    Returns:
        (pruned and fine-tuned model, history: one dict per iteration with ``channels`` per group, ``params``,
        ``removed`` and the eval metrics).

    Example (one pruning step, one epoch each, to show the shapes; real use fine-tunes for longer):
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0))
        >>> x, y = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8) % 5
        >>> pruned, history = transtailor(model, (x, y), prune_ratio=0.25, iterations=1, scale_epochs=1,
        ...                               finetune_epochs=1, final_epochs=1, batch_size=8, progress=False)
        >>> history[0]["removed"], history[0]["channels"]  # a quarter of the 16 inner filters of the 2 blocks
        (4, {'blocks.0.conv2': 6, 'blocks.1.conv2': 6})
    """
    if not 0 <= prune_ratio < 1:
        raise ValueError(f"prune_ratio must lie in [0, 1); got {prune_ratio!r}.")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"iterations must be a positive integer; got {iterations!r}.")
    start = _channels(model)
    if not start:
        raise ValueError(f"{type(model).__name__} has no prunable filter group (see filter_groups).")
    total = sum(start.values())
    target_removed = round(prune_ratio * total)
    common = dict(batch_size=batch_size, task=task, progress=False)
    weights_kw = {"strategy": "full", **common, **finetune_kwargs}
    history = []
    for it in range(iterations):
        scaled = inject_tailor_scales(model)
        scaled, _ = finetune(scaled, train_data, strategy=_SCALES, epochs=scale_epochs,
                             learning_rate=scale_learning_rate, **common)  # fmt: skip
        theta = tailor_importance(scaled, *train_data, task=task, batch_size=max(batch_size, 256))
        now = {k: v.size for k, v in theta.items()}
        goal = round(target_removed * (it + 1) / iterations) - (total - sum(now.values()))
        ranked = []
        for name, t in theta.items():
            norm = np.linalg.norm(t)
            ranked += [(v / norm if norm > 0 else 0.0, name, c) for c, v in enumerate(t)]
        ranked.sort()
        drop = {name: set() for name in theta}
        for _, name, c in ranked:
            if goal <= 0:
                break
            if now[name] - len(drop[name]) > min_keep:
                drop[name].add(c)
                goal -= 1
        keep = {name: [c for c in range(now[name]) if c not in drop[name]] for name in theta}
        model = fold_tailor_scales(prune_filters(scaled, keep))
        model, _ = finetune(model, train_data, epochs=finetune_epochs, **weights_kw)
        record = {"iteration": it + 1, "channels": _channels(model), "params": count_params(model),
                  "removed": total - sum(_channels(model).values())}  # fmt: skip
        if eval_data is not None:
            record.update({f"eval_{k}": v for k, v in evaluate(model, eval_data, task=task).items()})
        history.append(record)
    if final_epochs:
        model, _ = finetune(model, train_data, epochs=final_epochs, **weights_kw)
    return model, history
