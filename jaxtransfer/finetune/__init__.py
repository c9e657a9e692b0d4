"""Parameter-efficient fine-tuning in Flax NNX: SSF with exact merge, the baselines, and a trainer."""

from jaxtransfer.finetune.peft import STRATEGIES, count_params, inject_lora, trainable_filter
from jaxtransfer.finetune.ssf import SSF, SSFAdapted, SSFParam, inject_ssf, merge_ssf, ssf_sites
from jaxtransfer.finetune.train import evaluate, finetune

__all__ = [
    "SSF",
    "STRATEGIES",
    "SSFAdapted",
    "SSFParam",
    "count_params",
    "evaluate",
    "finetune",
    "inject_lora",
    "inject_ssf",
    "merge_ssf",
    "ssf_sites",
    "trainable_filter",
]
