"""The real model zoo for model selection: the shipped ImageNet-scale backbones and layers cut out of them.

=========================  =====================================================  ===========================
candidate                  what it is                                             input
=========================  =====================================================  ===========================
``efficientnet-lite0/1/2``  EfficientNet-Lite, ImageNet classifiers (4.7-6.1M)     (255 p - 127) / 128, RGB
``vit-s14-saliency``        DINOv2-layout ViT-S/14 of a saliency model (22.1M)     ImageNet mean / std, RGB
``resnet50-1by2-nsfw``      ResNet-50-1by2 of Yahoo Open-NSFW (5.9M)               BGR, 255 p - Caffe means
``<backbone>/<layer>``      the backbone cut at an intermediate layer              as its backbone
=========================  =====================================================  ===========================

Every candidate sees the target's images resized to one ``image_size`` (default 112 px, a multiple of the ViT's
patch of 14, so that fine-tuning the ground truth fits a CPU; the published resolutions are 224-260). The ViT and
the layer cuts have no source classifier (``Candidate.source_head=False``): LEEP and NCE do not rate them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jaxtransfer.data import Dataset, caffe_preprocess, efficientnet_preprocess, imagenet_preprocess
from jaxtransfer.experiments._zoo import Candidate, target_task

__all__ = ["PREPROCESS", "REAL_ZOO", "TRUTH_FILE", "RealBackbone", "real_target", "real_zoo"]

TRUTH_FILE = Path(__file__).with_name("real_zoo_truth.json")
"""The fine-tuned ground truth of the real zoo that ``bench/real_zoo.py`` measured (shipped with the package)."""

PREPROCESS = {  # the input normalisation of each backbone, by name
    "efficientnet": efficientnet_preprocess,
    "imagenet": imagenet_preprocess,
    "caffe": caffe_preprocess,
}


@dataclass(frozen=True)
class RealBackbone:
    """A shipped backbone in the zoo: its ``load`` name, its input normalisation, its layers offered as candidates,
    and whether its published head is a classifier (a source head for LEEP / NCE).

    Example:
        >>> REAL_ZOO[3]
        RealBackbone(name='vit-s14-saliency', preprocess='imagenet', layers=('block6',), classifier=False)
    """

    name: str
    preprocess: str
    layers: tuple[str, ...] = ()
    classifier: bool = True


REAL_ZOO: tuple[RealBackbone, ...] = (
    RealBackbone("efficientnet-lite0", "efficientnet", ("stage6",)),
    RealBackbone("efficientnet-lite1", "efficientnet"),
    RealBackbone("efficientnet-lite2", "efficientnet"),
    RealBackbone("vit-s14-saliency", "imagenet", ("block6",), classifier=False),
    RealBackbone("resnet50-1by2-nsfw", "caffe", ("stage3",)),
)


def real_target(name: str, *, seed: int = 0) -> Dataset:
    """The real zoo's targets: "mnist" is 500 real MNIST digits, 10 per class to train on, 200 each for validation
    and test (the few-label regime where the choice of backbone matters most); the others are ``target_task``'s.

    Example:
        >>> real_target("mnist")
        Dataset('mnist_5k', x(500, 28, 28, 1), 10 classes, train=100, val=200, test=200)
    """
    if name == "mnist":
        return target_task("mnist", seed=seed, max_per_class=50, fractions=(0.2, 0.4, 0.4))
    return target_task(name, seed=seed)


def _transform(images, *, style: str, size: int):
    return PREPROCESS[style](images, size)


def real_zoo(
    zoo: Sequence[RealBackbone] = REAL_ZOO, *, image_size: int = 112, layers: bool = True, directory=None
) -> list[Candidate]:
    """The candidates of ``zoo``: each backbone, then (``layers``) each of its listed layers, at ``image_size`` px.

    Args:
        zoo: the backbones (default ``REAL_ZOO``).
        image_size: the side every candidate sees the images at.
        layers: include the layer cuts.
        directory: the cache of converted EfficientNet weights (``jaxtransfer.models.load``).

    Example:
        >>> [c.name for c in real_zoo(REAL_ZOO[3:], image_size=56)]
        ['vit-s14-saliency', 'vit-s14-saliency/block6', 'resnet50-1by2-nsfw', 'resnet50-1by2-nsfw/stage3']
    """
    from jaxtransfer.models import LayerModel, load

    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of 14 (the ViT's patch); got {image_size}.")
    out = []
    for spec in zoo:
        if spec.preprocess not in PREPROCESS:
            raise ValueError(f"unknown preprocessing {spec.preprocess!r}; known: {sorted(PREPROCESS)}.")
        model = load(spec.name, directory=directory)
        transform = functools.partial(_transform, style=spec.preprocess, size=image_size)
        info = {"backbone": spec.name, "image_size": image_size}
        out.append(Candidate(spec.name, model, transform, {**info, "layer": None}, source_head=spec.classifier))
        if layers:
            for layer in spec.layers:
                cut = LayerModel(model, layer)
                out.append(Candidate(f"{spec.name}/{layer}", cut, transform, {**info, "layer": layer}, False))
    return out
