"""Fine-tuning in Flax NNX: the strategies (SSF, LoRA and IA3 with exact merges, VPT, bottleneck adapters, BitFit,
linear probe, full), adapter files,
the regularisers, and a trainer (arrays or streams, transforms on device, per-parameter rules, mixed precision,
meshes, best-epoch selection, checkpoints and resume).

Every strategy is registered once (:data:`STRATEGIES`, see ``_strategy.py``) with the parameters it trains, how
it prepares a model, what it checks before training and how it merges. This package imports every module in its
folder, so a new strategy is one file that calls ``register_strategy`` (plus its test).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from jaxtransfer.finetune import _bitfit, _full, _linear_probe  # noqa: F401  (they only register a strategy)
from jaxtransfer.finetune._adafilter import AdaFilter, GatedLayer, inject_adafilter, straight_through_step
from jaxtransfer.finetune._adapter import Adapter, AdapterAdapted, AdapterParam, adapter_sites, inject_adapter
from jaxtransfer.finetune._adapter_files import (
    adapter_config,
    inject_recorded,
    injected_adapters,
    load_adapter,
    save_adapter,
)
from jaxtransfer.finetune._b_tuning import b_tuning, b_tuning_penalty, b_tuning_teacher_weights
from jaxtransfer.finetune._batch_stats import batch_stats_fn, has_batch_norm, merged_model, recompute_batch_stats
from jaxtransfer.finetune._glue import accuracy, apply_fn, predict
from jaxtransfer.finetune._hybrid import HybridTeacherStudent, hybrid_regularizer, inject_hybrid, merge_hybrid
from jaxtransfer.finetune._ia3 import IA3Adapted, IA3Param, ia3_sites, inject_ia3, merge_ia3
from jaxtransfer.finetune._l2t_ww import L2TWW, l2t_ww, weighted_feature_matching
from jaxtransfer.finetune._lora import LoRAAdapted, inject_lora, lora_sites, merge_lora, unmerge_lora
from jaxtransfer.finetune._losses import TASKS, mean_average_precision, per_example_loss, top_k_accuracy
from jaxtransfer.finetune._optim import learning_rate_schedule
from jaxtransfer.finetune._regularizers import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    l2_sp,
    l2_sp_penalty,
)
from jaxtransfer.finetune._routing import FrozenParam, RoutedBlock, route_blocks, routing
from jaxtransfer.finetune._rules import Rule, rule_for
from jaxtransfer.finetune._spottune import (
    ConvPolicy,
    GlobalPolicy,
    SpotTune,
    gumbel_softmax_st,
    inject_spottune,
    merge_spottune,
    spottune_budget_penalty,
)
from jaxtransfer.finetune._ssf import SSF, SSFAdapted, SSFParam, inject_ssf, merge_ssf, ssf_sites
from jaxtransfer.finetune._strategy import (
    HEAD_PARAMS,
    STRATEGIES,
    Strategy,
    count_params,
    get_strategy,
    print_trainable,
    register_strategy,
    trainable_filter,
)
from jaxtransfer.finetune._surgery import HEAD, is_head, path_str, replace_module, select_modules
from jaxtransfer.finetune._train import evaluate, finetune
from jaxtransfer.finetune._transforms import compose, cutmix, mixup, random_flip, random_resized_crop, token_dropout
from jaxtransfer.finetune._transtailor import (
    FilterGroup,
    TailorScale,
    TailorScaled,
    filter_groups,
    fold_tailor_scales,
    inject_tailor_scales,
    prune_filters,
    tailor_importance,
    transtailor,
)
from jaxtransfer.finetune._vpt import inject_vpt

__all__ = [
    "HEAD",
    "HEAD_PARAMS",
    "L2TWW",
    "SSF",
    "STRATEGIES",
    "TASKS",
    "AdaFilter",
    "Adapter",
    "AdapterAdapted",
    "AdapterParam",
    "ConvPolicy",
    "FilterGroup",
    "FrozenParam",
    "GatedLayer",
    "GlobalPolicy",
    "HybridTeacherStudent",
    "IA3Adapted",
    "IA3Param",
    "LoRAAdapted",
    "RoutedBlock",
    "Rule",
    "SSFAdapted",
    "SSFParam",
    "SpotTune",
    "Strategy",
    "TailorScale",
    "TailorScaled",
    "accuracy",
    "adapter_config",
    "adapter_sites",
    "apply_fn",
    "b_tuning",
    "b_tuning_penalty",
    "b_tuning_teacher_weights",
    "batch_stats_fn",
    "bss_penalty",
    "co_tuning_loss",
    "co_tuning_relationship",
    "compose",
    "count_params",
    "cutmix",
    "delta_channel_weights",
    "delta_penalty",
    "evaluate",
    "filter_groups",
    "finetune",
    "fold_tailor_scales",
    "get_strategy",
    "gumbel_softmax_st",
    "has_batch_norm",
    "hybrid_regularizer",
    "ia3_sites",
    "inject_adafilter",
    "inject_adapter",
    "inject_hybrid",
    "inject_ia3",
    "inject_lora",
    "inject_recorded",
    "inject_spottune",
    "inject_ssf",
    "inject_tailor_scales",
    "inject_vpt",
    "injected_adapters",
    "is_head",
    "l2_sp",
    "l2_sp_penalty",
    "l2t_ww",
    "learning_rate_schedule",
    "load_adapter",
    "lora_sites",
    "mean_average_precision",
    "merge_hybrid",
    "merge_ia3",
    "merge_lora",
    "merge_spottune",
    "merge_ssf",
    "merged_model",
    "mixup",
    "path_str",
    "per_example_loss",
    "predict",
    "print_trainable",
    "prune_filters",
    "random_flip",
    "random_resized_crop",
    "recompute_batch_stats",
    "register_strategy",
    "replace_module",
    "route_blocks",
    "routing",
    "rule_for",
    "save_adapter",
    "select_modules",
    "spottune_budget_penalty",
    "ssf_sites",
    "straight_through_step",
    "tailor_importance",
    "token_dropout",
    "top_k_accuracy",
    "trainable_filter",
    "transtailor",
    "unmerge_lora",
    "weighted_feature_matching",
]

# A strategy added as a new file registers itself on import.
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
