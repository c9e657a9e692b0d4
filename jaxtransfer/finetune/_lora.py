"""LoRA (Hu et al., ICLR 2022): a low-rank update x A B beside every selected ``nnx.Linear``, and its exact merge.

``nnx.LoRA`` computes base(x) + x A B with A (in, r) random and B (r, out) zero, so the model's outputs are
unchanged until B trains. After training the update folds into the kernel, W' = W + A B, and the merged model has
the original architecture and inference cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy
from jaxtransfer.finetune._surgery import is_head, path_str, replace_module, select_modules

__all__ = ["inject_lora", "lora_sites", "merge_lora"]


def _default_where(path: tuple, module: nnx.Module) -> bool:
    return isinstance(module, nnx.Linear) and not is_head(path)


def lora_sites(model: nnx.Module) -> list[str]:
    """Dotted paths of the LoRA-adapted layers in ``model``.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> lora_sites(MLP(4, [8], 3, rngs=nnx.Rngs(0)))  # none until inject_lora
        []
    """
    return [path_str(p) for p, m in nnx.iter_modules(model) if isinstance(m, nnx.LoRA)]


def inject_lora(
    model: nnx.Module,
    rank: int = 8,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> nnx.Module:
    """Returns a copy of ``model`` in which every selected ``nnx.Linear`` is wrapped by ``nnx.LoRA`` of ``rank``
    (default 8, a common choice in the LoRA paper's experiments).

    ``where``: glob patterns on the dotted path, or a predicate ``(path, module) -> bool`` (default: every Linear
    except the head). Only ``nnx.Linear`` is adapted (attention projections are ``LinearGeneral``: not adapted).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_lora, lora_sites
        >>> from jaxtransfer.models import MLP
        >>> lora_sites(inject_lora(MLP(4, [8, 8], 3, rngs=nnx.Rngs(0)), rank=2))
        ['layers.0', 'layers.1']

    Raises:
        ValueError: if ``rank`` < 1, nothing is selected, or the model already has LoRA.
    """
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer; got {rank!r}.")
    existing = lora_sites(model)
    if existing:
        raise ValueError(
            f"the model already has LoRA at {existing[:5]}: inject once (train or merge the existing adapters first)."
        )
    model = nnx.clone(model)
    sites = [
        (p, m) for p, m in select_modules(model, where, (nnx.Linear,), _default_where) if isinstance(m, nnx.Linear)
    ]
    if not sites:
        raise ValueError(f"where={where!r} selects no nnx.Linear in {type(model).__name__}.")
    rngs = nnx.Rngs(seed)
    for path, lin in sites:
        in_f, out_f = lin.kernel[...].shape
        replace_module(model, path, nnx.LoRA(in_f, rank, out_f, base_module=lin, rngs=rngs))
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Returns a copy of ``model`` with every ``nnx.LoRA`` folded into its base Linear: W' = W + A B.

    The merged model has the original architecture; its outputs equal the LoRA model's up to float rounding.

    Raises:
        ValueError: if the model has no LoRA, or a LoRA has no ``nnx.Linear`` base.

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
    for path, site in [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, nnx.LoRA)]:
        base = site.base_module
        if not isinstance(base, nnx.Linear):
            raise ValueError(f"cannot merge the LoRA at {path_str(path)}: its base is {type(base).__name__}.")
        kernel = base.kernel[...]
        update = jnp.matmul(site.lora_a[...], site.lora_b[...], precision="highest")
        base.kernel[...] = (kernel + update).astype(kernel.dtype)
        replace_module(model, path, base)
    return model


def _check(model: nnx.Module) -> None:
    if not nnx.state(model, nnx.LoRAParam):
        raise ValueError("strategy 'lora' but the model has no LoRA parameters: call inject_lora(model, rank) first.")


register_strategy(
    "lora",
    nnx.Any(nnx.LoRAParam, HEAD_PARAMS),
    prepare=inject_lora,
    check=_check,
    merge=merge_lora,
    reference="Hu et al., ICLR 2022",
)
