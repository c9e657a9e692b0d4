"""Linear probe: only the new head trains; the backbone is frozen (its features are fixed)."""

from jaxtransfer.finetune._strategy import HEAD_PARAMS, register_strategy

__all__: list[str] = []

register_strategy("linear_probe", HEAD_PARAMS)
