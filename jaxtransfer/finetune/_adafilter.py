"""AdaFilter (Guo et al., AAAI 2020): per-sample, per-filter choice between pre-trained and fine-tuned filters, made
by a recurrent gate network, with gated batch normalisation.

Every gated layer l (a convolution with the normalisation that follows it) exists twice: the frozen pre-trained
filters F^p_l with their own normalisation N^p_l, and a fine-tuned copy F^f_l, N^f_l. For the input x_{l-1} of
the layer the gate network gives one binary gate per output filter and sample,

    z_l = mean_hw x_{l-1},   (c_l, h_l) = LSTM((c_{l-1}, h_{l-1}), P_l z_l),   G_l = step(sigmoid(Q_l h_l))

    x_l = G_l * N^f_l(F^f_l(x_{l-1})) + (1 - G_l) * N^p_l(F^p_l(x_{l-1}))

one LSTM cell is shared by all layers (its state carries the decisions along the depth of the network); P_l and Q_l
are per-layer linear maps to and from its width. *Gated batch normalisation*: the pre-trained and the fine-tuned
outputs keep separate normalisations, because their statistics differ, and are mixed after it. The step function
is trained with the straight-through estimator (forward: 1[sigmoid(s) > 1/2]; backward: the sigmoid's gradient).

No official code was published; where we had to choose: the gated layers are the conv + normalisation pairs inside
each block (``conv1``/``norm1``, ``conv2``/``norm2`` of the residual CNN; ``expand``/``depthwise``/``project`` with
their BatchNorms in EfficientNet-Lite; ``a``/``b``/``c`` in the ResNet bottleneck), layers outside the blocks (stem,
head) fine-tune normally, the LSTM is 32 wide, and the frozen copies stay in inference mode.
"""

from __future__ import annotations

import contextvars

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer.finetune._routing import freeze, is_block
from jaxtransfer.finetune._surgery import replace_module, select_modules

__all__ = ["AdaFilter", "GatedLayer", "inject_adafilter", "straight_through_step"]

_STATE: contextvars.ContextVar = contextvars.ContextVar("adafilter_state", default=None)
_PAIRS = (
    ("conv1", "norm1"),
    ("conv2", "norm2"),
    ("expand_conv", "expand_bn"),
    ("depthwise", "depthwise_bn"),
    ("project", "project_bn"),
    ("a.conv", "a.affine"),
    ("b.conv", "b.affine"),
    ("c.conv", "c.affine"),
)


def straight_through_step(logits: jax.Array) -> jax.Array:
    """1[sigmoid(logits) > 1/2] in the forward pass, the gradient of sigmoid(logits) in the backward pass.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> straight_through_step(jnp.array([-1.0, 2.0]))
        Array([0., 1.], dtype=float32)
        >>> print(jax.grad(lambda z: straight_through_step(z).sum())(jnp.array([0.0])))  # sigmoid'(0)
        [0.25]
    """
    soft = jax.nn.sigmoid(logits)
    return (soft > 0.5).astype(soft.dtype) + (soft - jax.lax.stop_gradient(soft))


class _Identity(nnx.Module):
    def __call__(self, x):
        return x


class GatedLayer(nnx.Module):
    """A conv + normalisation pair and its frozen pre-trained twin, mixed per filter by the AdaFilter gate.

    Example (built by :func:`inject_adafilter`, one per conv + normalisation pair of the blocks):
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_adafilter
        >>> from jaxtransfer.models import CNN
        >>> model = inject_adafilter(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> [(type(m).__name__, m.index) for p, m in nnx.iter_modules(model) if isinstance(m, GatedLayer)][:2]
        [('GatedLayer', 0), ('GatedLayer', 1)]
    """

    def __init__(self, conv: nnx.Module, norm: nnx.Module, index: int):
        self.tuned_conv, self.tuned_norm = conv, norm
        self.frozen_conv, self.frozen_norm = freeze(conv), freeze(norm)
        self.index = index

    def __call__(self, x: jax.Array) -> jax.Array:
        state = _STATE.get()
        if state is None:
            raise RuntimeError("a GatedLayer runs only inside AdaFilter.__call__ (which runs the gate network).")
        self.frozen_conv.eval()
        self.frozen_norm.eval()
        g = state.gate(self.index, x)  # (n, C_out)
        a = self.frozen_norm(self.frozen_conv(x))
        b = self.tuned_norm(self.tuned_conv(x))
        g = g.astype(b.dtype).reshape((g.shape[0],) + (1,) * (b.ndim - 2) + (g.shape[1],))
        return g * b + (1 - g) * a


def _numpy_init(seed: int):
    """LeCun-normal kernels drawn with numpy: a network has a linear map of a new shape per gated layer, and JAX's
    initialisers compile once per shape (~0.2 s each on this CPU)."""
    rng = np.random.default_rng(seed)
    return lambda key, shape, dtype=jnp.float32: jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), dtype)


class _GateNet(nnx.Module):
    def __init__(self, in_channels, out_channels, width: int, seed: int):
        init, rngs = _numpy_init(seed), nnx.Rngs(seed)
        self.inputs = nnx.List([nnx.Linear(c, width, kernel_init=init, rngs=rngs) for c in in_channels])
        self.cell = nnx.LSTMCell(width, width, rngs=rngs)
        self.outputs = nnx.List([nnx.Linear(width, c, kernel_init=init, rngs=rngs) for c in out_channels])
        self.width = width


class _Forward:
    """The gate network's state during one forward pass (the LSTM carry, the gates so far)."""

    def __init__(self, net: _GateNet, n: int, dtype):
        self.net = net
        self.carry = (jnp.zeros((n, net.width), dtype), jnp.zeros((n, net.width), dtype))
        self.gates: dict[int, jax.Array] = {}

    def gate(self, index: int, x: jax.Array) -> jax.Array:
        z = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))
        self.carry, h = self.net.cell(self.carry, self.net.inputs[index](z))
        g = straight_through_step(self.net.outputs[index](h))
        self.gates[index] = g
        return g


class AdaFilter(nnx.Module):
    """A model whose gated layers follow the recurrent gate network (build it with :func:`inject_adafilter`).

    Train it with ``finetune(strategy="full")``: the fine-tuned filters, the rest of the network and the gate
    network train; the frozen filters (:class:`FrozenParam`) do not. ``gates(x)`` returns the per-layer (n, C)
    decisions (1 = fine-tuned filter).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_adafilter
        >>> from jaxtransfer.models import CNN
        >>> model = inject_adafilter(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> {layer: g.shape for layer, g in model.gates(jnp.ones((2, 8, 8, 3))).items()}
        {0: (2, 8), 1: (2, 8), 2: (2, 8), 3: (2, 8)}
    """

    def __init__(self, model: nnx.Module, gate_net: _GateNet, num_layers: int):
        self.model = model
        self.gate_net = gate_net
        self.num_layers = num_layers

    def _run(self, fn, x):
        state = _Forward(self.gate_net, x.shape[0], jnp.float32)
        token = _STATE.set(state)
        try:
            return fn(x), state.gates
        finally:
            _STATE.reset(token)

    def gates(self, x: jax.Array) -> dict[int, jax.Array]:
        return self._run(self.model, x)[1]

    def features(self, x: jax.Array) -> jax.Array:
        return self._run(self.model.features, x)[0]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._run(self.model, x)[0]


def _get(module, dotted: str):
    for k in dotted.split("."):
        module = getattr(module, k, None)
        if module is None:
            return None
    return module


def inject_adafilter(model: nnx.Module, *, width: int = 32, seed: int = 0) -> AdaFilter:
    """An :class:`AdaFilter` model on a copy of ``model`` (unchanged): every conv + normalisation pair inside its
    blocks gated per filter between a frozen pre-trained twin and a fine-tuned copy.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = inject_adafilter(CNN(3, 8, 2, 5, norm="batch", rngs=nnx.Rngs(0)))
        >>> model.num_layers, model(jnp.ones((2, 8, 8, 3))).shape
        (4, (2, 5))
    """
    model = nnx.clone(model)
    layers = []
    for path, block in select_modules(model, None, (nnx.Module,), is_block):
        for conv_name, norm_name in _PAIRS:
            conv, norm = _get(block, conv_name), _get(block, norm_name)
            if conv is None or norm is None or isinstance(norm, nnx.LayerNorm):
                continue
            layers.append((path, conv_name, norm_name, conv, norm))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv + normalisation pair inside blocks to gate.")
    in_channels, out_channels = [], []
    for i, (path, conv_name, norm_name, conv, norm) in enumerate(layers):
        out_channels.append(conv.kernel.shape[-1])
        in_channels.append(getattr(conv, "in_features", None) or conv.kernel.shape[-1])  # depthwise: in = out
        prefix = (*path, *conv_name.split(".")[:-1])
        replace_module(model, (*prefix, conv_name.split(".")[-1]), GatedLayer(conv, norm, i))
        replace_module(model, (*path, *norm_name.split(".")), _Identity())
    gate_net = _GateNet(in_channels, out_channels, width, seed)
    return AdaFilter(model, gate_net, len(layers))
