"""Old path of the regularisers, kept as an alias: see :mod:`jaxtransfer.finetune`."""

from jaxtransfer.finetune._regularizers import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    l2_sp,
    l2_sp_penalty,
)

__all__ = [
    "bss_penalty",
    "co_tuning_loss",
    "co_tuning_relationship",
    "delta_channel_weights",
    "delta_penalty",
    "l2_sp",
    "l2_sp_penalty",
]
