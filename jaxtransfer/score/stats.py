"""LogME from sufficient statistics: data larger than memory, and data spread over devices.

The optimised (primal) LogME touches the data only through

    G = F^T F (D, D),   C = F^T Y (D, K),   q_k = y_k^T y_k (K,),   n,

and each is a sum over samples. So the statistics of disjoint chunks add up to those of their union, and the score
computed from the sum is the score of the concatenated data (no published implementation offers this). For class
labels C holds the per-class feature sums and q the class counts: no one-hot matrix is ever formed.

Float32 accumulation: each chunk's Gram matrix is formed with ``precision=HIGHEST`` and summed in the working
dtype; measured against float64 in ``bench/logme_speed.py``. Each chunk's features are divided by a power of two
2^e first (exact), and the statistics carry e: merging brings both to the larger e (again exactly, by powers of
two), so no Gram matrix overflows or underflows at any finite feature scale, and the score, invariant to the
scale, is the same as for unscaled data.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.score import _checks
from jaxtransfer.score._evidence import LogMEEvidence, check_result
from jaxtransfer.score._logme_optimized import primal_evidence
from jaxtransfer.score._targets import Dense, OneHot

__all__ = [
    "LogMEStats",
    "logme_evidence_from_stats",
    "logme_from_stats",
    "logme_stats",
    "logme_streaming",
    "merge_stats",
]

_HI = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LogMEStats:
    """Sufficient statistics of LogME (a pytree; ``+`` merges, and merging is associative and commutative).

    Attributes:
        gram: (D, D) F^T F (of the rescaled F / 2^e, see ``log2_scale``).
        cross: (D, K) F^T Y; for class labels, column k is the sum of the features of class k.
        sq_norms: (K,) y_k^T y_k; for class labels, the class counts.
        count: () number of samples n.
        log2_scale: () integer e: the statistics are those of F / 2^e (0: of F itself).
    """

    gram: jax.Array
    cross: jax.Array
    sq_norms: jax.Array
    count: jax.Array
    log2_scale: jax.Array = dataclasses.field(default_factory=lambda: jnp.zeros((), jnp.int32))

    def __add__(self, other: LogMEStats) -> LogMEStats:
        return merge_stats(self, other)

    @property
    def num_features(self) -> int:
        return self.gram.shape[0]

    @property
    def num_targets(self) -> int:
        return self.cross.shape[1]


def merge_stats(a: LogMEStats, b: LogMEStats) -> LogMEStats:
    """The statistics of the union of two disjoint sets of samples: the element-wise sum.

    Raises:
        ValueError: if the two have different feature widths D or numbers of targets K.
    """
    if not (isinstance(a, LogMEStats) and isinstance(b, LogMEStats)):
        raise TypeError(f"can only merge LogMEStats with LogMEStats; got {type(a).__name__}, {type(b).__name__}.")
    if a.cross.shape != b.cross.shape:
        raise ValueError(
            f"cannot merge statistics of (D, K) = {a.cross.shape} and {b.cross.shape}: every chunk needs the same "
            "feature width and the same number of targets (pass num_classes= so that chunks missing a class agree)."
        )
    return _merge(a, b)


@jax.jit
def _merge(a: LogMEStats, b: LogMEStats) -> LogMEStats:
    e = jnp.maximum(a.log2_scale, b.log2_scale)  # bring both to the larger scale: exact powers of two
    da, db = a.log2_scale - e, b.log2_scale - e
    return LogMEStats(
        gram=jnp.ldexp(a.gram, 2 * da) + jnp.ldexp(b.gram, 2 * db),
        cross=jnp.ldexp(a.cross, da) + jnp.ldexp(b.cross, db),
        sq_norms=a.sq_norms + b.sq_norms,
        count=a.count + b.count,
        log2_scale=e,
    )


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _classification_stats(features, labels, *, num_classes):
    targets = OneHot(labels, num_classes)
    e = _checks.power_of_two_exponent(features)
    features = jnp.ldexp(features, -e)
    return LogMEStats(
        gram=jnp.matmul(features.T, features, precision=_HI),
        cross=targets.project(features),
        sq_norms=targets.sq_norms(features.dtype),
        count=jnp.asarray(features.shape[0], features.dtype),
        log2_scale=e.astype(jnp.int32),
    )


@jax.jit
def _regression_stats(features, targets):
    t = Dense(targets.astype(features.dtype))
    e = _checks.power_of_two_exponent(features)
    features = jnp.ldexp(features, -e)
    return LogMEStats(
        gram=jnp.matmul(features.T, features, precision=_HI),
        cross=t.project(features),
        sq_norms=t.sq_norms(features.dtype),
        count=jnp.asarray(features.shape[0], features.dtype),
        log2_scale=e.astype(jnp.int32),
    )


def logme_stats(features, labels, *, regression: bool = False, num_classes: int | None = None) -> LogMEStats:
    """Sufficient statistics of one chunk of data.

    Args:
        features: (n, D) features of the chunk (n >= 1).
        labels: (n,) integer class ids, or with ``regression=True`` (n,) / (n, K) real targets.
        regression: treat ``labels`` as real-valued targets.
        num_classes: C; give it whenever the chunks are merged, so that a chunk missing a class still has
            K = C columns. Without it C = max(labels) + 1 of this chunk, and every class must be present.

    Returns:
        A :class:`LogMEStats`.

    Raises:
        TypeError, ValueError: on bad input, as :func:`jaxtransfer.logme`.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.score import logme_stats, logme_from_stats
        >>> f, y = np.random.default_rng(0).normal(size=(100, 4)), np.arange(100) % 3
        >>> s = logme_stats(f[:60], y[:60], num_classes=3) + logme_stats(f[60:], y[60:], num_classes=3)
        >>> float(logme_from_stats(s)) == float(logme_from_stats(logme_stats(f, y)))
        True
    """
    f = _checks.check_features(features, min_samples=1)
    if _checks.check_flag(regression, "regression"):
        if num_classes is not None:
            raise ValueError("num_classes applies to classification only; drop it or regression=True.")
        return _regression_stats(f, _checks.check_targets(labels, f.shape[0], reject_zero=False))
    lab, c = _checks.check_class_labels(labels, f.shape[0], num_classes, require_all=num_classes is None)
    return _classification_stats(f, lab, num_classes=c)


def _check_stats(stats: LogMEStats) -> None:
    if not isinstance(stats, LogMEStats):
        raise TypeError(f"stats must be a LogMEStats (from logme_stats); got {type(stats).__name__}.")
    if isinstance(stats.count, jax.core.Tracer):
        return
    n = float(stats.count)
    if n < 2:
        raise ValueError(f"the statistics cover {n:g} sample(s); LogME needs at least 2.")
    empty = np.flatnonzero(np.asarray(stats.sq_norms) <= 0)
    if empty.size:
        raise ValueError(
            f"target(s) / class(es) {empty[:10].tolist()} have no samples or are identically zero in the merged "
            "statistics; drop them (for classes: relabel to 0..C-1)."
        )
    if not all(bool(jnp.isfinite(x).all()) for x in (stats.gram, stats.cross, stats.sq_norms)):
        raise ValueError("the statistics contain NaN or Inf values (were the features finite?).")


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _from_stats(stats, tol, *, max_iter):
    return primal_evidence(stats.gram, stats.cross, stats.sq_norms, stats.count, tol=tol, max_iter=max_iter)


def logme_evidence_from_stats(stats: LogMEStats, *, tol: float = 1e-3, max_iter: int = 100) -> LogMEEvidence:
    """Per-target maximised evidence from sufficient statistics (see :func:`jaxtransfer.logme_evidence`).

    Uses the primal form (eigendecomposition of F^T F). It equals ``logme_evidence`` on the concatenated data
    when n > D. For n <= D prefer ``logme_evidence`` on the features themselves: it uses the n x n Gram matrix,
    whose residual has no cancellation, and the closed-form noise-free limit; the primal form can lose accuracy
    there in float32.
    """
    _check_stats(stats)
    _checks.check_iteration(tol, max_iter)
    result = _from_stats(stats, jnp.asarray(tol, stats.gram.dtype), max_iter=max_iter)
    check_result(result, max_iter, "optimized")
    # The statistics describe F / 2^e: map the weights and alpha back, as logme does (F m = (F / s)(s m)).
    scale = jnp.ldexp(jnp.ones((), result.weights.dtype), jnp.asarray(stats.log2_scale))
    return dataclasses.replace(result, weights=result.weights / scale, alpha=result.alpha * scale**2)


def logme_from_stats(stats: LogMEStats, *, tol: float = 1e-3, max_iter: int = 100) -> jax.Array:
    """LogME score from sufficient statistics: the mean of :func:`logme_evidence_from_stats`' evidence."""
    return jnp.mean(logme_evidence_from_stats(stats, tol=tol, max_iter=max_iter).evidence)


def logme_streaming(
    batches: Iterable,
    *,
    regression: bool = False,
    num_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    progress: bool = True,
    total: int | None = None,
) -> jax.Array:
    """LogME of a stream of (features, labels) chunks, in one pass and O(D^2 + D K) memory whatever n is.

    Args:
        batches: any iterable of ``(features (b, D), labels (b,) or targets (b, K))`` pairs, e.g. a generator that
            runs a backbone batch by batch.
        regression: the chunks carry real-valued targets.
        num_classes: C (required for classification: a chunk may miss classes).
        tol, max_iter: as :func:`jaxtransfer.logme`.
        progress: show a tqdm progress bar (if tqdm is installed).
        total: number of chunks, for the progress bar.

    Returns:
        The LogME score of all samples of all chunks.

    Raises:
        ValueError: for an empty stream, chunks of different D, a missing ``num_classes``, or any bad chunk
            (the message names the chunk).
    """
    if not _checks.check_flag(regression, "regression") and num_classes is None:
        raise ValueError("num_classes is required for streaming classification: a chunk may miss classes.")
    it = iter(batches)
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(it, total=total, desc="LogME statistics", unit="chunk")
        except ImportError:
            pass
    acc = None
    for i, chunk in enumerate(it):
        try:
            features, labels = chunk
        except (TypeError, ValueError) as err:
            raise ValueError(f"chunk {i} must be a (features, labels) pair; got {type(chunk).__name__}.") from err
        try:
            s = logme_stats(features, labels, regression=regression, num_classes=num_classes)
            acc = s if acc is None else acc + s
        except (TypeError, ValueError) as err:
            raise type(err)(f"chunk {i}: {err}") from err
    if acc is None:
        raise ValueError("the stream yielded no chunk.")
    return logme_from_stats(acc, tol=tol, max_iter=max_iter)
