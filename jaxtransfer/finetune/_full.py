"""Full fine-tuning: every parameter trains."""

from flax import nnx

from jaxtransfer.finetune._strategy import register_strategy

__all__: list[str] = []

register_strategy("full", nnx.Param)
