"""Old path of the trainer, kept as an alias: see :mod:`jaxtransfer.finetune`."""

from jaxtransfer.finetune._train import evaluate, finetune

__all__ = ["evaluate", "finetune"]
