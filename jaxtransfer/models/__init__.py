"""NNX models: small reference models (MLP, residual CNN, tiny ViT), real pre-trained backbones, checkpoints."""

from jaxtransfer.models._extract import extract_features
from jaxtransfer.models._prompts import PromptParam, Prompts
from jaxtransfer.models.checkpoint import restore_model, save_model
from jaxtransfer.models.cnn import CNN
from jaxtransfer.models.efficientnet import EFFICIENTNET_LITE, DepthwiseConv, EfficientNetLite, LiteConfig
from jaxtransfer.models.minilm import BertConfig, MiniLM, mean_pool, tokenize
from jaxtransfer.models.mlp import MLP
from jaxtransfer.models.pretrained import (
    PRETRAINED,
    cache_dir,
    convert_efficientnet_lite,
    load,
    minilm_tokenizer,
    source_weights,
)
from jaxtransfer.models.vit import TinyViT

__all__ = [
    "CNN",
    "EFFICIENTNET_LITE",
    "MLP",
    "PRETRAINED",
    "BertConfig",
    "DepthwiseConv",
    "EfficientNetLite",
    "LiteConfig",
    "MiniLM",
    "PromptParam",
    "Prompts",
    "TinyViT",
    "cache_dir",
    "convert_efficientnet_lite",
    "extract_features",
    "load",
    "mean_pool",
    "minilm_tokenizer",
    "restore_model",
    "save_model",
    "source_weights",
    "tokenize",
]
