"""Which parameters train: linear probe, BitFit, SSF, LoRA, full fine-tuning — one interface.

A strategy is an NNX filter over ``(path, variable)``; the trainer builds ``nnx.Optimizer(model, tx, wrt=filter)``
and differentiates only those variables, so everything else stays bitwise unchanged.

- ``linear_probe``: the head only.
- ``bitfit``: every bias, plus the head (Ben Zaken, Ravfogel and Goldberg, 2022).
- ``ssf``: SSF's gamma and beta (:class:`SSFParam`), plus the head; needs :func:`inject_ssf` first.
- ``lora``: the low-rank factors of ``nnx.LoRA`` (:class:`nnx.LoRAParam`), plus the head; needs
  :func:`inject_lora` first.
- ``full``: every parameter.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import jax
from flax import nnx

from jaxtransfer.finetune.ssf import SSFParam, _path_str, _replace

__all__ = ["STRATEGIES", "count_params", "inject_lora", "trainable_filter"]

STRATEGIES = ("linear_probe", "bitfit", "ssf", "lora", "full")


def _is_head(path, _value) -> bool:
    return bool(path) and path[0] == "head"


def _is_bias(path, _value) -> bool:
    return bool(path) and path[-1] == "bias"


def trainable_filter(strategy: str):
    """The NNX filter of the parameters ``strategy`` trains.

    Raises:
        ValueError: for an unknown strategy (the message lists the known ones).
    """
    head = nnx.All(nnx.Param, _is_head)
    filters = {
        "linear_probe": head,
        "bitfit": nnx.All(nnx.Param, nnx.Any(_is_head, _is_bias)),
        "ssf": nnx.Any(SSFParam, head),
        "lora": nnx.Any(nnx.LoRAParam, head),
        "full": nnx.Param,
    }
    if strategy not in filters:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}.")
    return filters[strategy]


def count_params(model: nnx.Module, filter=nnx.Param) -> int:
    """Number of scalars in the model's variables selected by ``filter`` (a strategy name or an NNX filter)."""
    if isinstance(filter, str):
        filter = trainable_filter(filter)
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, filter))))


def inject_lora(model: nnx.Module, rank: int, where: str | Sequence[str] | None = None, *, seed: int = 0) -> nnx.Module:
    """Returns a copy of ``model`` in which every selected ``nnx.Linear`` is wrapped by ``nnx.LoRA`` of ``rank``.

    ``nnx.LoRA`` computes base(x) + x A B with A (in, rank) random and B (rank, out) zero, so the model's outputs
    are unchanged until B trains. ``where``: glob patterns on the dotted path (default: every Linear except the
    head). Only ``nnx.Linear`` is adapted (attention projections are ``LinearGeneral``: not adapted).

    Raises:
        ValueError: if ``rank`` < 1, nothing is selected, or the model already has LoRA.
    """
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer; got {rank!r}.")
    existing = [p for p, m in nnx.iter_modules(model) if isinstance(m, nnx.LoRA)]
    if existing:
        raise ValueError(
            f"the model already has LoRA at {[_path_str(p) for p in existing][:5]}: inject once (train or merge the "
            "existing adapters first)."
        )
    model = nnx.clone(model)
    patterns = None if where is None else ([where] if isinstance(where, str) else list(where))

    def selected(path, module):
        if not isinstance(module, nnx.Linear) or not path:
            return False
        if patterns is None:
            return path[0] != "head"
        return any(fnmatch.fnmatch(_path_str(path), p) for p in patterns)

    sites = [(p, m) for p, m in nnx.iter_modules(model) if selected(p, m)]
    if not sites:
        raise ValueError(f"where={where!r} selects no nnx.Linear in {type(model).__name__}.")
    rngs = nnx.Rngs(seed)
    for path, lin in sites:
        in_f, out_f = lin.kernel[...].shape
        _replace(model, path, nnx.LoRA(in_f, rank, out_f, base_module=lin, rngs=rngs))
    return model
