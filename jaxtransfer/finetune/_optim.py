"""The trainer's optimiser: built once per recipe (cached, so that a repeated run reuses the compiled step).

Built-in: Adam with a learning-rate schedule (constant or cosine, optional linear warm-up) and decoupled weight
decay (AdamW, Loshchilov and Hutter 2019) on the leaves the rules pick. Any optax transformation can replace it.
Per-parameter learning-rate multipliers scale the final update; gradient clipping comes first; gradient
accumulation (``optax.MultiSteps``) wraps the whole.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import optax

__all__ = ["BuiltinAdam", "build_optimizer", "learning_rate_schedule"]


def learning_rate_schedule(
    learning_rate: float, *, warmup_steps: int = 0, decay: str = "constant", total_steps: int | None = None
) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then constant or cosine decay to 0 at ``total_steps``.

    Example:
        >>> s = learning_rate_schedule(1e-3, warmup_steps=10, decay="cosine", total_steps=110)
        >>> [round(float(s(t)), 6) for t in (0, 5, 10, 60, 110)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """
    return _schedule(float(learning_rate), warmup_steps, decay, total_steps)


@functools.lru_cache(maxsize=64)  # one schedule object per recipe: the compiled step that holds it is reused
def _schedule(learning_rate: float, warmup_steps: int, decay: str, total_steps: int | None) -> optax.Schedule:
    if decay not in ("constant", "cosine"):
        raise ValueError(f"lr decay must be 'constant' or 'cosine'; got {decay!r}.")
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ValueError(f"warmup_steps must be an int >= 0; got {warmup_steps!r}.")
    if decay == "cosine":
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(
                f"cosine decay needs total_steps > warmup_steps={warmup_steps}; got {total_steps!r} (with a stream "
                "of batches, give steps_per_epoch)."
            )
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps, end_value=0.0)
    if warmup_steps == 0:
        return optax.constant_schedule(learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps), optax.constant_schedule(learning_rate)],
        [warmup_steps],
    )


@dataclasses.dataclass(frozen=True)
class BuiltinAdam:
    """The trainer's default optimiser: Adam at ``schedule`` (decoupled weight decay is added by the recipe)."""

    schedule: optax.Schedule


class _ScaleState(NamedTuple):
    pass


def _scale_leaves(multipliers) -> optax.GradientTransformation:
    """Multiplies each update leaf by the matching float of ``multipliers`` (a pytree of Python floats)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u if m == 1.0 else u * m, updates, multipliers), state

    return optax.GradientTransformation(lambda params: _ScaleState(), update)


@functools.lru_cache(maxsize=64)
def _cached(base, weight_decay, decay_mask, multipliers, clip, accumulate, treedef) -> optax.GradientTransformation:
    mask = jax.tree.unflatten(treedef, decay_mask) if decay_mask is not None else None
    mults = jax.tree.unflatten(treedef, multipliers) if multipliers is not None else None
    if isinstance(base, BuiltinAdam):
        schedule = base.schedule
        parts = [optax.scale_by_adam()]
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask))
        parts.append(optax.scale_by_learning_rate(schedule))
        tx = optax.chain(*parts)
    else:
        tx = base
    if mults is not None:
        tx = optax.chain(tx, _scale_leaves(mults))
    if clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
    return tx


def build_optimizer(
    base,
    params,
    *,
    weight_decay: float,
    decay_mask,
    multipliers,
    clip: float | None,
    accumulate: int,
) -> optax.GradientTransformation:
    """The whole transformation (cached by recipe: the same recipe returns the same object).

    Args:
        base: an optax transformation, or ``BuiltinAdam(schedule)`` for the built-in AdamW.
        params: the trained parameters (only their tree structure is used).
        weight_decay: decoupled decay (built-in optimiser only).
        decay_mask: pytree of bools like ``params`` (which leaves decay), or None.
        multipliers: pytree of floats like ``params`` (learning-rate multipliers), or None (all 1).
        clip: clip the gradients' global norm to this value first, or None.
        accumulate: average the gradients of this many steps per update (``optax.MultiSteps``).
    """
    leaves, treedef = jax.tree.flatten(params)
    flat_mask = tuple(bool(b) for b in jax.tree.leaves(decay_mask)) if decay_mask is not None else None
    flat_mults = tuple(float(m) for m in jax.tree.leaves(multipliers)) if multipliers is not None else None
    if flat_mults is not None and all(m == 1.0 for m in flat_mults):
        flat_mults = None
    for flat in (flat_mask, flat_mults):
        if flat is not None and len(flat) != len(leaves):
            raise ValueError("internal: a per-leaf setting does not match the parameters' structure.")
    return _cached(base, float(weight_decay), flat_mask, flat_mults, clip, int(accumulate), treedef)
