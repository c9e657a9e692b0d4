"""Fine-tuning in Flax NNX: the strategies (SSF with exact merge, LoRA with merge, BitFit, linear probe, full),
the regularisers, and a trainer.

Every strategy is registered once (:data:`STRATEGIES`, see ``_strategy.py``) with the parameters it trains, how
it prepares a model, what it checks before training and how it merges. This package imports every module in its
folder, so a new strategy is one file that calls ``register_strategy`` (plus its test).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from jaxtransfer.finetune import _bitfit, _full, _linear_probe  # noqa: F401  (they only register a strategy)
from jaxtransfer.finetune._lora import inject_lora, lora_sites, merge_lora
from jaxtransfer.finetune._regularizers import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    l2_sp,
    l2_sp_penalty,
)
from jaxtransfer.finetune._ssf import SSF, SSFAdapted, SSFParam, inject_ssf, merge_ssf, ssf_sites
from jaxtransfer.finetune._strategy import (
    HEAD_PARAMS,
    STRATEGIES,
    Strategy,
    count_params,
    get_strategy,
    register_strategy,
    trainable_filter,
)
from jaxtransfer.finetune._surgery import HEAD, is_head, path_str, replace_module, select_modules
from jaxtransfer.finetune._train import evaluate, finetune

__all__ = [
    "HEAD",
    "HEAD_PARAMS",
    "SSF",
    "STRATEGIES",
    "SSFAdapted",
    "SSFParam",
    "Strategy",
    "bss_penalty",
    "co_tuning_loss",
    "co_tuning_relationship",
    "count_params",
    "delta_channel_weights",
    "delta_penalty",
    "evaluate",
    "finetune",
    "get_strategy",
    "inject_lora",
    "inject_ssf",
    "is_head",
    "l2_sp",
    "l2_sp_penalty",
    "lora_sites",
    "merge_lora",
    "merge_ssf",
    "path_str",
    "register_strategy",
    "replace_module",
    "select_modules",
    "ssf_sites",
    "trainable_filter",
]

# A strategy added as a new file registers itself on import.
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
