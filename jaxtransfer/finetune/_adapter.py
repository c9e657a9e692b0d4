"""Bottleneck adapters: Houlsby et al. (ICML 2019), sequential, and AdaptFormer's parallel variant (Chen et al.,
NeurIPS 2022).

An adapter is a bottleneck MLP over the trailing (channel) axis, a(h) = W_up act(W_down h + b_down) + b_up, with
W_down: (d, m), W_up: (m, d_out), m the bottleneck width. The up-projection starts at zero, so the injected model
equals the base model bitwise.

- sequential (Houlsby): after a sub-block's output op, before the residual add: y = h + s a(h), h = op(x);
- parallel (AdaptFormer): beside the op, on its input: y = op(x) + s a(x).

Houlsby place one after the attention block's output projection and one after the feed-forward block; the default
sites are the same (``nnx.MultiHeadAttention`` modules and ops named ``attn_out`` or ``fc2``). Parameters per
site: d m + m + m d_out + d_out. An adapter is non-linear, so it cannot be merged: it adds its two matmuls per token
(4 d m multiply-adds per token and site for d = d_out) to inference, which SSF, LoRA and IA3 do not after merging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.finetune._surgery import is_head, path_str, replace_module, require_sites

__all__ = ["Adapter", "AdapterAdapted", "AdapterParam", "adapter_sites", "inject_adapter"]

_TYPES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv, nnx.MultiHeadAttention)
_ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu, "silu": jax.nn.silu}
_DEFAULT_NAMES = ("attn_out", "fc2")


class AdapterParam(nnx.Param):
    """The Variable type of the bottleneck adapters' weights (one filter selects what the strategy trains).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_adapter
        >>> from jaxtransfer.models import TinyViT
        >>> vit = TinyViT(8, 1, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0))  # width 16, 2 blocks
        >>> count_params(inject_adapter(vit, bottleneck=4), AdapterParam)  # 2 blocks x 2 x (16*4 + 4 + 4*16 + 16)
        592
    """


class Adapter(nnx.Module):
    """a(h) = W_up act(W_down h + b_down) + b_up over the trailing axis; W_up = 0, b_up = 0 at the start.

    W_down is drawn from N(0, 1 / d) (LeCun normal), b_down = 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> a = Adapter(6, 2, rngs=nnx.Rngs(0))
        >>> a.down.shape, a.up.shape, bool(jnp.all(a(jnp.ones((1, 6))) == 0))
        ((6, 2), (2, 6), True)
    """

    def __init__(
        self, dim: int, bottleneck: int, *, out_dim: int | None = None, activation: str = "gelu", rngs: nnx.Rngs
    ):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}.")
        out_dim = dim if out_dim is None else out_dim
        self.activation = activation
        self.down = AdapterParam(jax.random.normal(rngs.params(), (dim, bottleneck)) / math.sqrt(dim))
        self.down_bias = AdapterParam(jnp.zeros((bottleneck,)))
        self.up = AdapterParam(jnp.zeros((bottleneck, out_dim)))
        self.up_bias = AdapterParam(jnp.zeros((out_dim,)))

    def __call__(self, h: jax.Array) -> jax.Array:
        dt, lead = h.dtype, (1,) * (h.ndim - 1)
        z = h @ self.down[...].astype(dt) + self.down_bias[...].astype(dt).reshape(*lead, -1)
        return _ACTIVATIONS[self.activation](z) @ self.up[...].astype(dt) + self.up_bias[...].astype(dt).reshape(
            *lead, -1
        )


def _widths(module: nnx.Module) -> tuple[int | None, int | None]:
    """(input width, output width) over the trailing axis, None where it is not one axis."""
    if isinstance(module, nnx.MultiHeadAttention):
        return module.in_features, module.out_features
    if isinstance(module, nnx.LinearGeneral):
        shape, n_out = module.kernel[...].shape, len(module.out_features)
        trailing = module.axis in (-1, (-1,)) and not module.batch_axis
        return (shape[0] if trailing and len(shape) == n_out + 1 else None), (shape[-1] if n_out == 1 else None)
    if isinstance(module, nnx.Conv):  # a strided or dilated conv changes the grid: no parallel branch
        ones = all(s == 1 for s in ((module.strides,) if isinstance(module.strides, int) else module.strides or (1,)))
        same = module.padding == "SAME" and ones and module.input_dilation in (1, None)
        return (module.in_features if same else None), module.out_features
    if isinstance(module, nnx.Linear):
        return module.kernel[...].shape
    return None, None


class AdapterAdapted(nnx.Module):
    """An op with a bottleneck adapter: ``"sequential"``: h + scale a(h), h = base(x); ``"parallel"``:
    base(x) + scale a(x).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> base = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
        >>> site = AdapterAdapted(base, Adapter(4, 2, rngs=nnx.Rngs(1)))
        >>> bool(jnp.array_equal(site(jnp.ones((1, 4))), base(jnp.ones((1, 4)))))  # W_up = 0: the base op
        True
    """

    def __init__(self, base: nnx.Module, adapter: Adapter, *, mode: str = "sequential", scale: float = 1.0):
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"mode must be 'sequential' or 'parallel'; got {mode!r}.")
        self.base = base
        self.adapter = adapter
        self.mode = mode
        self.scale = float(scale)

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        h = self.base(x, *args, **kwargs)
        if self.mode == "sequential":
            return h + self.scale * self.adapter(h)
        return h + (self.scale * self.adapter(x)).astype(h.dtype)


def _default_where(path: tuple, module: nnx.Module) -> bool:
    if not path or is_head(path):
        return False
    return isinstance(module, nnx.MultiHeadAttention) or (
        isinstance(module, _TYPES) and str(path[-1]) in _DEFAULT_NAMES
    )


def adapter_sites(model: nnx.Module) -> list[str]:
    """Dotted paths of the ops that carry a bottleneck adapter.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import TinyViT
        >>> adapter_sites(inject_adapter(TinyViT(8, 1, 4, 16, 1, 2, 3, rngs=nnx.Rngs(0)), bottleneck=4))
        ['blocks.0.attn', 'blocks.0.fc2']
    """
    return [path_str(p) for p, m in nnx.iter_modules(model) if isinstance(m, AdapterAdapted)]


def inject_adapter(
    model: nnx.Module,
    bottleneck: int = 64,
    *,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
    mode: str = "sequential",
    scale: float = 1.0,
    activation: str = "gelu",
    seed: int = 0,
) -> nnx.Module:
    """Returns a copy of ``model`` with a bottleneck adapter at every selected op; ``model`` is unchanged.

    Args:
        model: any NNX module.
        bottleneck: m, the adapter's hidden width (Houlsby et al. use 8 to 256; default 64).
        where: glob patterns on the dotted path (applied to Linear, LinearGeneral, Conv, MultiHeadAttention) or a
            predicate ``(path, module) -> bool``. Default: every ``nnx.MultiHeadAttention`` and every op named
            ``attn_out`` or ``fc2`` outside the head (after attention and after the feed-forward block).
        mode: ``"sequential"`` (Houlsby) or ``"parallel"`` (AdaptFormer; the op must keep the input's grid).
        scale: s, the adapter's output scale (AdaptFormer uses 0.1; Houlsby 1).
        activation: ``"gelu"``, ``"relu"`` or ``"silu"``.
        seed: for W_down.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params
        >>> from jaxtransfer.models import TinyViT
        >>> model = inject_adapter(TinyViT(8, 1, 4, 16, 2, 2, 3, rngs=nnx.Rngs(0)), bottleneck=4)
        >>> count_params(model, AdapterParam)  # 4 sites x (16 x 4 + 4 + 4 x 16 + 16)
        592

    Raises:
        ValueError: ``bottleneck`` < 1, an unknown mode or activation, nothing selected, a site whose widths
            cannot be read (the message names it), or the model already has adapters.
    """
    if isinstance(bottleneck, bool) or not (isinstance(bottleneck, int) and bottleneck >= 1):
        raise ValueError(f"bottleneck must be a positive integer; got {bottleneck!r}.")
    if mode not in ("sequential", "parallel"):
        raise ValueError(f"mode must be 'sequential' or 'parallel'; got {mode!r}.")
    if not (isinstance(scale, int | float) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number; got {scale!r}.")
    if adapter_sites(model):
        raise ValueError(f"the model already has adapters at {adapter_sites(model)[:5]}: inject once.")
    model = nnx.clone(model)
    sites = require_sites(model, where, _TYPES, _default_where, "op")
    rngs = nnx.Rngs(seed)
    for path, module in sites:
        d_in, d_out = _widths(module)
        width = d_out if mode == "sequential" else d_in
        if width is None or d_out is None:
            raise ValueError(
                f"cannot put a {mode} adapter at {path_str(path)} ({type(module).__name__}): its "
                f"{'output' if mode == 'sequential' else 'input'} is not one trailing channel axis (or a "
                "parallel branch would not keep the grid)."
            )
        adapter = Adapter(width, bottleneck, out_dim=d_out, activation=activation, rngs=rngs)
        replace_module(model, path, AdapterAdapted(module, adapter, mode=mode, scale=scale))
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, AdapterParam):
        raise ValueError("strategy 'adapter' but the model has no adapters: call inject_adapter(model) first.")


def _config(model: nnx.Module) -> dict:
    sites = [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, AdapterAdapted)]
    first = sites[0][1]
    return {
        "bottleneck": int(first.adapter.down.shape[-1]),
        "mode": first.mode,
        "scale": first.scale,
        "activation": first.adapter.activation,
        "where": [path_str(p) for p, _ in sites],
    }


register_strategy(
    "adapter",
    nnx.Any(AdapterParam, HEAD_PARAMS),
    prepare=inject_adapter,
    check=_check,
    config=_config,
    reference="Houlsby et al., ICML 2019; Chen et al. (AdaptFormer), NeurIPS 2022",
)
