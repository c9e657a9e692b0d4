"""Parameter-efficient fine-tuning in Flax NNX: SSF with exact merge, the baselines, and a trainer."""

from jaxtransfer.finetune.peft import STRATEGIES, count_params, inject_lora, trainable_filter
from jaxtransfer.finetune.regularizers import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    l2_sp,
    l2_sp_penalty,
)
from jaxtransfer.finetune.ssf import SSF, SSFAdapted, SSFParam, inject_ssf, merge_ssf, ssf_sites
from jaxtransfer.finetune.train import evaluate, finetune

__all__ = [
    "SSF",
    "STRATEGIES",
    "SSFAdapted",
    "SSFParam",
    "bss_penalty",
    "co_tuning_loss",
    "co_tuning_relationship",
    "count_params",
    "delta_channel_weights",
    "delta_penalty",
    "evaluate",
    "finetune",
    "inject_lora",
    "inject_ssf",
    "l2_sp",
    "l2_sp_penalty",
    "merge_ssf",
    "ssf_sites",
    "trainable_filter",
]
