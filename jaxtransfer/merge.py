"""Merging fine-tuned models in weight space, for any pytree of parameters (no Flax needed).

With theta_pre the pre-trained (or zero-shot) weights and theta_t the weights fine-tuned on task t, the task vector
is tau_t = theta_t - theta_pre, and every method here returns theta_pre + (a combination of the tau_t):

- WiSE-FT (Wortsman et al., CVPR 2022): theta(alpha) = (1 - alpha) theta_pre + alpha theta_ft, alpha picked on
  held-out data (:func:`wise_ft_sweep`).
- Task arithmetic (Ilharco et al., ICLR 2023): theta_pre + sum_t lambda_t tau_t; a negative lambda_t "forgets" task t.
- TIES-merging (Yadav et al., NeurIPS 2023): trim each tau_t to its top-``density`` fraction by magnitude (over the
  whole model), elect a sign per entry, gamma = sign(sum_t trim(tau_t)), and average per entry only the trimmed
  values that agree with gamma (the disjoint mean); theta_pre + lambda tau_merged.
- DARE (Yu et al., ICML 2024): drop each entry of tau with probability 1 - density and rescale the kept ones by
  1 / density, so E[DARE(tau)] = tau; :func:`dare_ties` uses DARE in place of TIES's magnitude trim.

Only floating-point leaves are merged; other leaves (counters, RNG keys) come from ``theta_pre``. Arithmetic runs in
float32 (float64 for float64 leaves) and the result is cast back to ``theta_pre``'s dtypes, so bf16 in is bf16 out;
task vectors themselves are kept in that accumulation dtype (a bf16 difference of two close weights would lose most
of its digits). Inputs are never modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._checks import check_score
from jaxtransfer._pytree import accumulation_dtype, as_arrays, check_same, is_float, lerp

__all__ = [
    "WiseFTSweep",
    "dare",
    "dare_ties",
    "task_arithmetic",
    "task_vector",
    "ties_merge",
    "wise_ft",
    "wise_ft_sweep",
]


def _tree(tree):
    """``tree`` with its float leaves as JAX arrays (float64 NumPy leaves become float32 unless x64 is enabled, as
    everywhere in JAX), so that every cast below is to a dtype JAX has."""
    return jax.tree.map(lambda x: jnp.asarray(x) if is_float(x) else x, as_arrays(tree))


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return float(value)


def _density(density, name: str = "density") -> float:
    d = _real(density, name)
    if not 0 < d <= 1:
        raise ValueError(f"{name} is the fraction of each task vector that is kept: it must be in (0, 1]; got {d}.")
    return d


def _fine_tuned(theta_pre, thetas_ft, what: str) -> list:
    if not isinstance(thetas_ft, Sequence) or isinstance(thetas_ft, dict | str):
        raise TypeError(f"{what} takes a sequence of fine-tuned pytrees; got {type(thetas_ft).__name__}.")
    if len(thetas_ft) == 0:
        raise ValueError(f"{what} needs at least one fine-tuned model.")
    out = [_tree(t) for t in thetas_ft]
    for i, t in enumerate(out):
        check_same(theta_pre, t, names=("theta_pre", f"thetas_ft[{i}]"))
    return out


def _acc(x):
    return x.astype(accumulation_dtype(x.dtype))


def _apply(theta_pre, delta, scale: float = 1.0):
    """theta_pre + scale * delta on the float leaves, cast to theta_pre's dtypes."""
    return jax.tree.map(
        lambda p, d: (_acc(p) + scale * d.astype(accumulation_dtype(p.dtype))).astype(p.dtype) if is_float(p) else p,
        theta_pre,
        delta,
    )


def wise_ft(theta_0, theta_ft, alpha: float):
    """WiSE-FT: (1 - alpha) theta_0 + alpha theta_ft (alpha = 0: the pre-trained model, 1: the fine-tuned one).

    Args:
        theta_0: the zero-shot / pre-trained parameters (with the fine-tuned head if the head is new).
        theta_ft: the fine-tuned parameters, same structure, shapes and dtypes.
        alpha: the mixing coefficient; the paper uses [0, 1] (values outside extrapolate).

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import wise_ft
        >>> wise_ft({"w": np.array([0.0, 2.0])}, {"w": np.array([4.0, 2.0])}, 0.5)["w"].tolist()
        [2.0, 2.0]
    """
    theta_0, theta_ft = _tree(theta_0), _tree(theta_ft)
    check_same(theta_0, theta_ft, names=("theta_0", "theta_ft"))
    return lerp(theta_0, theta_ft, _real(alpha, "alpha"))


@dataclasses.dataclass(frozen=True)
class WiseFTSweep:
    """Result of :func:`wise_ft_sweep`: the held-out score at each alpha and the best mixture.

    Attributes:
        alphas: the coefficients tried, (A,).
        scores: ``evaluate`` at each, (A,).
        best_alpha: the alpha of the highest score (the first one on a tie: closer to the pre-trained model when
            the alphas increase).
        best: the parameters at ``best_alpha``.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import wise_ft_sweep
        >>> sweep = wise_ft_sweep({"w": np.array(0.0)}, {"w": np.array(2.0)}, lambda p: 1 - abs(float(p["w"]) - 1.0),
        ...                       alphas=[0.0, 0.5, 1.0])
        >>> sweep.scores.tolist(), sweep.best_alpha, float(sweep.best["w"])
        ([0.0, 1.0, 0.0], 0.5, 1.0)
    """

    alphas: np.ndarray
    scores: np.ndarray
    best_alpha: float
    best: object


def wise_ft_sweep(
    theta_0, theta_ft, evaluate: Callable[[object], float], alphas: Sequence[float] = tuple(np.linspace(0, 1, 11))
) -> WiseFTSweep:
    """WiSE-FT at each of ``alphas``, scored by ``evaluate`` (higher is better) on held-out data; keeps the best.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import wise_ft_sweep
        >>> sweep = wise_ft_sweep({"w": np.array(0.0)}, {"w": np.array(1.0)}, lambda p: -abs(float(p["w"]) - 0.3))
        >>> sweep.best_alpha
        0.3
    """
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable params -> score; got {type(evaluate).__name__}.")
    alphas = np.asarray(alphas, np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or not np.isfinite(alphas).all():
        raise ValueError(f"alphas must be a non-empty 1-D sequence of finite numbers; got {alphas!r}.")
    theta_0, theta_ft = _tree(theta_0), _tree(theta_ft)
    check_same(theta_0, theta_ft, names=("theta_0", "theta_ft"))
    scores = []
    for a in alphas:
        scores.append(check_score(evaluate(lerp(theta_0, theta_ft, float(a))), f"evaluate at alpha {a:g}"))
    scores = np.asarray(scores)
    k = int(np.argmax(scores))
    best_alpha = float(np.round(alphas[k], 12))
    return WiseFTSweep(alphas, scores, best_alpha, lerp(theta_0, theta_ft, best_alpha))


def task_vector(theta_pre, theta_ft):
    """tau = theta_ft - theta_pre on the float leaves, in the accumulation dtype (float32, or float64); other leaves
    are zeros.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import task_vector
        >>> task_vector({"w": np.array([1.0, 2.0])}, {"w": np.array([1.5, 0.0])})["w"].tolist()
        [0.5, -2.0]
    """
    theta_pre, theta_ft = _tree(theta_pre), _tree(theta_ft)
    check_same(theta_pre, theta_ft, names=("theta_pre", "theta_ft"))
    return jax.tree.map(lambda p, f: _acc(f) - _acc(p) if is_float(p) else jnp.zeros_like(p), theta_pre, theta_ft)


def _scales(scale, k: int) -> list[float]:
    if isinstance(scale, Sequence) or (isinstance(scale, np.ndarray) and scale.ndim == 1):
        out = [_real(s, f"scale[{i}]") for i, s in enumerate(scale)]
        if len(out) != k:
            raise ValueError(f"{len(out)} scales for {k} task vectors.")
        return out
    return [_real(scale, "scale")] * k


def _check_vectors(theta_pre, vectors, what: str) -> list:
    if not isinstance(vectors, Sequence) or isinstance(vectors, dict | str) or len(vectors) == 0:
        raise ValueError(f"{what} takes a non-empty sequence of task vectors.")
    vectors = [_tree(v) for v in vectors]
    for i, v in enumerate(vectors):
        # a task vector has theta_pre's structure and shapes; its dtype is the accumulation dtype
        like = jax.tree.map(lambda p: p.astype(accumulation_dtype(p.dtype)) if is_float(p) else p, theta_pre)
        check_same(like, v, names=("theta_pre (as a task vector)", f"vectors[{i}]"))
    return vectors


def task_arithmetic(theta_pre, vectors: Sequence, scale: float | Sequence[float] = 1.0):
    """theta_pre + sum_t scale_t tau_t (one ``scale`` for all, or one per vector; negative to negate a task).

    Ilharco et al. pick one scale on held-out data (typically in [0.3, 1] when adding several tasks).

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import task_arithmetic, task_vector
        >>> pre = {"w": np.array([1.0, 1.0])}
        >>> tau_a = task_vector(pre, {"w": np.array([2.0, 1.0])})
        >>> tau_b = task_vector(pre, {"w": np.array([1.0, 3.0])})
        >>> task_arithmetic(pre, [tau_a, tau_b], scale=[1.0, -0.5])["w"].tolist()  # add a, forget half of b
        [2.0, 0.0]
    """
    theta_pre = _tree(theta_pre)
    vectors = _check_vectors(theta_pre, vectors, "task_arithmetic")
    scales = _scales(scale, len(vectors))

    def combine(*vs):
        return sum(s * v for s, v in zip(scales, vs, strict=True)) if is_float(vs[0]) else vs[0]

    total = jax.tree.map(combine, *vectors)
    return _apply(theta_pre, total)


def _float_leaves(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if is_float(x)]


def _trim(vector, density: float):
    """The vector with all but its top-``density`` fraction of entries (by magnitude, over all float leaves) zeroed.

    The threshold is the ceil(density * size)-th largest magnitude; entries tied with it are kept too."""
    if density == 1.0:
        return vector
    mags = np.concatenate([np.abs(np.asarray(x, np.float64)).ravel() for x in _float_leaves(vector)])
    keep = int(np.ceil(density * mags.size))
    threshold = float(np.partition(mags, mags.size - keep)[mags.size - keep])
    return jax.tree.map(lambda x: jnp.where(jnp.abs(x) >= threshold, x, 0) if is_float(x) else x, vector)


@jax.jit
def _disjoint_mean(*values):
    stacked = jnp.stack(values)
    sign = jnp.sign(jnp.sum(stacked, axis=0))
    agree = (jnp.sign(stacked) == sign[None]) & (stacked != 0)
    count = jnp.sum(agree, axis=0).astype(stacked.dtype)
    return jnp.where(count > 0, jnp.sum(jnp.where(agree, stacked, 0), axis=0) / jnp.maximum(count, 1), 0)


def _elect_and_merge(theta_pre, vectors, scale: float):
    merged = jax.tree.map(lambda *vs: _disjoint_mean(*vs) if is_float(vs[0]) else vs[0], *vectors)
    return _apply(theta_pre, merged, scale)


def ties_merge(theta_pre, thetas_ft: Sequence, *, density: float = 0.2, scale: float = 1.0):
    """TIES-merging of several models fine-tuned from ``theta_pre``.

    1. Trim: each tau_t keeps its ceil(density * P) largest-magnitude entries over the whole model (P float entries;
       the paper's default keeps 20%), the rest is zeroed.
    2. Elect: gamma = sign(sum_t trimmed tau_t), per entry.
    3. Disjoint mean: per entry, the mean of the trimmed tau_t that are non-zero with sign gamma (0 where none is, or
       where the sum is exactly 0).
    4. theta_pre + scale * merged.

    With density 1 and task vectors that agree in sign everywhere this is task arithmetic with scale / T: the mean.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.merge import ties_merge
        >>> pre = {"w": np.zeros(3)}
        >>> fts = [{"w": np.array([1.0, -2.0, 0.1])}, {"w": np.array([3.0, 1.0, 0.0])}]
        >>> ties_merge(pre, fts, density=1.0)["w"].tolist()  # entry 1: sum -1 elects "-", only -2 agrees
        [2.0, -2.0, 0.10000000149011612]
    """
    theta_pre = _tree(theta_pre)
    thetas_ft = _fine_tuned(theta_pre, thetas_ft, "ties_merge")
    density, scale = _density(density), _real(scale, "scale")
    vectors = [_trim(task_vector(theta_pre, t), density) for t in thetas_ft]
    return _elect_and_merge(theta_pre, vectors, scale)


def _dare_vector(vector, density: float, key: jax.Array):
    leaves, treedef = jax.tree.flatten(vector)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, x in zip(keys, leaves, strict=True):
        if is_float(x) and density < 1.0:
            keep = jax.random.bernoulli(k, density, x.shape)
            x = jnp.where(keep, x / density, 0).astype(x.dtype)
        out.append(x)
    return jax.tree.unflatten(treedef, out)


def _check_key(key) -> jax.Array:
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(0)); got {type(key).__name__}.")
    return key


def dare(theta_pre, theta_ft, *, density: float, key: jax.Array):
    """DARE (drop and rescale): theta_pre + m * tau / density, m_i ~ Bernoulli(density) independently per entry.

    Yu et al. find that fine-tuned deltas survive dropping 90% and more (density 0.1) with little loss; combine the
    result with :func:`task_arithmetic` (``task_vector(theta_pre, dare(...))``) or use :func:`dare_ties`.

    Example:
        >>> import jax, numpy as np
        >>> from jaxtransfer.merge import dare
        >>> out = dare({"w": np.zeros(4)}, {"w": np.ones(4)}, density=0.5, key=jax.random.key(0))
        >>> sorted(set(out["w"].tolist()))  # every entry is dropped (0) or doubled (2)
        [0.0, 2.0]
    """
    theta_pre, theta_ft = _tree(theta_pre), _tree(theta_ft)
    check_same(theta_pre, theta_ft, names=("theta_pre", "theta_ft"))
    density = _density(density)
    return _apply(theta_pre, _dare_vector(task_vector(theta_pre, theta_ft), density, _check_key(key)))


def dare_ties(theta_pre, thetas_ft: Sequence, *, density: float, key: jax.Array, scale: float = 1.0):
    """DARE then TIES: each tau_t is dropped and rescaled (:func:`dare`, its own key), then TIES's sign election
    and disjoint mean merge them (no magnitude trim: DARE's drop replaces it); theta_pre + scale * merged.

    Example:
        >>> import jax, numpy as np
        >>> from jaxtransfer.merge import dare_ties
        >>> pre, fts = {"w": np.zeros(3)}, [{"w": np.ones(3)}, {"w": 3 * np.ones(3)}]
        >>> dare_ties(pre, fts, density=1.0, key=jax.random.key(0))["w"].tolist()  # density 1: the TIES mean
        [2.0, 2.0, 2.0]
    """
    theta_pre = _tree(theta_pre)
    thetas_ft = _fine_tuned(theta_pre, thetas_ft, "dare_ties")
    density, scale = _density(density), _real(scale, "scale")
    keys = jax.random.split(_check_key(key), len(thetas_ft))
    vectors = [_dare_vector(task_vector(theta_pre, t), density, k) for t, k in zip(thetas_ft, keys, strict=True)]
    return _elect_and_merge(theta_pre, vectors, scale)
