"""Small Flax NNX reference models (MLP, residual CNN, tiny ViT) and orbax checkpoints."""

from jaxtransfer.models.checkpoint import restore_model, save_model
from jaxtransfer.models.cnn import CNN
from jaxtransfer.models.mlp import MLP
from jaxtransfer.models.vit import TinyViT

__all__ = ["CNN", "MLP", "TinyViT", "restore_model", "save_model"]
