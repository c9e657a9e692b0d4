"""NNX models: small reference models (MLP, residual CNN, tiny ViT), real pre-trained backbones, checkpoints."""

from jaxtransfer.models._extract import extract_features
from jaxtransfer.models._layer import LayerModel
from jaxtransfer.models._preprocess import extract_outputs, preprocess_for
from jaxtransfer.models._prompts import PromptParam, Prompts
from jaxtransfer.models.checkpoint import restore_model, save_model
from jaxtransfer.models.cnn import CNN
from jaxtransfer.models.efficientnet import EFFICIENTNET_LITE, DepthwiseConv, EfficientNetLite, LiteConfig
from jaxtransfer.models.minilm import BertConfig, MiniLM, mean_pool, tokenize
from jaxtransfer.models.mlp import MLP
from jaxtransfer.models.pretrained import (
    LAYOUTS,
    PRETRAINED,
    OnnxWeights,
    cache_dir,
    convert_efficientnet_lite,
    convert_weights,
    load,
    minilm_tokenizer,
    read_onnx,
    source_weights,
)
from jaxtransfer.models.resnet import ChannelAffine, ResNet50Half
from jaxtransfer.models.vit import TinyViT
from jaxtransfer.models.vit_small import ViTConfig, ViTSmall

__all__ = [
    "CNN",
    "EFFICIENTNET_LITE",
    "LAYOUTS",
    "MLP",
    "PRETRAINED",
    "BertConfig",
    "ChannelAffine",
    "DepthwiseConv",
    "EfficientNetLite",
    "LayerModel",
    "LiteConfig",
    "MiniLM",
    "OnnxWeights",
    "PromptParam",
    "Prompts",
    "ResNet50Half",
    "TinyViT",
    "ViTConfig",
    "ViTSmall",
    "cache_dir",
    "convert_efficientnet_lite",
    "convert_weights",
    "extract_features",
    "extract_outputs",
    "load",
    "mean_pool",
    "minilm_tokenizer",
    "preprocess_for",
    "read_onnx",
    "restore_model",
    "save_model",
    "source_weights",
    "tokenize",
]
