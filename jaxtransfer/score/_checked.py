"""A checked mode for jit and vmap: the input checks that plain ``jax.jit`` must skip, computed and raised."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from jaxtransfer._checks import staged_checks

__all__ = ["checked"]


def checked(fn: Callable, *, jit: bool = True, vmap_axes=None) -> Callable:
    """``fn`` with its value checks kept under tracing: NaN/Inf inputs, labels out of range, missing classes,
    probabilities that are not, and non-finite scores raise ``ValueError`` even inside ``jit`` and ``vmap``.

    Outside a trace every score checks its inputs anyway; under a plain ``jax.jit`` or ``jax.vmap`` the values are
    tracers and only shapes and dtypes can be checked. ``checked`` traces ``fn`` once per input shape, returns the
    outcome of every value check alongside the result (one boolean each, computed on device with the score), and
    raises the first failed check's message on the host before the result is handed back.

    (``jax.experimental.checkify`` was the first choice; it cannot transform LogME's search, a while-loop under
    ``vmap`` over the targets, so the checks are returned as outputs instead: the same guarantee, no transform.)

    Pass the un-jitted, un-vmapped function (a jitted inner function cannot hand its checks out); for a batch of
    inputs give ``vmap_axes`` (``jax.vmap``'s ``in_axes``): a check fails if it fails for any member.

    Args:
        fn: a function calling jaxtransfer scores.
        jit: compile the checked function.
        vmap_axes: if not ``None``, ``fn`` is mapped with ``jax.vmap(fn, in_axes=vmap_axes)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer import checked, logme
        >>> score = checked(lambda f, y: logme(f, y, num_classes=3), vmap_axes=0)
        >>> f = jnp.ones((2, 30, 4)).at[1, 0, 0].set(jnp.nan)
        >>> score(f, jnp.tile(jnp.arange(30) % 3, (2, 1)))  # doctest: +SKIP
        ValueError: features contains NaN or Inf value(s); remove or impute them first.
    """

    def traced(*args, **kwargs):
        with staged_checks() as staged:
            out = fn(*args, **kwargs)
        return out, dict(staged)

    run = traced if vmap_axes is None else jax.vmap(traced, in_axes=vmap_axes)
    if jit:
        run = jax.jit(run)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out, outcomes = run(*args, **kwargs)
        for message, ok in outcomes.items():
            if not bool(np.all(np.asarray(ok))):
                raise ValueError(f"{message} (checked under jit)")
        return out

    return wrapper
