"""Centred kernel alignment (CKA) of two representations of the same samples, on arrays (no Flax needed).

Linear CKA (Kornblith et al., ICML 2019) of features X (n, p) and Y (n, q), centred:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

and kernel CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with HSIC(K, L) = <HKH, HLH> (H the centring matrix).
The RBF kernel is k(x, x') = exp(-||x - x'||^2 / (2 sigma^2)) with sigma^2 = f^2 median(||x_i - x_j||^2); by default
the median runs over all n^2 pairs, the zero diagonal included, as in the authors' reference code (so the reference
demo's values come out); ``bandwidth="off-diagonal"`` takes the median over i != j only.
Debiased CKA replaces HSIC by the unbiased estimator HSIC_1 of Song et al. (2012), which removes the bias towards 1
that plain CKA has when features outnumber samples. Minibatch CKA (Nguyen, Raghu and Kornblith, 2021) sums HSIC_1
over equal-size batches; HSIC_1 can be negative, so every denominator is guarded (a known source of NaN elsewhere).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import _checks
from jaxtransfer._plotting import pyplot

__all__ = ["BANDWIDTHS", "CKAMatrix", "cka", "cka_matrix", "minibatch_cka"]

_HI = jax.lax.Precision.HIGHEST
BANDWIDTHS = ("reference", "off-diagonal")


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


def _gram(x, kernel: str, fraction: float, bandwidth: str):
    """The (n, n) Gram matrix of centred, power-of-two rescaled features x (n, p)."""
    dot = jnp.matmul(x, x.T, precision=_HI)
    if kernel == "linear":
        return dot
    norms = jnp.diagonal(dot)
    n = x.shape[0]
    off = ~np.eye(n, dtype=bool)
    # ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j: the Gram form (n x n memory, not n x n x p); exact zeros on the diagonal
    sq = jnp.where(off, jnp.maximum(norms[:, None] + norms[None, :] - 2 * dot, 0), 0)
    median = jnp.median(sq) if bandwidth == "reference" else jnp.median(sq[off])
    sigma2 = jnp.square(fraction) * median
    return jnp.exp(-sq / (2 * jnp.maximum(sigma2, jnp.finfo(x.dtype).tiny)))


def _centre(k):
    return k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True) + jnp.mean(k)


def _check_kernel(kernel: str, sigma_fraction, bandwidth: str, debiased) -> None:
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}.")
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {BANDWIDTHS}; got {bandwidth!r}.")
    if isinstance(sigma_fraction, bool) or not (isinstance(sigma_fraction, int | float) and sigma_fraction > 0):
        raise ValueError(f"sigma_fraction must be a number > 0; got {sigma_fraction!r}.")
    _checks.check_flag(debiased, "debiased")


def _hsics(ka, kb, debiased: bool):
    """(HSIC(K, L), HSIC(K, K), HSIC(L, L)) of two Gram matrices: centred inner products, or HSIC_1."""
    if debiased:
        return _unbiased_hsic(ka, kb), _unbiased_hsic(ka, ka), _unbiased_hsic(kb, kb)
    ca, cb = _centre(ka), _centre(kb)
    return jnp.sum(ca * cb), jnp.sum(ca * ca), jnp.sum(cb * cb)


def _ratio(hab, haa, hbb, names=("x", "y")):
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); a concrete non-positive self-term raises, a traced one is guarded."""
    for h, name in ((haa, names[0]), (hbb, names[1])):
        if not isinstance(h, jax.core.Tracer) and not bool(h > 0):
            raise ValueError(
                f"the HSIC of {name} with itself is {float(h):.3g} <= 0: CKA is undefined ({name} is constant, or the "
                "debiased estimate came out non-positive on too few samples)."
            )
    tiny = jnp.finfo(hab.dtype).tiny
    return hab / jnp.sqrt(jnp.maximum(haa, tiny) * jnp.maximum(hbb, tiny))


def cka(
    x,
    y,
    *,
    kernel: str = "linear",
    sigma_fraction: float = 1.0,
    bandwidth: str = "reference",
    debiased: bool = False,
) -> jax.Array:
    """Centred kernel alignment of two representations of the same n samples (in [0, 1]; debiased can be < 0).

    Args:
        x: (n, p), y: (n, q) features.
        kernel: ``"linear"`` (invariant to orthogonal maps and isotropic scaling, not to arbitrary invertible maps)
            or ``"rbf"`` with sigma^2 = ``sigma_fraction ** 2`` x the median squared pairwise distance.
        bandwidth: over which pairs that median runs: ``"reference"`` (all n^2, diagonal zeros included, as the
            authors' code) or ``"off-diagonal"`` (i != j).
        debiased: use the unbiased HSIC_1 (Song et al., 2012); needs n >= 4.

    Example (the reference demo's data and values):
        >>> import numpy as np
        >>> from jaxtransfer.similarity import cka
        >>> np.random.seed(1337)
        >>> x = np.random.randn(100, 10)
        >>> y = np.random.randn(100, 10) + x
        >>> values = cka(x, y), cka(x, y, debiased=True), cka(x, y, kernel="rbf", sigma_fraction=0.5)
        >>> [round(float(v), 5) for v in values]
        [0.55761, 0.51346, 0.65483]
    """
    _check_kernel(kernel, sigma_fraction, bandwidth, debiased)
    x, y = _pair(x, y)
    if debiased and x.shape[0] < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples; got {x.shape[0]}.")
    # Both kernels are invariant to translation and isotropic scaling: centre, reject a constant representation
    # (CKA is 0/0 there), and rescale by a power of two so that no product can overflow or underflow.
    x, y = _centred_unit(x, "x"), _centred_unit(y, "y")
    if kernel == "linear" and not debiased:
        cross = jnp.sum(jnp.square(jnp.matmul(y.T, x, precision=_HI)))
        nx = jnp.linalg.norm(jnp.matmul(x.T, x, precision=_HI))
        ny = jnp.linalg.norm(jnp.matmul(y.T, y, precision=_HI))
        return cross / (nx * ny)
    return _ratio(
        *_hsics(_gram(x, kernel, sigma_fraction, bandwidth), _gram(y, kernel, sigma_fraction, bandwidth), debiased)
    )


@dataclasses.dataclass(frozen=True)
class CKAMatrix:
    """Layer-by-layer CKA between two models (or a model and itself): ``values[i, j]`` = CKA(a_i, b_j).

    Example:
        >>> import numpy as np
        >>> m = CKAMatrix(np.array([[1.0, 0.2], [0.3, 0.9]]), ("a0", "a1"), ("b0", "b1"))
        >>> m.values[1, 1]
        np.float64(0.9)
    """

    values: np.ndarray  # (La, Lb)
    names_a: tuple[str, ...]
    names_b: tuple[str, ...]

    def plot(self, ax=None, *, label_a: str = "model A", label_b: str = "model B"):
        plt = pyplot()

        ax = ax or plt.subplots(figsize=(1 + 0.5 * len(self.names_b), 1 + 0.5 * len(self.names_a)))[1]
        im = ax.imshow(self.values, origin="lower", vmin=0.0, vmax=1.0, cmap="magma")
        ax.figure.colorbar(im, ax=ax, label="CKA")
        ax.set_xticks(range(len(self.names_b)), self.names_b, rotation=90)
        ax.set_yticks(range(len(self.names_a)), self.names_a)
        ax.set_xlabel(label_b)
        ax.set_ylabel(label_a)
        ax.set_title(f"CKA of {len(self.names_a)} x {len(self.names_b)} layer pairs", fontsize=10)
        for i in range(len(self.names_a)):  # the values, readable without the colour bar
            for j in range(len(self.names_b)):
                v = float(self.values[i, j])
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="k" if v > 0.6 else "w")
        return ax


def _layers(layers, what: str) -> tuple[tuple[str, ...], list]:
    if isinstance(layers, Mapping):
        names, arrays = tuple(str(k) for k in layers), list(layers.values())
    elif isinstance(layers, Sequence) and not isinstance(layers, str):
        names, arrays = tuple(str(i) for i in range(len(layers))), list(layers)
    else:
        raise TypeError(
            f"{what} must be a dict name -> features or a sequence of features; got {type(layers).__name__}."
        )
    if not arrays:
        raise ValueError(f"{what} holds no layer.")
    out = []
    for name, a in zip(names, arrays, strict=True):
        a = np.asarray(a)
        if a.ndim < 2:
            raise ValueError(f"{what}[{name!r}] must be (n, ...) features; got shape {a.shape}.")
        out.append(a.reshape(a.shape[0], -1))  # (n, h, w, c) feature maps count as (n, h*w*c)
    return names, out


def cka_matrix(
    layers_a,
    layers_b=None,
    *,
    kernel: str = "linear",
    sigma_fraction: float = 1.0,
    bandwidth: str = "reference",
    debiased: bool = False,
) -> CKAMatrix:
    """CKA between every layer of one model and every layer of another (the heatmaps of Kornblith et al. and of
    "What is being transferred?"), from the features of the same n samples.

    Args:
        layers_a: a dict name -> features (n, ...) or a sequence of them; feature maps are flattened per sample.
        layers_b: the same for the other model (default: ``layers_a``, a model against itself).
        kernel, sigma_fraction, bandwidth, debiased: as in :func:`cka`.

    Each layer's Gram matrix (n x n) is formed once; use :func:`minibatch_cka` for n in the tens of thousands.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.similarity import cka_matrix
        >>> x = np.random.default_rng(0).normal(size=(50, 6))
        >>> m = cka_matrix({"in": x, "tanh": np.tanh(x), "noise": np.random.default_rng(1).normal(size=(50, 4))})
        >>> np.diag(m.values).round(6).tolist(), bool(m.values[0, 1] > m.values[0, 2])
        ([1.0, 1.0, 1.0], True)
    """
    _check_kernel(kernel, sigma_fraction, bandwidth, debiased)
    names_a, arrays_a = _layers(layers_a, "layers_a")
    names_b, arrays_b = (names_a, arrays_a) if layers_b is None else _layers(layers_b, "layers_b")
    n = arrays_a[0].shape[0]
    for what, names, arrays in (("layers_a", names_a, arrays_a), ("layers_b", names_b, arrays_b)):
        for name, a in zip(names, arrays, strict=True):
            if a.shape[0] != n:
                raise ValueError(f"{what}[{name!r}] has {a.shape[0]} samples; every layer must describe the same {n}.")
    if debiased and n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples; got {n}.")

    def grams(names, arrays, what):
        out = []
        for name, a in zip(names, arrays, strict=True):
            x = _centred_unit(_checks.check_features(a, f"{what}[{name!r}]"), f"{what}[{name!r}]")
            out.append(_gram(x, kernel, sigma_fraction, bandwidth))
        return out

    ga = grams(names_a, arrays_a, "layers_a")
    gb = ga if layers_b is None else grams(names_b, arrays_b, "layers_b")
    pair = jax.jit(lambda ka, kb: _hsics(ka, kb, debiased))
    values = np.array(
        [
            [
                float(_ratio(*pair(ka, kb), names=(f"layers_a[{na!r}]", f"layers_b[{nb!r}]")))
                for nb, kb in zip(names_b, gb, strict=True)
            ]
            for na, ka in zip(names_a, ga, strict=True)
        ]
    )
    return CKAMatrix(values, names_a, names_b)


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
