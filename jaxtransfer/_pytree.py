"""Checks and conversions shared by the pytree tools (soups, landscape, similarity, criticality).

No Flax: these work on any pytree of arrays (NNX states, Linen params, Equinox arrays, raw dicts).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["accumulation_dtype", "as_arrays", "check_finite", "check_same", "is_float", "lerp"]


@functools.lru_cache(maxsize=64)
def _floating(dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


def is_float(x) -> bool:
    """Whether a leaf is a floating-point array (the leaves that are averaged, interpolated or perturbed)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and _floating(dtype)


def accumulation_dtype(dtype):
    """float64 for float64 leaves, float32 otherwise (bf16 and float16 are averaged and merged in float32)."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def lerp(theta_a, theta_b, lam):
    """(1 - lam) theta_a + lam theta_b on the float leaves (in theta_a's dtypes; other leaves from theta_a).

    Written as (1 - lam) a + lam b, not a + lam (b - a): both endpoints are then exact in floating point. ``lam`` may
    be traced. The pytrees are not checked here (callers run :func:`check_same`).
    """
    return jax.tree.map(lambda a, b: ((1 - lam) * a + lam * b).astype(a.dtype) if is_float(a) else a, theta_a, theta_b)


def as_arrays(tree):
    """``tree`` with Python and NumPy float scalars as arrays, so they are averaged like any float leaf.

    A Python ``float`` becomes a JAX array of the default float dtype (float32, float64 under x64); ``int`` and
    ``bool`` leaves stay as they are (counters, flags: taken from the first ingredient). Nothing is copied otherwise.
    """

    def scalar(x) -> bool:
        return isinstance(x, float | np.floating)

    if not any(scalar(x) for x in jax.tree.leaves(tree)):
        return tree  # the common case: nothing to convert, no copy of the tree
    return jax.tree.map(lambda x: jnp.asarray(x) if scalar(x) else x, tree)


def _name(path) -> str:
    return jax.tree_util.keystr(path) or "(the root leaf)"


def check_finite(tree, what: str) -> None:
    """Raises ``ValueError`` naming the first floating-point leaf of ``tree`` holding NaN or Inf (concrete only)."""
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if not is_float(x):
            continue
        ok = jnp.isfinite(x).all()  # a tracer under jit (also when wrapped, e.g. in an NNX Variable): not checked
        if not isinstance(ok, jax.core.Tracer) and not bool(ok):
            raise ValueError(f"{what}, leaf {_name(path)} contains NaN or Inf.")


def check_same(reference, other, index: int = 1, *, names: tuple[str, str] | None = None, finite: bool = True) -> None:
    """Raises naming the first leaf where ``other`` differs from ``reference`` in structure, shape or dtype, or (with
    ``finite``) where either holds NaN/Inf. In the messages they are ``names`` (default "ingredient 0" and
    "ingredient {index}"). ``finite=False`` leaves the value check to the caller (e.g. fused into a compiled pass).

    Shapes must match exactly: two leaves that would broadcast against each other are still a mismatch.
    """
    ref_name, other_name = names or ("ingredient 0", f"ingredient {index}")
    ref_flat, ref_def = jax.tree.flatten(reference)
    other_flat, other_def = jax.tree.flatten(other)
    if ref_def == other_def and all(
        np.shape(a) == np.shape(b) and getattr(a, "dtype", None) == getattr(b, "dtype", None)
        for a, b in zip(ref_flat, other_flat, strict=True)
    ):
        if finite:  # the fast path: same layout, only the values remain to be checked
            check_finite(reference, ref_name)
            if other is not reference:
                check_finite(other, other_name)
        return
    ref_leaves = jax.tree_util.tree_leaves_with_path(reference)
    try:
        other_leaves = jax.tree.leaves(jax.tree.map(lambda _, y: y, reference, other))
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{other_name} has a different tree structure from {ref_name}: {jax.tree.structure(other)} "
            f"vs {jax.tree.structure(reference)}."
        ) from err
    for (path, a), b in zip(ref_leaves, other_leaves, strict=True):
        name = _name(path)
        if np.shape(a) != np.shape(b):
            raise ValueError(f"{other_name}, leaf {name}: shape {np.shape(b)} differs from {np.shape(a)}.")
        if getattr(a, "dtype", None) != getattr(b, "dtype", None):
            raise ValueError(
                f"{other_name}, leaf {name}: dtype {getattr(b, 'dtype', type(b).__name__)} differs from "
                f"{getattr(a, 'dtype', type(a).__name__)}."
            )
    if not finite:
        return
    check_finite(reference, ref_name)
    if other is not reference:
        check_finite(other, other_name)
