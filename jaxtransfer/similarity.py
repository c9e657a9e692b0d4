"""Feature similarity (CKA) and parameter distances, on arrays and pytrees (no Flax needed).

Linear CKA (Kornblith et al., ICML 2019) of features X (n, p) and Y (n, q), centred:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

and kernel CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with centred Gram matrices. Minibatch CKA (Nguyen, Raghu
and Kornblith, 2021) sums the unbiased HSIC estimator over equal-size batches; that estimator can be negative, so
the denominator is guarded (a known source of NaN elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import _checks
from jaxtransfer._pytree import as_arrays, check_same, is_float

__all__ = ["cka", "minibatch_cka", "param_distance"]

_HI = jax.lax.Precision.HIGHEST


def _pair(x, y):
    x = _checks.check_features(x, "x")
    y = _checks.check_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same samples: {x.shape[0]} vs {y.shape[0]} rows.")
    return x, y


def _centred_unit(x, name: str):
    x = x - jnp.mean(x, axis=0, keepdims=True)
    scale = jnp.max(jnp.abs(x))
    if not isinstance(scale, jax.core.Tracer) and not bool(scale > 0):
        raise ValueError(
            f"{name} is constant (every sample has the same representation): CKA is undefined (0/0); drop this "
            "representation or check how it was extracted."
        )
    return _checks.power_of_two_rescale(x)[0]


def _rbf_gram(x, fraction):
    sq = jnp.sum(jnp.square(x[:, None, :] - x[None, :, :]), axis=-1)
    n = x.shape[0]
    off = sq[~np.eye(n, dtype=bool)]
    sigma2 = jnp.square(fraction) * jnp.median(off)  # bandwidth: a fraction of the median pairwise distance
    return jnp.exp(-sq / (2 * jnp.maximum(sigma2, jnp.finfo(x.dtype).tiny)))


def _centre(k):
    return k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True) + jnp.mean(k)


def cka(x, y, *, kernel: str = "linear", sigma_fraction: float = 1.0) -> jax.Array:
    """Centred kernel alignment of two representations of the same n samples, in [0, 1].

    Args:
        x: (n, p), y: (n, q) features.
        kernel: ``"linear"`` (invariant to orthogonal maps and isotropic scaling, not to arbitrary invertible maps)
            or ``"rbf"`` with bandwidth sigma = ``sigma_fraction`` x the median pairwise distance.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.similarity import cka
        >>> x = np.random.default_rng(0).normal(size=(50, 8))
        >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))  # a rotation
        >>> round(float(cka(x, 3 * x @ q)), 6), round(float(cka(x, np.random.default_rng(2).normal(size=(50, 8)))), 2)
        (1.0, 0.16)
    """
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}.")
    x, y = _pair(x, y)
    # Both kernels are invariant to translation and isotropic scaling: centre, reject a constant representation
    # (CKA is 0/0 there), and rescale by a power of two so that no product can overflow or underflow.
    x, y = _centred_unit(x, "x"), _centred_unit(y, "y")
    if kernel == "linear":
        cross = jnp.sum(jnp.square(jnp.matmul(y.T, x, precision=_HI)))
        nx = jnp.linalg.norm(jnp.matmul(x.T, x, precision=_HI))
        ny = jnp.linalg.norm(jnp.matmul(y.T, y, precision=_HI))
        return cross / (nx * ny)
    if kernel == "rbf":
        if not sigma_fraction > 0:
            raise ValueError(f"sigma_fraction must be > 0; got {sigma_fraction!r}.")
        kx, ky = _centre(_rbf_gram(x, sigma_fraction)), _centre(_rbf_gram(y, sigma_fraction))
        return jnp.sum(kx * ky) / jnp.sqrt(jnp.sum(kx * kx) * jnp.sum(ky * ky))


def _unbiased_hsic(ka, kb):
    """Song et al. (2012): unbiased HSIC of two (n, n) Gram matrices, n >= 4."""
    n = ka.shape[0]
    off = 1 - jnp.eye(n, dtype=ka.dtype)
    ka, kb = ka * off, kb * off
    ra, rb = jnp.sum(ka, axis=1), jnp.sum(kb, axis=1)
    term = jnp.sum(ka * kb) + jnp.sum(ra) * jnp.sum(rb) / ((n - 1) * (n - 2)) - 2 * jnp.dot(ra, rb) / (n - 2)
    return term / (n * (n - 3))


@jax.jit
def _batch_hsic(x, y):
    kx = jnp.matmul(x, x.T, precision=_HI)
    ky = jnp.matmul(y, y.T, precision=_HI)
    return jnp.stack([_unbiased_hsic(kx, ky), _unbiased_hsic(kx, kx), _unbiased_hsic(ky, ky)])


def minibatch_cka(batches: Iterable) -> jax.Array:
    """Linear CKA accumulated over batches of (x_b (m, p), y_b (m, q)) pairs of equal size m >= 4.

    CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) sum_b HSIC_1(L_b, L_b)) with the unbiased HSIC_1,
    so it converges to the full-data linear CKA as batches accumulate, in O(m^2) memory.


    Example:
        >>> import numpy as np
        >>> from jaxtransfer.similarity import minibatch_cka
        >>> x = np.random.default_rng(0).normal(size=(200, 8))
        >>> round(float(minibatch_cka((x[i : i + 50], 2 * x[i : i + 50]) for i in range(0, 200, 50))), 6)
        1.0

    Raises:
        ValueError: a batch that is not a pair, batches of unequal size or under 4 samples, or a denominator term
            <= 0 (constant features, or an unbiased estimate that came out non-positive on few tiny batches).
    """
    acc, size = None, None
    for i, batch in enumerate(batches):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise ValueError(f"batches must yield pairs (x_b, y_b); batch {i} is a {type(batch).__name__}.")
        xb, yb = _pair(*batch)
        if size is None:
            size = xb.shape[0]
            if size < 4:
                raise ValueError(f"batches need at least 4 samples for the unbiased HSIC; got {size}.")
        elif xb.shape[0] != size:
            raise ValueError(f"batch {i} has {xb.shape[0]} samples; every batch must have {size}.")
        h = _batch_hsic(xb, yb)
        acc = h if acc is None else acc + h
    if acc is None:
        raise ValueError("minibatch_cka needs at least one batch.")
    for j, name in ((1, "x"), (2, "y")):
        if not isinstance(acc, jax.core.Tracer) and not bool(acc[j] > 0):
            raise ValueError(
                f"the unbiased HSIC of {name} with itself sums to {float(acc[j]):.3g} <= 0 over the batches: {name} is "
                "constant, or the batches are too few and small for the estimate; use more or larger batches."
            )
    tiny = jnp.finfo(acc.dtype).tiny
    return acc[0] / jnp.sqrt(jnp.maximum(acc[1], tiny) * jnp.maximum(acc[2], tiny))


def param_distance(theta_a, theta_b, *, per_leaf: bool = True) -> dict:
    """l2 distances between two parameter pytrees: ``{"total": ..., "relative": ||a - b|| / ||a||, "leaves": {...}}``.

    ``leaves`` maps each leaf's key path to its (l2, relative) pair when ``per_leaf``.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.similarity import param_distance
        >>> d = param_distance({'w': np.array([3.0, 0.0])}, {'w': np.array([0.0, 4.0])})
        >>> sorted(d)
        ['leaves', 'relative', 'total']
    """
    theta_a, theta_b = as_arrays(theta_a), as_arrays(theta_b)
    check_same(theta_a, theta_b, names=("theta_a", "theta_b"))
    total, norm_a, leaves = 0.0, 0.0, {}
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(theta_a), jax.tree.leaves(theta_b), strict=True):
        if not is_float(a):
            continue
        d = float(jnp.sum(jnp.square(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))
        na = float(jnp.sum(jnp.square(jnp.asarray(a, jnp.float32))))
        total, norm_a = total + d, norm_a + na
        if per_leaf:
            leaves[jax.tree_util.keystr(path)] = (np.sqrt(d), np.sqrt(d) / max(np.sqrt(na), 1e-30))
    out = {"total": float(np.sqrt(total)), "relative": float(np.sqrt(total) / max(np.sqrt(norm_a), 1e-30))}
    if per_leaf:
        out["leaves"] = leaves
    return out
