"""SSF: scale and shift the features (Lian, Zhou, Feng and Wang, NeurIPS 2022), injected into any NNX model.

After an op with output channels c: y = gamma * x + beta, gamma, beta in R^c (over the trailing output axes). Only
gamma, beta (and the task head) train. Because each SSF follows a linear op (Linear, Conv, LinearGeneral, or the
affine part of LayerNorm / BatchNorm) it folds into that op after training:

    gamma * (W x + b) + beta = (W scaled by gamma along its output axes) x + (gamma * b + beta),
    gamma * (s * xhat + t) + beta = (gamma * s) * xhat + (gamma * t + beta)      (normalisation layers),

so the merged model has exactly the original architecture, parameters and inference cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.finetune._surgery import is_head, path_str, replace_module, require_sites

__all__ = ["SSF", "SSFAdapted", "SSFParam", "inject_ssf", "merge_ssf", "ssf_sites"]

_LINEAR = (nnx.Linear, nnx.Conv, nnx.LinearGeneral)
_NORM = (nnx.LayerNorm, nnx.BatchNorm)


class SSFParam(nnx.Param):
    """The Variable type of SSF's gamma and beta, so that one filter selects exactly what SSF trains.

    Example:
        >>> from flax import nnx
        >>> sorted(nnx.to_pure_dict(nnx.state(SSF(3, rngs=nnx.Rngs(0)), SSFParam)))
        ['beta', 'gamma']
    """


class SSF(nnx.Module):
    """y = gamma * x + beta over the trailing axes of shape ``shape``.

    Initialisation (the paper's): gamma ~ N(1, init_std^2), beta ~ N(0, init_std^2), init_std = 0.02, so the
    module starts close to (not exactly at) the identity; ``init_std=0`` starts at the identity exactly.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> ssf = SSF(2, init_std=0.0, rngs=nnx.Rngs(0))
        >>> ssf.gamma[...] = jnp.array([2.0, 3.0])
        >>> print(ssf(jnp.ones((1, 2))))
        [[2. 3.]]
    """

    def __init__(self, shape: int | Sequence[int], *, init_std: float = 0.02, rngs: nnx.Rngs):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        key_g, key_b = jax.random.split(rngs.params())
        self.gamma = SSFParam(1.0 + init_std * jax.random.normal(key_g, shape))
        self.beta = SSFParam(init_std * jax.random.normal(key_b, shape))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * _trailing(self.gamma[...], x.ndim) + _trailing(self.beta[...], x.ndim)


def _trailing(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` with leading unit axes so that it broadcasts over the trailing axes of an ndim array."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


class SSFAdapted(nnx.Module):
    """An op followed by its SSF: ``ssf(base(*args, **kwargs))``. ``merge_ssf`` folds it back into ``base``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> base = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> site = SSFAdapted(base, SSF(2, init_std=0.0, rngs=nnx.Rngs(0)))
        >>> bool(jnp.allclose(site(jnp.ones((1, 2))), base(jnp.ones((1, 2)))))  # the identity SSF
        True
    """

    def __init__(self, base: nnx.Module, ssf: SSF):
        self.base = base
        self.ssf = ssf

    def __call__(self, *args, **kwargs):
        return self.ssf(self.base(*args, **kwargs))


def _output_shape(module: nnx.Module) -> tuple[int, ...]:
    if isinstance(module, nnx.LinearGeneral):
        return tuple(module.out_features)
    if isinstance(module, nnx.Linear | nnx.Conv):
        return (module.kernel[...].shape[-1],)
    return (module.num_features,)


def _default_where(path: tuple, module: nnx.Module) -> bool:
    # A linear op without bias (e.g. a convolution followed by BatchNorm) cannot absorb beta; the SSF of the
    # normalisation after it covers the same channels, so the default leaves it out and every default site folds.
    if isinstance(module, _LINEAR) and module.bias is None:
        return False
    return isinstance(module, _LINEAR + _NORM) and not is_head(path)


def ssf_sites(model: nnx.Module) -> list[str]:
    """Dotted paths of the SSF-adapted ops in ``model``.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> ssf_sites(inject_ssf(MLP(4, [8], 3, rngs=nnx.Rngs(0))))
        ['layers.0']
    """
    return [path_str(p) for p, m in nnx.iter_modules(model) if isinstance(m, SSFAdapted)]


def inject_ssf(
    model: nnx.Module,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
    *,
    init_std: float = 0.02,
    seed: int = 0,
) -> nnx.Module:
    """Returns a copy of ``model`` with an SSF after every selected op; ``model`` itself is not changed.

    Args:
        model: any NNX module.
        where: which ops get an SSF: ``None`` (default) = every Linear, Conv, LinearGeneral (e.g. the query, key,
            value and output projections of ``nnx.MultiHeadAttention``) that has a bias, LayerNorm and BatchNorm
            except those under ``head`` (a bias-free conv followed by BatchNorm, as in EfficientNet, gets its SSF
            after the BatchNorm, where it folds); a predicate ``(path, module) -> bool``; or glob patterns on the
            dotted path (e.g. ``"blocks.*.fc1"``), applied to the same op types, bias-free ones included.
        init_std: standard deviation of the random initialisation (0: exactly the identity).
        seed: for the initialisation.

    Raises:
        ValueError: if ``where`` selects nothing, or the model already has SSF.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params
        >>> from jaxtransfer.models import MLP
        >>> model = inject_ssf(MLP(4, [8, 8], 3, rngs=nnx.Rngs(0)))
        >>> ssf_sites(model), count_params(model, SSFParam)  # gamma and beta of 8 channels at two sites
        (['layers.0', 'layers.1'], 32)
    """
    if ssf_sites(model):
        raise ValueError(f"the model already has SSF at {ssf_sites(model)[:5]}; merge_ssf it first.")
    model = nnx.clone(model)
    what = "Linear, Conv, LinearGeneral, LayerNorm or BatchNorm"
    sites = require_sites(model, where, _LINEAR + _NORM, _default_where, what)
    rngs = nnx.Rngs(seed)
    for path, module in sites:
        replace_module(model, path, SSFAdapted(module, SSF(_output_shape(module), init_std=init_std, rngs=rngs)))
    return model


def _fold_check(base: nnx.Module) -> str | None:
    """Why ``base`` cannot absorb an SSF, or None if it can."""
    if isinstance(base, _LINEAR):
        return None if base.bias is not None else "the op has no bias to absorb beta"
    if isinstance(base, _NORM):
        ok = base.scale is not None and base.bias is not None
        return None if ok else "the normalisation layer has no scale or no bias (use_scale/use_bias=False)"
    return f"{type(base).__name__} is not a linear op"


def _fold(base: nnx.Module, ssf: SSF) -> None:
    """Folds ``ssf`` into ``base`` in place (``_fold_check(base)`` must be None)."""
    gamma, beta = ssf.gamma[...], ssf.beta[...]
    weight = base.kernel if isinstance(base, _LINEAR) else base.scale  # output axes are the trailing ones
    weight[...] = (weight[...] * _trailing(gamma, weight[...].ndim)).astype(weight[...].dtype)
    base.bias[...] = (gamma * base.bias[...] + beta).astype(base.bias[...].dtype)


def merge_ssf(model: nnx.Module, *, strict: bool = True) -> nnx.Module:
    """Returns a copy of ``model`` with every SSF folded into the op before it: the original architecture.

    Args:
        model: a model returned by :func:`inject_ssf` (trained or not); it is not changed.
        strict: if a site cannot be folded (an op without bias, a norm without scale or bias, a custom op),
            raise; with ``strict=False`` such sites keep their SSF (the outputs stay exact) and a warning names them.

    Returns:
        The merged model; its outputs equal the SSF model's up to float rounding.

    Raises:
        ValueError: if the model has no SSF, or (strict) a site cannot be folded.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = inject_ssf(MLP(4, [8], 3, rngs=nnx.Rngs(0)), init_std=0.5)
        >>> merged = merge_ssf(model)
        >>> x = jnp.ones((2, 4))
        >>> ssf_sites(merged), bool(jnp.allclose(merged(x), model(x), atol=1e-5))
        ([], True)
    """
    sites = [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, SSFAdapted)]
    if not sites:
        raise ValueError("the model has no SSF to merge (inject_ssf adds it).")
    model = nnx.clone(model)
    sites = [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, SSFAdapted)]
    unfoldable = {}
    for path, site in sites:
        why = _fold_check(site.base)
        if why:
            unfoldable[path_str(path)] = why
    if unfoldable and strict:
        raise ValueError(f"cannot fold SSF at {unfoldable}; pass strict=False to keep these SSF modules.")
    for path, site in sites:
        if path_str(path) in unfoldable:
            continue
        _fold(site.base, site.ssf)
        replace_module(model, path, site.base)
    if unfoldable:
        warnings.warn(f"SSF kept (not foldable) at {unfoldable}.", UserWarning, stacklevel=2)
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, SSFParam):
        raise ValueError("strategy 'ssf' but the model has no SSF parameters: call inject_ssf(model) first.")


register_strategy(
    "ssf",
    nnx.Any(SSFParam, HEAD_PARAMS),
    prepare=inject_ssf,
    check=_check,
    merge=merge_ssf,
    config=lambda model: {"where": ssf_sites(model)},
    reference="Lian, Zhou, Feng and Wang, NeurIPS 2022",
)
