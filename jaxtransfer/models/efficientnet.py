"""EfficientNet-Lite (Tan and Le 2019; the "Lite" variants of the TensorFlow model garden) in Flax NNX.

EfficientNet-Lite is EfficientNet made friendly to integer accelerators: no squeeze-and-excitation, ReLU6 instead of
swish, and the stem (32 channels) and head (1280 channels) kept fixed while the width and depth multipliers scale the
rest. Layout:

    stem: conv 3x3 / 2 -> BN -> ReLU6
    7 stages of MBConv blocks (expand 1x1 -> BN -> ReLU6, depthwise kxk / s -> BN -> ReLU6, project 1x1 -> BN,
        + the input when the block keeps shape), the first block of a stage carrying its stride
    head: conv 1x1 -> BN -> ReLU6 -> global average pool -> linear classifier

Convolutions pad like TensorFlow's "SAME" (more padding after than before when the total is odd), which is what the
published weights were trained with. Images are NHWC; the ImageNet checkpoints expect RGB normalised as
(pixel - 127) / 128 for pixels in [0, 255] (``jaxtransfer.data.efficientnet_preprocess`` does this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.models._images import rgb_images

__all__ = ["EFFICIENTNET_LITE", "DepthwiseConv", "EfficientNetLite", "LiteConfig"]


@dataclass(frozen=True)
class LiteConfig:
    """Width / depth multipliers and the input resolution of one EfficientNet-Lite variant.

    (The published training also used dropout before the classifier; the trainer here is deterministic, so the
    model has none.)

    Example:
        >>> EFFICIENTNET_LITE["efficientnet-lite2"]
        LiteConfig(width=1.1, depth=1.2, image_size=260)
    """

    width: float
    depth: float
    image_size: int


EFFICIENTNET_LITE = {
    "efficientnet-lite0": LiteConfig(1.0, 1.0, 224),
    "efficientnet-lite1": LiteConfig(1.0, 1.1, 240),
    "efficientnet-lite2": LiteConfig(1.1, 1.2, 260),
    "efficientnet-lite3": LiteConfig(1.2, 1.4, 280),
    "efficientnet-lite4": LiteConfig(1.4, 1.8, 300),
}

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages at width = depth = 1.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN = {"epsilon": 1e-3, "momentum": 0.99, "use_running_average": True}


def _round_channels(c: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by ``width`` and rounds it to a multiple of ``divisor``, never down by over 10 %."""
    scaled = c * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DepthwiseConv(nnx.Module):
    """A depthwise k x k convolution (one filter per channel, no bias), "SAME" padding; kernel (k, k, 1, C).

    The kernel has the layout of ``nnx.Conv(C, C, (k, k), feature_group_count=C)``. On CPU it runs as a sum of
    k^2 shifted, strided slices times a per-channel weight, which XLA fuses into one loop: 5-30x faster there than
    XLA's grouped convolution (measured per layer, see ``bench/backbones.py``); other backends use the
    convolution. Both give the same result up to float rounding.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> conv = DepthwiseConv(4, 3, 2, rngs=nnx.Rngs(0))
        >>> conv(jnp.ones((1, 8, 8, 4))).shape  # stride 2, "SAME"
        (1, 4, 4, 4)
    """

    def __init__(self, channels: int, kernel: int, stride: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, 1, channels)))
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        w, s = self.kernel[...], self.stride
        k = w.shape[0]
        n, height, width, c = x.shape
        if jax.default_backend() != "cpu":
            return jax.lax.conv_general_dilated(
                x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
            )
        ph, pw = _same_pads(height, k, s), _same_pads(width, k, s)
        xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
        oh, ow = -(-height // s), -(-width // s)
        out = jnp.zeros((n, oh, ow, c), x.dtype)
        for i in range(k):
            for j in range(k):
                window = jax.lax.slice(
                    xp, (0, i, j, 0), (n, i + (oh - 1) * s + 1, j + (ow - 1) * s + 1, c), (1, s, s, 1)
                )
                out = out + window * w[i, j, 0].reshape(1, 1, 1, c)
        return out


class _MBConv(nnx.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int, *, rngs: nnx.Rngs):
        mid = c_in * expand
        if expand != 1:
            self.expand_conv = nnx.Conv(c_in, mid, (1, 1), use_bias=False, rngs=rngs)
            self.expand_bn = nnx.BatchNorm(mid, **_BN, rngs=rngs)
        else:
            self.expand_conv = self.expand_bn = None
        self.depthwise = DepthwiseConv(mid, kernel, stride, rngs=rngs)
        self.depthwise_bn = nnx.BatchNorm(mid, **_BN, rngs=rngs)
        self.project = nnx.Conv(mid, c_out, (1, 1), use_bias=False, rngs=rngs)
        self.project_bn = nnx.BatchNorm(c_out, **_BN, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x if self.expand_conv is None else _relu6(self.expand_bn(self.expand_conv(x)))
        h = self.project_bn(self.project(_relu6(self.depthwise_bn(self.depthwise(h)))))
        return x + h if self.residual else h


class EfficientNetLite(nnx.Module):
    """EfficientNet-Lite with a linear ``head`` (1000 ImageNet classes for the published weights).

    Args:
        config: a ``LiteConfig`` or a name in ``EFFICIENTNET_LITE`` ("efficientnet-lite0" ...).
        num_outputs: width of the classifier ``head``.

    Methods take ``x``: (n, H, W, 3) float images, normalised as the weights expect. The published resolution is
    ``config.image_size``; any size works (the pool is global).

    Example (shapes only, with ``nnx.eval_shape``; ``jaxtransfer.models.load`` gives the published weights):
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: EfficientNetLite("efficientnet-lite0", num_outputs=7, rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m, x: m.features(x), model, jnp.ones((2, 224, 224, 3))).shape
        (2, 1280)
        >>> model.head.kernel.shape
        (1280, 7)
    """

    def __init__(self, config: LiteConfig | str, *, num_outputs: int = 1000, rngs: nnx.Rngs):
        if isinstance(config, str):
            if config not in EFFICIENTNET_LITE:
                raise ValueError(f"unknown EfficientNet-Lite {config!r}; known: {sorted(EFFICIENTNET_LITE)}.")
            config = EFFICIENTNET_LITE[config]
        self.config = config
        self.stem = nnx.Conv(3, 32, (3, 3), strides=2, padding="SAME", use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(32, **_BN, rngs=rngs)
        stages = []
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_STAGES):
            c_in = 32 if i == 0 else _round_channels(c_in, config.width)
            c_out = _round_channels(c_out, config.width)
            if 0 < i < len(_STAGES) - 1:  # the first and last stage keep their depth
                repeats = math.ceil(config.depth * repeats)
            blocks = [_MBConv(c_in, c_out, expand, kernel, stride, rngs=rngs)]
            blocks += [_MBConv(c_out, c_out, expand, kernel, 1, rngs=rngs) for _ in range(repeats - 1)]
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.head_conv = nnx.Conv(c_out, 1280, (1, 1), use_bias=False, rngs=rngs)
        self.head_bn = nnx.BatchNorm(1280, **_BN, rngs=rngs)
        self.head = nnx.Linear(1280, num_outputs, rngs=rngs)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the candidates ``layer_features`` returns: the stem, each stage, the 1280-wide head conv."""
        return ("stem", *(f"stage{i + 1}" for i in range(len(self.stages))), "head_conv")

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """Every stage's output map ``{name: (n, h, w, c)}`` in ``layer_names`` order."""
        x = rgb_images(x)
        h = _relu6(self.stem_bn(self.stem(x)))
        maps = {"stem": h}
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h)
            maps[f"stage{i + 1}"] = h
        maps["head_conv"] = _relu6(self.head_bn(self.head_conv(h)))
        return maps

    def layer_features(self, x: jax.Array) -> dict[str, jax.Array]:
        """Globally average-pooled ``feature_maps``: ``{name: (n, c)}``."""
        return {name: m.mean(axis=(1, 2)) for name, m in self.feature_maps(x).items()}

    def features(self, x: jax.Array) -> jax.Array:
        """The pooled 1280-wide penultimate features (n, 1280), the input of ``head``."""
        return self.layer_features(x)["head_conv"]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def torch_names(model: EfficientNetLite) -> dict[str, tuple[str, str]]:
    """Our dotted variable path -> (name in the lukemelas-style PyTorch state dict, kind of conversion)."""
    names: dict[str, tuple[str, str]] = {}

    def conv(ours, theirs):
        names[f"{ours}.kernel"] = (f"{theirs}.weight", "conv")

    def bn(ours, theirs):
        for a, b in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")):
            names[f"{ours}.{a}"] = (f"{theirs}.{b}", "copy")

    conv("stem", "_conv_stem")
    bn("stem_bn", "_bn0")
    k = 0
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            ours, theirs = f"stages.{i}.{j}", f"_blocks.{k}"
            if block.expand_conv is not None:
                conv(f"{ours}.expand_conv", f"{theirs}._expand_conv")
                bn(f"{ours}.expand_bn", f"{theirs}._bn0")
            conv(f"{ours}.depthwise", f"{theirs}._depthwise_conv")
            bn(f"{ours}.depthwise_bn", f"{theirs}._bn1")
            conv(f"{ours}.project", f"{theirs}._project_conv")
            bn(f"{ours}.project_bn", f"{theirs}._bn2")
            k += 1
    conv("head_conv", "_conv_head")
    bn("head_bn", "_bn1")
    names["head.kernel"] = ("_fc.weight", "linear")
    names["head.bias"] = ("_fc.bias", "copy")
    return names
