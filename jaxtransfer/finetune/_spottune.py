"""SpotTune (Guo et al., CVPR 2019): per-sample routing between a frozen and a fine-tuned copy of every block.

For each block b of a pre-trained network there are two copies, the frozen pre-trained block F_b and a copy T_b that
fine-tunes. A small policy network reads the input x and gives, per sample and per block, logits l_b(x) in R^2; the
block's output is

    h_{b+1} = I_b(x) F_b(h_b) + (1 - I_b(x)) T_b(h_b),    I_b(x) = [argmax_k (l_{b,k}(x) + g_k) = 0]

with Gumbel noise g during training. I_b is not differentiable; the straight-through Gumbel-softmax estimator uses the
one-hot decision in the forward pass and the gradient of the relaxed decision softmax((l + g) / tau) in the backward
pass (tau = 5, as published). At inference the decision is the argmax of the logits (no noise).

The compact *global* variant replaces the policy network by one learned pair of logits per block, shared by every
sample; a budget penalty (sum_b p_b - k)^2 on the probabilities p_b = softmax(l_b)_1 of fine-tuning block b pushes
the number of fine-tuned blocks towards k. Its decisions are fixed after training, so :func:`merge_spottune` folds it
into the plain architecture (each block the chosen copy): no extra inference cost.

The frozen copies hold :class:`FrozenParam` variables, not ``nnx.Param``: no strategy, ``"full"`` included, trains
them, and they stay in inference mode (BatchNorm on its pre-trained statistics) whatever ``train()`` says. Train a
SpotTune model with ``finetune(strategy="full")``: the tuned blocks, the rest of the network, the head and the policy
train together, the frozen copies not at all.
Where the paper is silent or specific to ResNets, we chose: the default policy is a two-conv network (the paper
uses a ResNet-8), the routed sites are every item of a model's ``blocks`` / ``stages.i`` / ``layers`` list, and
everything outside the frozen copies (stem, tuned blocks, head, policy) trains, as in the published full-network
fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._routing import collapse_routed, route_blocks, routing, unfreeze

__all__ = [
    "ConvPolicy",
    "GlobalPolicy",
    "SpotTune",
    "gumbel_softmax_st",
    "inject_spottune",
    "merge_spottune",
    "spottune_budget_penalty",
]


def gumbel_softmax_st(logits: jax.Array, key: jax.Array | None, temperature: float = 5.0) -> jax.Array:
    """Straight-through Gumbel-softmax over the last axis: forward one-hot, backward the relaxed softmax's gradient.

    With Gumbel noise g (none when ``key`` is None) and y = softmax((logits + g) / temperature), returns
    one_hot(argmax y) + (y - stop_gradient(y)): its value is exactly one-hot, its Jacobian that of y.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> gumbel_softmax_st(jnp.array([[2.0, -1.0], [0.0, 3.0]]), None)
        Array([[1., 0.],
               [0., 1.]], dtype=float32)
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    z = logits if key is None else logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax(z / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly one-hot: soft - soft is 0


class ConvPolicy(nnx.Module):
    """The per-sample policy: images (n, H, W, C) -> two stride-2 3 x 3 convs with ReLU -> mean -> (n, blocks, 2).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> ConvPolicy(3, num_blocks=4, rngs=nnx.Rngs(0))(jnp.ones((2, 16, 16, 3))).shape
        (2, 4, 2)
    """

    def __init__(self, in_channels: int, num_blocks: int, *, width: int = 16, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_channels, width, (3, 3), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, rngs=rngs)
        self.out = nnx.Linear(2 * width, 2 * num_blocks, rngs=rngs)
        self.num_blocks = num_blocks

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ConvPolicy reads images (n, H, W, C); got shape {x.shape}. Pass a policy= for others.")
        h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.out(jnp.mean(h, axis=(1, 2))).reshape(x.shape[0], self.num_blocks, 2)


class GlobalPolicy(nnx.Module):
    """The compact global policy: one learned pair of logits per block, the same for every sample.

    Example:
        >>> import jax.numpy as jnp
        >>> GlobalPolicy(3)(jnp.ones((5, 8))).shape
        (5, 3, 2)
    """

    def __init__(self, num_blocks: int):
        self.logits = nnx.Param(jnp.zeros((num_blocks, 2)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(self.logits[...][None], (x.shape[0], *self.logits.shape))


class SpotTune(nnx.Module):
    """A model whose routed blocks follow the decisions of ``policy`` (build it with :func:`inject_spottune`).

    ``model(x)`` and ``model.features(x)`` run the backbone with the gates of ``policy(x)``: straight-through
    Gumbel-softmax samples in train mode, the argmax in eval mode. ``decisions(x)`` (n, blocks) is 1 where a sample
    takes the fine-tuned copy.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_spottune
        >>> from jaxtransfer.models import CNN
        >>> model = inject_spottune(CNN(3, 8, 2, 5, rngs=nnx.Rngs(0)))
        >>> model.eval()
        >>> d = model.decisions(jnp.ones((4, 16, 16, 3)))
        >>> d.shape, bool(((d == 0) | (d == 1)).all())
        ((4, 2), True)
    """

    def __init__(self, model: nnx.Module, policy: nnx.Module, num_blocks: int, temperature: float, seed: int):
        self.model = model
        self.policy = policy
        self.num_blocks = num_blocks
        self.temperature = float(temperature)
        self.deterministic = False  # set by train() / eval()
        self.rngs = nnx.Rngs(gumbel=seed)

    def gates(self, x: jax.Array) -> jax.Array:
        logits = self.policy(x)
        if logits.shape != (x.shape[0], self.num_blocks, 2):
            raise ValueError(f"policy must return (n, {self.num_blocks}, 2) logits; got {logits.shape}.")
        key = None if self.deterministic else self.rngs.gumbel()
        if key is None:
            return jax.nn.one_hot(jnp.argmax(logits, axis=-1), 2, dtype=logits.dtype)
        return gumbel_softmax_st(logits, key, self.temperature)

    def decisions(self, x: jax.Array) -> jax.Array:
        """(n, blocks) int: 1 where the sample is routed through the fine-tuned copy (the argmax, no noise)."""
        return jnp.argmax(self.policy(x), axis=-1)

    def features(self, x: jax.Array) -> jax.Array:
        with routing(self.gates(x)):
            return self.model.features(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        with routing(self.gates(x)):
            return self.model(x)


def inject_spottune(
    model: nnx.Module,
    *,
    where: Callable | str | Sequence[str] | None = None,
    policy: nnx.Module | str = "per_sample",
    in_channels: int = 3,
    temperature: float = 5.0,
    seed: int = 0,
) -> SpotTune:
    """A :class:`SpotTune` model on a copy of ``model`` (unchanged): each selected block routed between its frozen
    pre-trained copy and a fine-tuned copy.

    Args:
        model: an NNX model whose blocks take and return arrays of one shape (residual CNN, EfficientNet-Lite,
            ViTs, MiniLM's layers).
        where: the blocks; default every item of the model's ``blocks``, ``stages.i`` or ``layers`` lists; or glob
            patterns / a predicate as for the other strategies.
        policy: ``"per_sample"`` (a :class:`ConvPolicy` on images with ``in_channels``), ``"global"`` (a
            :class:`GlobalPolicy`), or any module mapping the input to (n, blocks, 2) logits.
        temperature: of the Gumbel-softmax (5, as published).
        seed: the policy's initialisation and the Gumbel noise stream.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = inject_spottune(CNN(3, 8, 2, 5, rngs=nnx.Rngs(0)))
        >>> model.num_blocks, model(jnp.ones((4, 16, 16, 3))).shape
        (2, (4, 5))
    """
    model, n = route_blocks(model, where)
    if policy == "per_sample":
        policy = ConvPolicy(in_channels, n, rngs=nnx.Rngs(seed))
    elif policy == "global":
        policy = GlobalPolicy(n)
    elif not isinstance(policy, nnx.Module):
        raise ValueError(f"policy must be 'per_sample', 'global' or an nnx.Module; got {policy!r}.")
    return SpotTune(model, policy, n, temperature, seed)


def spottune_budget_penalty(model: SpotTune, k: float) -> jax.Array:
    """The global variant's budget: (sum_b p_b - k)^2 with p_b = softmax(logits_b)_1 the probability of fine-tuning
    block b. Pass ``weight * spottune_budget_penalty(model, k)`` as ``finetune(regularizer=)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = inject_spottune(CNN(3, 8, 4, 5, rngs=nnx.Rngs(0)), policy="global")
        >>> float(spottune_budget_penalty(model, k=1))  # zero logits: p_b = 1/2, (4 / 2 - 1)^2
        1.0
    """
    if not isinstance(model, SpotTune) or not isinstance(model.policy, GlobalPolicy):
        raise ValueError("the budget penalty needs a SpotTune model with policy='global'.")
    if not 0 <= k <= model.num_blocks:
        raise ValueError(f"k must lie in [0, {model.num_blocks}] (the routed blocks); got {k!r}.")
    p = jax.nn.softmax(model.policy.logits[...], axis=-1)[:, 1]
    return jnp.square(jnp.sum(p) - k)


def merge_spottune(model: SpotTune) -> nnx.Module:
    """The global variant folded into the plain architecture: each routed block replaced by the copy its learned
    logits choose (the frozen one with its variables ``nnx.Param`` again). Outputs equal the routed model's in eval
    mode; nothing is left of the policy.

    Raises:
        ValueError: a per-sample policy (its choice depends on the input and cannot be folded).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, inject_spottune
        >>> from jaxtransfer.models import CNN
        >>> merged = merge_spottune(inject_spottune(CNN(3, 8, 2, 10, rngs=nnx.Rngs(0)), policy="global"))
        >>> type(merged).__name__, count_params(merged) == count_params(CNN(3, 8, 2, 10, rngs=nnx.Rngs(0)))
        ('CNN', True)
    """
    if not isinstance(model, SpotTune):
        raise ValueError(f"merge_spottune takes a SpotTune model; got {type(model).__name__}.")
    if not isinstance(model.policy, GlobalPolicy):
        raise ValueError("only the global SpotTune policy can be merged; a per-sample policy depends on the input.")
    choice = [int(c) for c in jnp.argmax(model.policy.logits[...], axis=-1)]
    return collapse_routed(model.model, lambda block: block.tuned if choice[block.index] else unfreeze(block.frozen))
