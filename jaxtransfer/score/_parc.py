"""PARC: pairwise annotation representation comparison (Bolya, Mittapalli and Hoffman, NeurIPS 2021)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import rankdata

from jaxtransfer import _checks
from jaxtransfer.score._linalg import pca
from jaxtransfer.score._registry import register_score

__all__ = ["parc"]

_HI = jax.lax.Precision.HIGHEST


def _row_correlation(x):
    """(n, n) Pearson correlation between the rows of x."""
    c = x - jnp.mean(x, axis=1, keepdims=True)
    c = c / jnp.linalg.norm(c, axis=1, keepdims=True)
    return jnp.matmul(c, c.T, precision=_HI)


def _host_doubled_ranks(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    import scipy.stats  # here, not at import: scipy.stats is 0.5-1 s of `import jaxtransfer` (the CLI's start-up)

    return (2 * scipy.stats.rankdata(np.ascontiguousarray(bits).view(dtype).reshape(-1))).astype(np.int32)


def _average_ranks(d: jax.Array) -> jax.Array:
    """Ranks 1..M of d (M,), ties sharing their mean rank, in d's dtype. On the CPU through numpy's sort (scipy's
    rankdata; XLA's CPU sort of 5e5 floats took 0.19 s against numpy's 0.05 s here), elsewhere XLA's
    (``jax.scipy.stats``).

    The values cross to the host as their bits in uint32 and come back as twice the ranks in int32 (exact: average
    ranks are multiples of 1/2): JAX casts a callback's operands and results to the default dtypes of the thread
    that runs it, and under ``jax.enable_x64()`` (a thread-local switch) XLA's worker threads rounded float64
    dissimilarities to float32, breaking near-ties, and then rejected the float64 result.
    """
    if d.size >= 2**30:  # twice the ranks would overflow int32
        return rankdata(d).astype(d.dtype)
    shape = jax.ShapeDtypeStruct(d.shape, jnp.int32)
    host_rank = functools.partial(_host_doubled_ranks, dtype=np.dtype(d.dtype))

    def host(x):
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)  # (M,) or (M, 2) for float64
        return jax.pure_callback(host_rank, shape, bits, vmap_method="sequential")

    def device(x):
        return (2 * rankdata(x)).astype(jnp.int32)

    return jax.lax.platform_dependent(d, cpu=host, default=device).astype(d.dtype) / 2


def _unit(a):
    """a centred and scaled to unit norm; the scale is taken out first, so the squares cannot overflow."""
    a = a - jnp.mean(a)
    a = a / jnp.max(jnp.abs(a))
    return a / jnp.linalg.norm(a)


def _pearson(a, b):
    """Pearson correlation of two long vectors (n^2 / 2 ranks: their sums of squares overflow float32 as such)."""
    return jnp.sum(_unit(a) * _unit(b))


@functools.partial(jax.jit, static_argnames=("num_classes", "pca_dim"))
def _parc(f, labels, *, num_classes, pca_dim):
    n = f.shape[0]
    if pca_dim is not None and f.shape[1] > pca_dim:
        # Centred, the n rows span at most n - 1 directions: principal axes past that are zero in exact arithmetic
        # and rounding noise in practice, which standardising below would blow up to unit variance (and make the
        # score depend on the order of the rows). Keep at most n - 1 axes.
        f = pca(f, min(pca_dim, n - 1))
    std = jnp.std(f, axis=0, keepdims=True)
    # a column at rounding level of the largest (a direction the data does not span) carries no signal: zero it
    signal = std > 64 * jnp.finfo(f.dtype).eps * jnp.max(std)
    f = jnp.where(signal, (f - jnp.mean(f, axis=0, keepdims=True)) / jnp.where(signal, std, 1.0), 0.0)
    rows, cols = jnp.triu_indices(n, 1)
    feature_dissimilarity = (1 - _row_correlation(f))[rows, cols]
    # Rows of the one-hot label matrix correlate 1 within a class and -1/(C-1) across classes.
    same = labels[rows] == labels[cols]
    label_dissimilarity = jnp.where(same, 0.0, 1.0 + 1.0 / (num_classes - 1)).astype(f.dtype)
    # Dissimilarities that are 0 or 2 in exact arithmetic (correlations of +-1: duplicated rows, or every pair when
    # D = 2) come out of floating point a few ulps apart in an order set by the rows; ranked as distinct, they made
    # PARC move by 7 points under a row permutation. Snap them to their exact value, so that they tie (average
    # ranks, as scipy's spearmanr); other exact ties have probability zero.
    tol = 64 * jnp.finfo(f.dtype).eps * math.sqrt(f.shape[1])
    d = feature_dissimilarity
    d = jnp.where(jnp.abs(d) <= tol, 0.0, jnp.where(jnp.abs(d - 2) <= tol, 2.0, d)).astype(d.dtype)
    # Spearman = Pearson of the ranks. The label dissimilarity takes two values, so its average ranks are an
    # increasing affine function of it ((m0 + 1) / 2 for the m0 same-class pairs, m0 + (m1 + 1) / 2 for the
    # others), and Pearson is invariant to such maps: only the feature dissimilarities need ranking (one sort of
    # the n (n - 1) / 2 pairs instead of two).
    return 100 * _pearson(_average_ranks(d), label_dissimilarity)


@register_score(reference="Bolya, Mittapalli and Hoffman, NeurIPS 2021", units="100 x Spearman correlation")
def parc(features, labels, *, pca_dim: int | None = 32, num_classes: int | None = None) -> jax.Array:
    """PARC = 100 * Spearman(upper triangle of 1 - corr(F), upper triangle of 1 - corr(Y)).

    The features are projected on their top ``pca_dim`` principal axes (32, as published; None: as they are)
    and standardised per dimension; corr is the Pearson correlation between samples (rows), Y the one-hot
    labels. Ties get average ranks. Memory and time are O(n^2): subsample large data sets (the published
    code keeps 15,000 samples). A constant rank vector (all samples in one class, or identical rows) has no
    correlation: that raises ``ValueError`` from the input checks or ``FloatingPointError`` here.

    Args:
        features: (n, D); labels: (n,) class ids in [0, C); pca_dim: as above (>= 2); num_classes: C.

    Returns:
        Scalar in [-100, 100], higher = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.parc(features, labels)), 3)
        57.119
    """
    if pca_dim is not None and (not isinstance(pca_dim, int) or pca_dim < 2):
        raise ValueError(f"pca_dim must be an integer >= 2 or None; got {pca_dim!r}.")
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, rescale=True)
    if min(f.shape[1], pca_dim or f.shape[1]) < 2:
        raise ValueError(f"parc needs at least 2 feature dimensions to correlate samples; got {f.shape[1]}.")
    return _checks.finite_result(_parc(f, lab, num_classes=c, pca_dim=pca_dim), "parc")
