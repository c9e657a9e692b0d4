"""What each shipped backbone expects as input, as one function per model, and extraction of what the scores read."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from jaxtransfer.data import caffe_preprocess, efficientnet_preprocess, imagenet_preprocess, load_dataset
from jaxtransfer.models._extract import extract_features
from jaxtransfer.models._layer import LayerModel
from jaxtransfer.models._load import load
from jaxtransfer.models.efficientnet import EFFICIENTNET_LITE, EfficientNetLite
from jaxtransfer.models.minilm import MiniLM, tokenize
from jaxtransfer.models.resnet import ResNet50Half
from jaxtransfer.models.vit_small import ViTSmall

__all__ = ["extract_outputs", "preprocess_for"]

# load() name -> (input style, published resolution); the styles are jaxtransfer.data's preprocessors
_BY_NAME = {
    **{name: ("efficientnet", config.image_size) for name, config in EFFICIENTNET_LITE.items()},
    "vit-s14-saliency": ("imagenet", 224),
    "resnet50-1by2-nsfw": ("caffe", 224),
    "minilm-l6": ("text", None),
}
_IMAGES = {"efficientnet": efficientnet_preprocess, "imagenet": imagenet_preprocess, "caffe": caffe_preprocess}


def _style(model) -> tuple[str, int | None]:
    if isinstance(model, str):
        if model not in _BY_NAME:
            raise ValueError(f"no preprocessing known for {model!r}; known: {sorted(_BY_NAME)}.")
        return _BY_NAME[model]
    if isinstance(model, LayerModel):
        return _style(model.backbone)
    if isinstance(model, EfficientNetLite):
        return "efficientnet", int(model.config.image_size)  # 224 / 240 / 260 for Lite0 / 1 / 2
    if isinstance(model, ViTSmall):
        return "imagenet", 224
    if isinstance(model, ResNet50Half):
        return "caffe", 224
    if isinstance(model, MiniLM):
        return "text", None
    raise ValueError(
        f"no preprocessing known for a {type(model).__name__}: preprocess_for covers the shipped backbones "
        f"({sorted(_BY_NAME)}); feed other models what they were trained on."
    )


def preprocess_for(model: nnx.Module | str, *, image_size: int | None = None, max_length: int = 128) -> Callable:
    """The function that turns raw inputs into what ``model`` (a shipped backbone, or its ``load`` name) expects.

    Images: (n, H, W) or (n, H, W, 1) grey, or (n, H, W, 3) RGB, pixel values in [0, 1] -> resized to
    ``image_size`` (default: the published resolution, 224-260 px) and normalised as the weights were trained:
    EfficientNet-Lite (255 p - 127) / 128; the ViT-S ImageNet mean / std; the ResNet-50-1by2 BGR minus the Caffe
    means. Grey images are replicated to three channels. Texts (MiniLM): a list of strings -> (n, L) token ids,
    truncated to ``max_length``.

    Args:
        model: a model returned by ``load`` (or a ``LayerModel`` cut of one), or its name.
        image_size: the side to resize images to.
        max_length: the token budget of a text.

    Returns:
        ``fn(raw) -> model input`` (numpy).

    Example:
        >>> import numpy as np
        >>> grey = np.random.default_rng(0).uniform(size=(2, 28, 28))  # raw MNIST-like images
        >>> preprocess_for("efficientnet-lite0", image_size=32)(grey).shape
        (2, 32, 32, 3)
        >>> preprocess_for("minilm-l6")(["a short text", "another"]).shape[0]
        2
    """
    style, size = _style(model)
    if style == "text":
        if image_size is not None:
            raise ValueError("image_size applies to image backbones; MiniLM reads texts.")
        return functools.partial(_tokens, max_length=max_length)
    size = size if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be >= 1; got {image_size}.")
    return functools.partial(_images, fn=_IMAGES[style], size=size)


def _tokens(texts, *, max_length: int) -> np.ndarray:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string (it would be read character by character).")
    return tokenize(list(texts), max_length=max_length)


def _images(images, *, fn, size: int) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]  # (n, H, W) grey
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, H, W), (n, H, W, 1) or (n, H, W, 3); got shape {x.shape}.")
    if np.issubdtype(x.dtype, np.integer) or (x.size and float(np.max(x)) > 1.0 + 1e-6):
        raise ValueError("images must hold pixel values in [0, 1]; divide uint8 images by 255 first.")
    return fn(x.astype(np.float32), size)


def _features_only(model, batch):
    return model.features(batch)


def _head_softmax(model, batch):
    return {"features": model.features(batch), "probs": jax.nn.softmax(model(batch), axis=-1)}


@functools.cache
def _layer_fn(layer: str):
    def fn(model, batch):
        return model.layer_features(batch)[layer]

    return fn


def extract_outputs(
    model: nnx.Module | str,
    dataset,
    *,
    layer: str | None = None,
    part: str = "train",
    max_per_class: int | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """What the transferability scores read of one backbone on one labelled dataset, in one batched pass.

    Args:
        model: a shipped backbone or its ``load`` name (loaded with its published head).
        dataset: a ``jaxtransfer.data.Dataset`` or a name of ``DATASETS`` (then ``max_per_class`` subsamples it).
        layer: an intermediate layer (one of ``model.layer_names``): its pooled features instead of the final ones.
        part: ``"train"``, ``"val"``, ``"test"`` (the dataset's fixed split) or ``"all"``.
        max_per_class, image_size, batch_size, progress: as in ``load_dataset``, ``preprocess_for`` and
            ``extract_features``.

    Returns:
        ``{"features": (n, D), "labels": (n,)}`` and, when the backbone has a classifier head (EfficientNet-Lite,
        the Open-NSFW ResNet) and no ``layer`` is asked for, ``"probs"``: its (n, C_s) softmax for LEEP and NCE.

    Example:
        >>> from jaxtransfer.models import CNN
        >>> from flax import nnx
        >>> extract_outputs(CNN(1, 4, 1, 3, rngs=nnx.Rngs(0)), "digits")
        Traceback (most recent call last):
        ...
        ValueError: no preprocessing known for a CNN: preprocess_for covers the shipped backbones (...); feed ...
    """
    prepare = preprocess_for(model, image_size=image_size)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, **({} if max_per_class is None else {"max_per_class": max_per_class}))
    elif max_per_class is not None:
        raise ValueError("max_per_class subsamples a dataset loaded by name; subsample a Dataset yourself.")
    if part == "all":
        x, y = dataset.x, dataset.y
    elif part in ("train", "val", "test"):
        x, y = dataset.part(part)
    else:
        raise ValueError(f"part must be 'train', 'val', 'test' or 'all'; got {part!r}.")
    if isinstance(model, str):
        model = load(model)
    if layer is not None and layer not in model.layer_names:
        raise ValueError(f"{type(model).__name__} has no layer {layer!r}; its layers: {list(model.layer_names)}.")
    with_head = layer is None and getattr(model, "head", None) is not None and not isinstance(model, LayerModel)
    fn = _layer_fn(layer) if layer is not None else (_head_softmax if with_head else _features_only)
    out = extract_features(model, prepare(x), fn=fn, batch_size=batch_size, progress=progress)
    arrays = dict(out) if isinstance(out, dict) else {"features": out}
    return {**{k: np.asarray(v) for k, v in arrays.items()}, "labels": np.asarray(y)}
