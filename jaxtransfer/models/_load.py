"""Loading a shipped pre-trained backbone as an NNX model, offline, after its checksum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from jaxtransfer.models._convert import FORMAT, converted_weights
from jaxtransfer.models._onnx import convert_weights, read_onnx
from jaxtransfer.models._sources import source, source_weights
from jaxtransfer.models._weights import assign_weights
from jaxtransfer.models.efficientnet import EfficientNetLite
from jaxtransfer.models.minilm import BertConfig, MiniLM, hf_bert_names
from jaxtransfer.models.resnet import ResNet50Half
from jaxtransfer.models.resnet import onnx_names as resnet_onnx_names
from jaxtransfer.models.vit_small import ViTSmall
from jaxtransfer.models.vit_small import onnx_names as vit_onnx_names

__all__ = ["load"]


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise ImportError("reading pre-trained weights needs safetensors: pip install 'jaxtransfer[real]'") from e
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (not a dict)


def load(
    name: str,
    *,
    num_outputs: int | None = None,
    seed: int = 0,
    directory: str | Path | None = None,
    convert: bool = True,
) -> nnx.Module:
    """A pre-trained backbone as an NNX model, offline (see the table in this module's docstring).

    Args:
        name: a key of ``PRETRAINED``: "minilm-l6", "efficientnet-lite0" / "-lite1" / "-lite2",
            "vit-s14-saliency" or "resnet50-1by2-nsfw".
        num_outputs: a new, randomly initialised linear ``head`` of this width (seeded by ``seed``). ``None`` keeps the
            published head: none for MiniLM and the ViT-S (``model(x)`` is the embedding; the ViT's saliency
            decoder is ``model.saliency``), the 1000 ImageNet classes for EfficientNet-Lite, the 2 Open-NSFW
            classes for the ResNet.
        directory: the cache of converted EfficientNet weights (default ``cache_dir()``).
        convert: convert the EfficientNet weights on first use when torch is available.

    Raises:
        ModuleNotFoundError: the package that ships the weights is not installed (the message says which).
        OSError: a checksum does not match.

    Example:
        >>> model = load("minilm-l6", num_outputs=5)  # all-MiniLM-L6-v2 with a new 5-way head
        >>> model.head.kernel.shape, model.config.depth
        ((384, 5), 6)
    """
    src = source(name)
    if num_outputs is not None and not (isinstance(num_outputs, int) and num_outputs > 0):
        raise ValueError(f"num_outputs must be a positive int or None; got {num_outputs!r}.")
    rngs = nnx.Rngs(seed)
    if name == "minilm-l6":
        path = source_weights(name)
        tensors, _ = _read_safetensors(path)
        mapping = hf_bert_names(BertConfig().depth)
        arrays = {ours: tensors[theirs].T if t else tensors[theirs] for ours, (theirs, t) in mapping.items()}
        model = nnx.eval_shape(lambda: MiniLM(BertConfig(), rngs=nnx.Rngs(0)))
        model = assign_weights(model, arrays, source=str(path))
        if num_outputs is not None:
            model.head = nnx.Linear(model.config.dim, num_outputs, rngs=rngs)
        return model
    if name in ("vit-s14-saliency", "resnet50-1by2-nsfw"):
        path = source_weights(name)
        graph = read_onnx(path)
        if name == "vit-s14-saliency":
            model = nnx.eval_shape(lambda: ViTSmall(rngs=nnx.Rngs(0)))
            model = convert_weights(model, graph, vit_onnx_names(model.config), what=str(path))
            width = model.config.dim
        else:
            model = nnx.eval_shape(lambda: ResNet50Half(rngs=nnx.Rngs(0)))
            model = convert_weights(model, graph, resnet_onnx_names(graph), what=str(path))
            width = model.head.in_features
        if num_outputs is not None:
            model.head = nnx.Linear(width, num_outputs, rngs=rngs)
        return model
    path = converted_weights(name, directory, convert)
    arrays, meta = _read_safetensors(path)
    if meta.get("format") != FORMAT or meta.get("source_sha256") != src.sha256:
        raise OSError(f"{path} was not converted from the published {name} weights ({meta}); convert again.")
    model = assign_weights(nnx.eval_shape(lambda: EfficientNetLite(name, rngs=nnx.Rngs(0))), arrays, source=str(path))
    if num_outputs is not None:
        model.head = nnx.Linear(1280, num_outputs, rngs=rngs)
    return model
