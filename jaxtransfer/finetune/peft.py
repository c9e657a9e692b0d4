"""Old path of the strategy registry and LoRA, kept as an alias: see :mod:`jaxtransfer.finetune`."""

from jaxtransfer.finetune._lora import inject_lora
from jaxtransfer.finetune._strategy import STRATEGIES, count_params, trainable_filter

__all__ = ["STRATEGIES", "count_params", "inject_lora", "trainable_filter"]
