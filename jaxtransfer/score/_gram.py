"""Half of a Gram matrix: the upper triangle of X^T X by column panels, about (P + 1) / (2 P) of the flops.

X^T X is symmetric, so a full matrix product computes every off-diagonal entry twice. Splitting the D columns of
X (m, D) into P panels X_1 .. X_P with offsets o_1 < ... < o_P, the upper block row p is X_p^T X[:, o_p:], one
matrix product of (w_p, m) x (m, D - o_p); the P products cost m D^2 (P + 1) / (2 P) multiply-adds instead of
m D^2 (0.625 of them for P = 4), and each stays a large matrix product, which BLAS runs at full speed. Below the
diagonal blocks nothing is computed (zeros); :func:`symmetrize_upper` mirrors the upper triangle, or an
eigensolver that reads the upper triangle only takes the result as it is.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

__all__: list[str] = []

_HI = jax.lax.Precision.HIGHEST


def num_panels(d: int) -> int:
    """The panel count for D columns: 1 (a plain product) below 1024, else 4 (panels of at least 256 columns).

    On 2 CPU cores 4 panels took 0.86x the time of the full product at (n, D) = (10000, 1024), 0.82x at
    (10000, 2048) and 0.79x at (50000, 2048) (``bench/logme_speed.py``, 2026-12-03).
    """
    return 1 if d < 1024 else 4


def upper_gram(x: jax.Array, panels: int | None = None) -> jax.Array:
    """The upper triangle (diagonal included) of X^T X, zeros below it.

    Args:
        x: (m, D).
        panels: P, the number of column panels (default :func:`num_panels`); 1 computes the full product.

    Returns:
        (D, D) with entry (i, j) = sum_r x_ri x_rj for i <= j; below the diagonal, the entries of the diagonal
        blocks are computed too and those below them are 0 (the full X^T X when P = 1).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(12.0).reshape(3, 4)
        >>> g = upper_gram(x, panels=2)
        >>> bool(jnp.allclose(symmetrize_upper(g), x.T @ x)), float(g[3, 0])  # (3, 0) is below the blocks
        (True, 0.0)
    """
    d = x.shape[1]
    p = num_panels(d) if panels is None else panels
    if p <= 1:
        return jnp.matmul(x.T, x, precision=_HI)
    edges = [round(i * d / p) for i in range(p + 1)]
    rows = []
    for lo, hi in itertools.pairwise(edges):
        block = jnp.matmul(x[:, lo:hi].T, x[:, lo:], precision=_HI)  # (w_p, D - o_p)
        rows.append(jnp.pad(block, ((0, 0), (lo, 0))))
    return jnp.concatenate(rows, axis=0)


def symmetrize_upper(g: jax.Array) -> jax.Array:
    """The symmetric matrix whose upper triangle (diagonal included) is that of ``g`` (D, D)."""
    upper = jnp.triu(g)
    return upper + jnp.triu(g, 1).T
