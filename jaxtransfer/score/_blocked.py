"""LogME of in-memory features (n > D) from fixed-size row blocks: one compilation per (D, K), whatever n is.

Everything the optimised algorithm needs from F (n, D) and Y (n, K) is the centred moments (``_stats``). Here they
are accumulated over row blocks of ``BLOCK`` rows by one jit-compiled step, so no compiled shape depends on n:
the last block is padded to a bucket (a power of two of at least 128 rows, at most ``BLOCK``) and its padding rows
are masked to zero (full blocks skip the mask: at most two compiled steps per bucket), and n enters the final
evidence maximisation as a traced value. A caller scoring n = 9999, 10000 and 10001 samples therefore compiles
once.

Centring without a second pass: every row is shifted by c, the mean of up to ``BLOCK`` rows spread evenly over
the data (computed in float64 on the host), and the step accumulates the raw moments of the shifted rows,
S = sum_i (f_i - c) and G = sum_i (f_i - c)(f_i - c)^T (the upper triangle only, ``_gram``). With
m = S / n the mean of the shifted rows, C^T C = G - n m m^T and C^T Y = (F - 1 c^T)^T Y - m (1^T Y)^T exactly;
since c is close to the mean, m is small and the subtraction loses almost nothing, whereas raw F^T F of pooled
ReLU features (a large shared mean) loses their spread in float32. The target moments (sums, squared norms and
centred squared norms) come from the host in float64.

Features are divided by 2^e (max |F| / 2^e in [0.5, 1)) inside the step, exactly, as ``logme_evidence`` does for
the other paths; the caller maps the weights and alpha back.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.score._evidence import LogMEEvidence
from jaxtransfer.score._gram import symmetrize_upper, upper_gram
from jaxtransfer.score._logme_optimized import moments_evidence
from jaxtransfer.score._targets import Dense, OneHot

__all__: list[str] = []

BLOCK = 2048
_MIN_BUCKET = 128


class _Moments(NamedTuple):
    gram: jax.Array  # (D, D) upper triangle of sum (f - c)(f - c)^T
    total: jax.Array  # (D,) sum (f - c)
    cross: jax.Array  # (D, K) sum (f - c) y^T


def bucket(rows: int) -> int:
    """The padded height of a block of ``rows`` rows: the next power of two, at least 128, at most ``BLOCK``."""
    return min(BLOCK, max(_MIN_BUCKET, 1 << (rows - 1).bit_length()))


@functools.partial(jax.jit, static_argnames=("num_classes", "masked"), donate_argnums=(0,))
def _step(acc: _Moments, block, targets, valid, shift, exponent, *, num_classes, masked):
    x = jnp.ldexp(block.astype(shift.dtype), -exponent) - shift[None, :]
    if masked:  # only a padded block: the mask is a pass over the block (14 ms of 100 at 2048 x 2048 here)
        x = jnp.where((jnp.arange(x.shape[0], dtype=jnp.int32) < valid)[:, None], x, 0.0)  # padding contributes 0
    y = Dense(targets) if num_classes is None else OneHot(targets, num_classes)
    return _Moments(acc.gram + upper_gram(x), acc.total + jnp.sum(x, axis=0), acc.cross + y.project(x))


@functools.partial(jax.jit, static_argnames=("max_iter", "weights"))
def _evidence(acc: _Moments, shift, n, sums, yy, yc_sq, tol, *, max_iter, weights):
    m = acc.total / n
    gram_c = symmetrize_upper(acc.gram) - n * jnp.outer(m, m)
    cross_c = acc.cross - jnp.outer(m, sums)
    return moments_evidence(gram_c, shift + m, cross_c, sums, yy, yc_sq, n, tol=tol, max_iter=max_iter, weights=weights)


def _target_moments(y: np.ndarray, num_classes: int | None, n: int) -> tuple[np.ndarray, ...]:
    """(sums, squared norms, centred squared norms) of the K targets, in float64."""
    if num_classes is not None:
        counts = np.bincount(y, minlength=num_classes).astype(np.float64)
        return counts, counts, counts * (n - counts) / n
    sums = y.sum(axis=0)
    return sums, np.einsum("ik,ik->k", y, y), np.square(y - sums / n).sum(axis=0)


def _padded(a: np.ndarray, rows: int, dtype) -> np.ndarray:
    out = np.zeros((rows, *a.shape[1:]), dtype)
    out[: a.shape[0]] = a
    return out


def blocked_evidence(
    features: np.ndarray,
    dtype,
    exponent: int,
    targets: np.ndarray,
    num_classes: int | None,
    *,
    tol: float,
    max_iter: int,
    weights: bool = True,
) -> LogMEEvidence:
    """Per-target maximised evidence of F / 2^e from row blocks (checked host input with n > D).

    Args:
        features: (n, D) numpy array (any real dtype; converted to ``dtype`` block by block).
        dtype: the compute dtype (float32, or float64 under x64).
        exponent: e, with max |F| / 2^e in [0.5, 1).
        targets: (n,) int32 class ids in [0, num_classes) or, with ``num_classes=None``, (n, K) float64 targets.
        weights: also compute the posterior mean weights (D K work after the maximisation; ``logme`` skips it).

    Returns:
        The :class:`LogMEEvidence` of the scaled features F / 2^e.
    """
    n, d = features.shape
    k = num_classes if num_classes is not None else targets.shape[1]
    ydtype = np.int32 if num_classes is not None else dtype
    scale = np.ldexp(1.0, -exponent)
    sample = features[:: max(1, n // BLOCK)][:BLOCK]
    shift = jnp.asarray(np.mean(sample, axis=0, dtype=np.float64) * scale, dtype)
    e = jnp.asarray(exponent, jnp.int32)
    acc = _Moments(jnp.zeros((d, d), dtype), jnp.zeros((d,), dtype), jnp.zeros((d, k), dtype))
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        rows = stop - start
        height = bucket(rows)
        block, y = features[start:stop], targets[start:stop]
        if rows < height or block.dtype != dtype:
            block, y = _padded(block, height, dtype), _padded(y, height, ydtype)
        elif y.dtype != ydtype:
            y = y.astype(ydtype)
        acc = _step(acc, block, y, np.int32(rows), shift, e, num_classes=num_classes, masked=rows < height)
    moments = (jnp.asarray(x, dtype) for x in _target_moments(targets, num_classes, n))
    return _evidence(
        acc, shift, jnp.asarray(n, dtype), *moments, jnp.asarray(tol, dtype), max_iter=max_iter, weights=weights
    )
