"""Blocks with a frozen pre-trained twin, routed per call: the machinery SpotTune and the hybrid teacher-student
forward share.

:func:`route_blocks` replaces each selected block of a model by a :class:`RoutedBlock` that holds the block (which
fine-tunes) and a frozen copy of its pre-trained weights (:class:`FrozenParam`, not ``nnx.Param``, so no strategy
trains it). Inside ``with routing(gates):`` every routed block follows ``gates``:

- an array (n, blocks, 2): the output is g_0 * frozen(h) + g_1 * tuned(h) per sample (SpotTune's relaxed or one-hot
  decisions; both copies run);
- a tuple of 0/1, one per block: only the chosen copy runs (1 = the fine-tuned one), the same for every sample.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

from flax import nnx

from jaxtransfer.finetune._surgery import replace_module, require_sites

__all__ = ["FrozenParam", "RoutedBlock", "collapse_routed", "freeze", "is_block", "route_blocks", "routing", "unfreeze"]

_GATES: contextvars.ContextVar = contextvars.ContextVar("routing_gates", default=None)
_LISTS = ("blocks", "layers", "stages")


class FrozenParam(nnx.Variable):
    """A pre-trained weight that never trains (not an ``nnx.Param``): the frozen twins of routed blocks.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params, route_blocks
        >>> from jaxtransfer.models import MLP
        >>> routed, _ = route_blocks(MLP(4, [8], 3, rngs=nnx.Rngs(0)))
        >>> count_params(routed, FrozenParam), count_params(routed, nnx.Param)  # the twin of 4 x 8 + 8; all else
        (40, 67)
    """


def _retype(module: nnx.Module, old: type, new: type) -> nnx.Module:
    """A copy of ``module`` whose variables of type ``old`` are of type ``new`` (same values)."""
    copy = nnx.clone(module)
    for path, node in list(nnx.iter_graph(copy)):
        if path and isinstance(node, nnx.Variable) and isinstance(node, old):
            replace_module(copy, path, new(node.get_value()))
    return copy


def freeze(module: nnx.Module) -> nnx.Module:
    """A frozen twin: a copy of ``module`` in inference mode with its ``nnx.Param`` variables :class:`FrozenParam`."""
    twin = _retype(module, nnx.Param, FrozenParam)
    twin.eval()
    return twin


def unfreeze(module: nnx.Module) -> nnx.Module:
    """A copy of a frozen twin with its :class:`FrozenParam` variables ``nnx.Param`` again."""
    return _retype(module, FrozenParam, nnx.Param)


@contextlib.contextmanager
def routing(gates) -> Iterator[None]:
    """Routes every :class:`RoutedBlock` called inside by ``gates``.

    A tuple of 0/1 (one per block; 1 = the fine-tuned block, 0 = its frozen pre-trained twin) picks one path for
    the whole batch; an (n, blocks, 2) array mixes them per sample, h = g[:, i, 0] frozen(h) + g[:, i, 1] tuned(h)
    (SpotTune's Gumbel-softmax gates, one-hot at inference).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import route_blocks
        >>> from jaxtransfer.models import MLP
        >>> routed, n = route_blocks(MLP(4, [8, 8], 3, rngs=nnx.Rngs(0)))
        >>> x = jnp.ones((2, 4))
        >>> with routing((1,) * n):
        ...     hard = routed(x)
        >>> with routing(jnp.tile(jnp.array([0.0, 1.0]), (2, n, 1))):  # the same choice, per sample
        ...     soft = routed(x)
        >>> n, bool(jnp.allclose(hard, soft))
        (2, True)
    """
    token = _GATES.set(gates)
    try:
        yield
    finally:
        _GATES.reset(token)


class RoutedBlock(nnx.Module):
    """A block (``tuned``) and its frozen pre-trained twin (``frozen``), routed by the enclosing :func:`routing`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = RoutedBlock(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), index=0)
        >>> block.tuned.kernel[...] = jnp.zeros((3, 3))  # as if fine-tuned
        >>> x = jnp.ones((1, 3))
        >>> with routing((0,)):
        ...     frozen = block(x)
        >>> with routing((1,)):
        ...     tuned = block(x)
        >>> bool(jnp.all(tuned == 0)), bool(jnp.any(frozen != 0))
        (True, True)
    """

    def __init__(self, block: nnx.Module, index: int):
        self.frozen = freeze(block)
        self.tuned = block
        self.index = index

    def __call__(self, h, *args, **kwargs):
        gates = _GATES.get()
        if gates is None:
            raise RuntimeError(
                "a RoutedBlock runs only inside a routed forward pass (SpotTune, HybridTeacherStudent), which sets "
                "the gates."
            )
        self.frozen.eval()  # the frozen twin is always in inference mode, whatever model.train() set
        if isinstance(gates, tuple):
            return (self.tuned if gates[self.index] else self.frozen)(h, *args, **kwargs)
        a = self.frozen(h, *args, **kwargs)
        b = self.tuned(h, *args, **kwargs)
        g = gates[:, self.index].astype(b.dtype)  # (n, 2): (frozen, tuned)
        shape = (g.shape[0],) + (1,) * (b.ndim - 1)
        return g[:, 0].reshape(shape) * a + g[:, 1].reshape(shape) * b


def is_block(path: tuple, module: nnx.Module) -> bool:
    """The default sites: every item of a model's ``blocks`` / ``layers`` list or of a ``stages.i`` list."""
    if not path or not isinstance(path[-1], int) or path[0] not in _LISTS:
        return False
    return len(path) == (3 if path[0] == "stages" else 2)


def route_blocks(model: nnx.Module, where: Callable | str | Sequence[str] | None = None) -> tuple[nnx.Module, int]:
    """A copy of ``model`` (unchanged) with every selected block a :class:`RoutedBlock`, and the number of them.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> routed, n = route_blocks(CNN(3, 8, 2, 5, rngs=nnx.Rngs(0)))
        >>> with routing((0, 1)):  # the pre-trained first block, the fine-tuned second one
        ...     routed(jnp.ones((1, 8, 8, 3))).shape
        (1, 5)
    """
    model = nnx.clone(model)
    sites = require_sites(model, where, (nnx.Module,), is_block, "block")
    if any(isinstance(m, RoutedBlock) for _, m in sites):
        raise ValueError("the model's blocks are already routed.")
    for i, (path, block) in enumerate(sites):
        replace_module(model, path, RoutedBlock(block, i))
    return model, len(sites)


def collapse_routed(model: nnx.Module, choose: Callable[[RoutedBlock], nnx.Module]) -> nnx.Module:
    """A copy of ``model`` with every :class:`RoutedBlock` replaced by ``choose(block)``, in eval mode."""
    out = nnx.clone(model)
    for path, block in [(p, m) for p, m in nnx.iter_modules(out) if isinstance(m, RoutedBlock)]:
        replace_module(out, path, choose(block))
    out.eval()
    return out
