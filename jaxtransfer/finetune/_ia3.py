"""IA3 (Liu et al., NeurIPS 2022, "(IA)^3"): learned rescaling vectors, trained alone, folded into the ops exactly.

IA3 multiplies the keys and values of attention and the feed-forward block's intermediate activation by learned
vectors l_k, l_v, l_ff (initialised at one, so the injected model equals the base bitwise):

    k = l_k * (W_k x + b_k),    v = l_v * (W_v x + b_v),    ffn(x) = W_2 (l_ff * act(W_1 x + b_1)) + b_2.

Two kinds of site: *output* scaling after an op (keys, values: ``where=``), and *input* scaling before an op (the
second feed-forward layer W_2: ``feedforward=``). Both fold into the op's kernel (and bias), so the merged model
has the base graph and inference cost:

    l * (W x + b) = (W scaled along its output axes) x + l * b,     W (l * x) = (W scaled along its input axes) x.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.finetune._surgery import is_head, path_str, replace_module, select_modules

__all__ = ["IA3Adapted", "IA3Param", "ia3_sites", "inject_ia3", "merge_ia3"]

_TYPES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv)
_OUTPUT_NAMES = ("key", "value")  # the attention projections IA3 rescales (our models' and nnx's names)
_INPUT_NAMES = ("fc2",)  # the feed-forward block's second layer, whose input is the intermediate activation


class IA3Param(nnx.Param):
    """The Variable type of IA3's scaling vectors (one filter selects what IA3 trains).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_ia3
        >>> from jaxtransfer.models import MLP
        >>> count_params(inject_ia3(MLP(4, [8], 3, rngs=nnx.Rngs(0)), where="layers.0", feedforward=[]), IA3Param)
        8
    """


def _axes(module: nnx.Module, side: str) -> tuple[tuple[int, ...], str | None]:
    """(shape of the scaling vector, why-not or None) for scaling ``module``'s ``side`` ("output" / "input")."""
    if not isinstance(module, _TYPES):
        return (), f"{type(module).__name__} is not an nnx.Linear, LinearGeneral or Conv"
    shape = tuple(module.kernel[...].shape)
    if isinstance(module, nnx.LinearGeneral):
        axes = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
        if module.batch_axis or tuple(axes) != tuple(range(-len(axes), 0)):
            return (), "a LinearGeneral with batch axes or non-trailing input axes"
        n_out = len(module.out_features)
        return (shape[-n_out:] if side == "output" else shape[:-n_out]), None
    if side == "output":
        return shape[-1:], None
    if isinstance(module, nnx.Conv) and module.feature_group_count != 1:
        return (), "input scaling of a grouped convolution (scale the op before it instead)"
    return shape[-2:-1], None  # Linear (in, out) / Conv (*k, in, out): the input channels


class IA3Adapted(nnx.Module):
    """An op with IA3 scaling on its ``side``: ``"output"``: l * op(x); ``"input"``: op(l * x).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> site = IA3Adapted(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), "input")
        >>> site.scale.shape, bool(jnp.array_equal(site(jnp.ones((1, 3))), site.base(jnp.ones((1, 3)))))
        ((3,), True)
    """

    def __init__(self, base: nnx.Module, side: str):
        if side not in ("output", "input"):
            raise ValueError(f"side must be 'output' or 'input'; got {side!r}.")
        shape, why = _axes(base, side)
        if why:
            raise ValueError(f"IA3 cannot scale the {side} of this op: {why}.")
        self.base = base
        self.side = side
        self.scale = IA3Param(jnp.ones(shape, base.kernel[...].dtype))

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        s = self.scale[...]
        if self.side == "input":
            return self.base(x * _trailing(s, x).astype(x.dtype), *args, **kwargs)
        y = self.base(x, *args, **kwargs)
        return y * _trailing(s, y).astype(y.dtype)


def _trailing(s: jax.Array, x: jax.Array) -> jax.Array:
    """``s`` with leading unit axes, to scale the trailing axes of ``x``."""
    return s.reshape((1,) * (x.ndim - s.ndim) + s.shape)


def _named(names: tuple[str, ...]) -> Callable[[tuple, nnx.Module], bool]:
    def match(path: tuple, module: nnx.Module) -> bool:
        return bool(path) and isinstance(module, _TYPES) and str(path[-1]) in names and not is_head(path)

    return match


def ia3_sites(model: nnx.Module) -> dict[str, str]:
    """``{dotted path: side}`` of the IA3-scaled ops in ``model``.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> ia3_sites(inject_ia3(MLP(4, [8], 3, rngs=nnx.Rngs(0)), where="layers.0", feedforward=[]))
        {'layers.0': 'output'}
    """
    return {path_str(p): m.side for p, m in nnx.iter_modules(model) if isinstance(m, IA3Adapted)}


def inject_ia3(
    model: nnx.Module,
    *,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
    feedforward: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
) -> nnx.Module:
    """Returns a copy of ``model`` with IA3 scaling vectors (at one) on the selected ops; ``model`` is unchanged.

    Args:
        model: any NNX module.
        where: ops whose *output* is rescaled. Default: every Linear / LinearGeneral / Conv named ``key`` or
            ``value`` (the attention keys and values of MiniLM, the tiny ViT and ``nnx.MultiHeadAttention``).
        feedforward: ops whose *input* is rescaled. Default: every such op named ``fc2`` (the feed-forward
            block's second layer: its input is the intermediate activation). ``[]`` for none.

        Both take glob patterns on the dotted path or a predicate ``(path, module) -> bool``; an op selected by
        both is input-scaled.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params
        >>> from jaxtransfer.models import TinyViT
        >>> model = inject_ia3(TinyViT(8, 1, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)))  # dim 16, MLP 32, 2 heads, 2 blocks
        >>> count_params(model, IA3Param)  # per block: keys 2 x 8, values 2 x 8, fc2's input 32
        128

    Raises:
        ValueError: nothing is selected, a selected op cannot be scaled (the message says why), or the model
            already has IA3.
    """
    if ia3_sites(model):
        raise ValueError(f"the model already has IA3 at {list(ia3_sites(model))[:5]}; merge_ia3 it first.")
    model = nnx.clone(model)
    inputs = select_modules(model, feedforward, _TYPES, _named(_INPUT_NAMES))
    taken = {path_str(p) for p, _ in inputs}
    outputs = [
        (p, m) for p, m in select_modules(model, where, _TYPES, _named(_OUTPUT_NAMES)) if path_str(p) not in taken
    ]
    sites = [(p, m, "input") for p, m in inputs] + [(p, m, "output") for p, m in outputs]
    if not sites:
        raise ValueError(
            f"where={where!r} and feedforward={feedforward!r} select no op in {type(model).__name__}: name the ops "
            f"to rescale (the modules are at {[path_str(p) for p, _ in nnx.iter_modules(model) if p][:12]})."
        )
    bad = {path_str(p): _axes(m, side)[1] for p, m, side in sites if _axes(m, side)[1]}
    if bad:
        raise ValueError(f"IA3 cannot scale {bad}; leave these out of where= / feedforward=.")
    for path, module, side in sites:
        replace_module(model, path, IA3Adapted(module, side))
    return model


def _fold(site: IA3Adapted) -> None:
    base, s = site.base, site.scale[...]
    kernel = base.kernel[...]
    if site.side == "output":
        scale = s.reshape((1,) * (kernel.ndim - s.ndim) + s.shape)
        if base.bias is not None:
            base.bias[...] = (base.bias[...] * s.reshape(base.bias[...].shape)).astype(base.bias[...].dtype)
    elif isinstance(base, nnx.LinearGeneral):
        scale = s.reshape(s.shape + (1,) * (kernel.ndim - s.ndim))
    else:  # Linear (in, out), Conv (*k, in, out)
        scale = s.reshape((1,) * (kernel.ndim - 2) + (-1, 1))
    base.kernel[...] = (kernel * scale).astype(kernel.dtype)


def merge_ia3(model: nnx.Module) -> nnx.Module:
    """Returns a copy of ``model`` with every IA3 vector folded into its op: the base graph and inference cost.

    Raises:
        ValueError: if the model has no IA3.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = inject_ia3(MLP(4, [8], 3, rngs=nnx.Rngs(0)), where="layers.0", feedforward="head")
        >>> model.layers[0].scale[...] = jax.random.uniform(jax.random.key(1), (8,))  # as if trained
        >>> merged, x = merge_ia3(model), jnp.ones((2, 4))
        >>> ia3_sites(merged), bool(jnp.allclose(merged(x), model(x), atol=1e-5))
        ({}, True)
    """
    if not ia3_sites(model):
        raise ValueError("the model has no IA3 to merge (inject_ia3 adds it).")
    model = nnx.clone(model)
    for path, site in [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, IA3Adapted)]:
        _fold(site)
        replace_module(model, path, site.base)
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, IA3Param):
        raise ValueError("strategy 'ia3' but the model has no IA3 vectors: call inject_ia3(model) first.")


def _config(model: nnx.Module) -> dict:
    sites = ia3_sites(model)
    return {
        "where": [p for p, side in sites.items() if side == "output"],
        "feedforward": [p for p, side in sites.items() if side == "input"],
    }


register_strategy(
    "ia3",
    nnx.Any(IA3Param, HEAD_PARAMS),
    prepare=inject_ia3,
    check=_check,
    merge=merge_ia3,
    config=_config,
    reference="Liu et al., NeurIPS 2022",
)
