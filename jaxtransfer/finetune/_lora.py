"""LoRA (Hu et al., ICLR 2022): a trainable low-rank update beside every selected linear op, and its exact merge.

A linear op computes y = f(x; W) + b with f linear in its kernel W. LoRA adds s * f(x; A B), A initialised at
random and B at zero (so the adapted model starts exactly at the base model), with the scale s = alpha / r, or the
rank-stabilised s = alpha / sqrt(r) (Kalajdzievski, 2023). The factorisation of W into (inputs) x (outputs):

- ``nnx.Linear`` (in, out):                  A (in, r),          B (r, out);          r (in + out) parameters;
- ``nnx.LinearGeneral`` (*ins, *outs):       A (*ins, r),        B (r, *outs)         (the q/k/v/out projections of
  ``nnx.MultiHeadAttention``: (dim) -> (heads, head_dim) and (heads, head_dim) -> (dim));
- ``nnx.Conv`` (*k, in, out):                A a k x k conv (*k, in, r) with the base's strides, padding and
  dilation, B a 1 x 1 conv (r, out), as peft does for Conv2d;  r (prod(k) in + out) parameters;
- ``nnx.Einsum``: the kernel axes whose letters occur in the input are the inputs, the others the outputs.

Because f is linear in W, f(x; W) + s f(x; A B) = f(x; W + s A B): the update folds into the kernel,
W' = W + s reshape(A B), and the merged model has the base graph, parameter count and inference cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.finetune._surgery import is_head, path_str, replace_module, require_sites

__all__ = ["LoRAAdapted", "inject_lora", "lora_sites", "merge_lora", "unmerge_lora"]

_TYPES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv, nnx.Einsum)


def _trailing_axes(module: nnx.LinearGeneral) -> bool:
    axes = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
    n = len(axes)
    return all(a < 0 for a in axes) and tuple(axes) == tuple(range(-n, 0))


def _einsum_split(module: nnx.Einsum) -> tuple[list[int], list[int]]:
    """Kernel axes that are inputs (their letter is in the lhs operand) and outputs."""
    lhs, rest = module.einsum_str.split(",")
    rhs = rest.split("->")[0]
    ins = [i for i, c in enumerate(rhs) if c in lhs]
    outs = [i for i, c in enumerate(rhs) if c not in lhs]
    return ins, outs


def _why_not(module: nnx.Module) -> str | None:
    """Why LoRA cannot adapt ``module``, or None if it can."""
    if not isinstance(module, _TYPES):
        return f"{type(module).__name__} is not an nnx.Linear, LinearGeneral, Conv or Einsum"
    if isinstance(module, nnx.Conv) and module.feature_group_count != 1:
        return "a grouped (e.g. depthwise) convolution has no low-rank (inputs x outputs) kernel"
    if isinstance(module, nnx.Conv) and module.mask is not None:
        return "a masked convolution"
    if isinstance(module, nnx.LinearGeneral) and module.batch_axis:
        return "a LinearGeneral with batch axes"
    if isinstance(module, nnx.Einsum):
        if module.einsum_str is None or "." in module.einsum_str.split(",")[1]:
            return "an Einsum without a fixed equation (or with an ellipsis in its kernel)"
        ins, outs = _einsum_split(module)
        if not ins or not outs:
            return "an Einsum whose kernel has no input or no output axis"
    return None


def _factor_shapes(module: nnx.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape of A, output shape of B) for a module ``_why_not`` accepts."""
    shape = tuple(module.kernel[...].shape)
    if isinstance(module, nnx.Einsum):
        ins, outs = _einsum_split(module)
        return tuple(shape[i] for i in ins), tuple(shape[i] for i in outs)
    if isinstance(module, nnx.LinearGeneral):
        n_out = len(module.out_features)
        return shape[:-n_out], shape[-n_out:]
    return shape[:-1], shape[-1:]  # Linear (in, out); Conv (*k, in, out)


def _with_kernel(module: nnx.Module, kernel: jax.Array) -> nnx.Module:
    """A copy of ``module`` (its own forward: padding, strides, precision) with ``kernel`` and no bias."""
    graphdef, state = nnx.split(module)
    state = nnx.State(dict(state))
    state["kernel"] = nnx.Param(kernel)
    if "bias" in state:  # the graph keeps its bias; zero it (the branch adds no bias)
        bias = state["bias"][...]
        if isinstance(module, nnx.Conv | nnx.Linear):
            state["bias"] = nnx.Param(jnp.zeros(kernel.shape[-1:], bias.dtype))
        else:
            state["bias"] = nnx.Param(jnp.zeros_like(bias))
    return nnx.merge(graphdef, state)


class LoRAAdapted(nnx.Module):
    """``base(x) + scale * lora(x)``: a linear op with a low-rank update (``lora_a``, ``lora_b`` are
    ``nnx.LoRAParam``; see the module docstring for their shapes).

    Args:
        base: an ``nnx.Linear``, ``LinearGeneral``, ``Conv`` (ungrouped) or ``Einsum``.
        rank: r.
        alpha: the scale's numerator (default r: scale 1).
        rslora: scale alpha / sqrt(r) instead of alpha / r.
        dropout: rate of the dropout applied to the branch's input (peft's ``lora_dropout``); active in
            ``model.train()`` mode only.

    A is drawn uniformly in +-1/sqrt(fan_in) (fan_in = prod of A's input axes, as peft's Kaiming-uniform with
    a = sqrt(5)); B is zero.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> site = LoRAAdapted(nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0)), rank=2, alpha=4.0, rngs=nnx.Rngs(1))
        >>> site.lora_a.shape, site.lora_b.shape, site.scale
        ((3, 3, 3, 2), (2, 8), 2.0)
    """

    def __init__(
        self,
        base: nnx.Module,
        rank: int,
        *,
        alpha: float | None = None,
        rslora: bool = False,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        why = _why_not(base)
        if why:
            raise ValueError(f"LoRA cannot adapt this op: {why}.")
        in_shape, out_shape = _factor_shapes(base)
        dtype = base.kernel[...].dtype
        bound = 1.0 / math.sqrt(math.prod(in_shape))
        self.base = base
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.rslora = bool(rslora)
        self.scale = self.alpha / (math.sqrt(rank) if rslora else rank)
        self.merged = False
        self.lora_a = nnx.LoRAParam(jax.random.uniform(rngs.params(), (*in_shape, rank), dtype, -bound, bound))
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, *out_shape), dtype))
        self.dropout = nnx.data(nnx.Dropout(dropout, rngs=rngs) if dropout else None)

    def delta(self) -> jax.Array:
        """The update in the base kernel's layout: scale * reshape(A B)."""
        a, b = self.lora_a[...], self.lora_b[...]
        ab = jnp.tensordot(a, b, axes=1, precision="highest") * self.scale
        if isinstance(self.base, nnx.Einsum):
            ins, outs = _einsum_split(self.base)
            order = ins + outs  # the axes of ab, as kernel axes
            ab = jnp.transpose(ab, [order.index(i) for i in range(len(order))])
        return ab

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        y = self.base(x, *args, **kwargs)
        if self.merged:
            return y
        if self.dropout is not None:
            x = self.dropout(x)
        base, a, b = self.base, self.lora_a[...], self.lora_b[...]
        if isinstance(base, nnx.Linear) or (isinstance(base, nnx.LinearGeneral) and _trailing_axes(base)):
            n_in = a.ndim - 1
            branch = jnp.tensordot(jnp.tensordot(x, a.astype(x.dtype), axes=n_in), b.astype(x.dtype), axes=1)
        elif isinstance(base, nnx.Conv):  # the k x k conv of rank r (the base's own forward), then 1 x 1
            branch = jnp.tensordot(_with_kernel(base, a.astype(x.dtype))(x), b.astype(x.dtype), axes=1)
        else:  # Einsum, LinearGeneral over other axes: the base's forward with the (dense) update
            return y + _with_kernel(base, self.delta().astype(x.dtype))(x, *args, **kwargs).astype(y.dtype)
        return y + (self.scale * branch).astype(y.dtype)


def _default_where(path: tuple, module: nnx.Module) -> bool:
    return isinstance(module, _TYPES) and _why_not(module) is None and not is_head(path)


def lora_sites(model: nnx.Module) -> list[str]:
    """Dotted paths of the LoRA-adapted ops in ``model``.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> lora_sites(MLP(4, [8], 3, rngs=nnx.Rngs(0)))  # none until inject_lora
        []
    """
    return [path_str(p) for p, m in nnx.iter_modules(model) if isinstance(m, LoRAAdapted)]


def inject_lora(
    model: nnx.Module,
    rank: int = 8,
    *,
    alpha: float | None = None,
    rslora: bool = False,
    dropout: float = 0.0,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
    seed: int = 0,
) -> nnx.Module:
    """Returns a copy of ``model`` with a LoRA update of ``rank`` beside every selected op (``model`` unchanged).

    Args:
        model: any NNX module.
        rank: r (default 8, a common choice in the LoRA paper's experiments).
        alpha: scale numerator (default r: scale 1); the update is (alpha / r) A B.
        rslora: rank-stabilised scale alpha / sqrt(r).
        dropout: dropout rate on the branch input, in train mode.
        where: glob patterns on the dotted path (``"layers.*.query"``), applied to Linear, LinearGeneral, Conv and
            Einsum ops; or a predicate ``(path, module) -> bool``. Default: every such op outside the head that
            LoRA can adapt (grouped/depthwise convolutions are left out: their kernel has no low-rank form).
        seed: for A's initialisation and the dropout stream.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_lora, lora_sites
        >>> from jaxtransfer.models import MLP
        >>> model = inject_lora(MLP(4, [8, 8], 3, rngs=nnx.Rngs(0)), rank=2)
        >>> lora_sites(model), count_params(model, nnx.LoRAParam)  # r (in + out) per Linear: 2 (4 + 8) + 2 (8 + 8)
        (['layers.0', 'layers.1'], 56)

    Raises:
        ValueError: if ``rank`` < 1, ``dropout`` is not in [0, 1), nothing is selected, a selected op cannot be
            adapted (the message says why), or the model already has LoRA.
    """
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer; got {rank!r}.")
    if alpha is not None and not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number or None; got {alpha!r}.")
    if not (isinstance(dropout, int | float) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}.")
    existing = lora_sites(model)
    if existing:
        raise ValueError(
            f"the model already has LoRA at {existing[:5]}: inject once (train or merge the existing adapters first)."
        )
    model = nnx.clone(model)
    what = "Linear, LinearGeneral, Conv or Einsum that LoRA can adapt"
    sites = require_sites(model, where, _TYPES, _default_where, what)
    bad = {path_str(p): _why_not(m) for p, m in sites if _why_not(m)}
    if bad:
        raise ValueError(f"LoRA cannot adapt {bad}; leave these out of where=.")
    rngs = nnx.Rngs(seed)
    for path, module in sites:
        site = LoRAAdapted(module, rank, alpha=alpha, rslora=rslora, dropout=dropout, rngs=rngs)
        replace_module(model, path, site)
    return model


def _sites(model: nnx.Module) -> list[tuple[tuple, LoRAAdapted]]:
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, LoRAAdapted)]


def _fold(site: LoRAAdapted, sign: float) -> None:
    kernel = site.base.kernel[...]
    delta = site.delta().astype(jnp.float32)
    site.base.kernel[...] = (kernel.astype(jnp.float32) + sign * delta).astype(kernel.dtype)


def merge_lora(model: nnx.Module, *, unload: bool = True) -> nnx.Module:
    """Returns a copy of ``model`` with every LoRA update folded into its op's kernel: W' = W + s reshape(A B).

    Args:
        unload: True (peft's ``merge_and_unload``): the adapters are removed and the copy has the base graph,
            parameter count and inference cost. False (peft's ``merge_adapter``): the adapters stay (idle) so that
            :func:`unmerge_lora` can subtract them again.

    Raises:
        ValueError: if the model has no LoRA, or (``unload=False``) a site is already merged.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = inject_lora(MLP(4, [8], 3, rngs=nnx.Rngs(0)), rank=2)
        >>> model.layers[0].lora_b[...] = jax.random.normal(jax.random.key(1), (2, 8))  # as if trained
        >>> merged, x = merge_lora(model), jnp.ones((2, 4))
        >>> type(merged.layers[0]).__name__, bool(jnp.allclose(merged(x), model(x), atol=1e-5))
        ('Linear', True)
    """
    if not lora_sites(model):
        raise ValueError("the model has no LoRA to merge (inject_lora adds it).")
    model = nnx.clone(model)
    for path, site in _sites(model):
        if not site.merged:
            _fold(site, +1.0)
        elif not unload:
            raise ValueError(f"the LoRA at {path_str(path)} is already merged (unmerge_lora it first).")
        if unload and not path:  # the model is itself one adapted op
            return site.base
        if unload:
            replace_module(model, path, site.base)
        else:
            site.merged = True
    return model


def unmerge_lora(model: nnx.Module) -> nnx.Module:
    """Returns a copy of a ``merge_lora(..., unload=False)`` model with the updates subtracted again: W = W' - s A B
    (equal to the unmerged model up to float rounding), the adapters active.

    Raises:
        ValueError: if the model has no merged LoRA.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = inject_lora(MLP(4, [8], 3, rngs=nnx.Rngs(0)), rank=2)
        >>> model.layers[0].lora_b[...] = jax.random.normal(jax.random.key(1), (2, 8))
        >>> back = unmerge_lora(merge_lora(model, unload=False))
        >>> back.layers[0].merged, bool(jax.numpy.allclose(back.layers[0].base.kernel[...],
        ...                                                model.layers[0].base.kernel[...], atol=1e-6))
        (False, True)
    """
    if not any(site.merged for _, site in _sites(model)):
        raise ValueError("the model has no merged LoRA (merge_lora(model, unload=False) merges and keeps it).")
    model = nnx.clone(model)
    for _, site in _sites(model):
        if site.merged:
            _fold(site, -1.0)
            site.merged = False
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, nnx.LoRAParam):
        raise ValueError("strategy 'lora' but the model has no LoRA parameters: call inject_lora(model, rank) first.")
    merged = [path_str(p) for p, s in _sites(model) if s.merged]
    if merged:
        raise ValueError(f"the LoRA at {merged[:5]} is merged into its kernel: unmerge_lora(model) before training.")


def _config(model: nnx.Module) -> dict:
    sites = _sites(model)
    first = sites[0][1]
    return {
        "rank": first.rank,
        "alpha": first.alpha,
        "rslora": first.rslora,
        "dropout": 0.0 if first.dropout is None else float(first.dropout.rate),
        "where": [path_str(p) for p, _ in sites],
    }


register_strategy(
    "lora",
    nnx.Any(nnx.LoRAParam, HEAD_PARAMS),
    prepare=inject_lora,
    check=_check,
    merge=merge_lora,
    config=_config,
    reference="Hu et al., ICLR 2022",
)
