"""Model soups and logit ensembles for any pytree (Wortsman et al., "Model soups", ICML 2022).

Ingredients are pytrees of identical structure, shapes and dtypes (e.g. ``nnx.state(model, nnx.Param)`` of models
fine-tuned from one pre-trained model, Linen params, Equinox arrays, raw dicts). Only floating-point leaves are
averaged (Python and NumPy float scalars count as float leaves and come back as arrays); other leaves (integer
counters, RNG keys) are taken from the first ingredient. Averages are running means in float32 (or float64 when the
leaves are float64), m_k = (1 - 1/k) m_{k-1} + x_k / k, so the mean of finite values is finite even where their sum
would overflow; they are cast back, so bf16 in gives bf16 out. Ingredients holding NaN or Inf are rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtransfer._checks import check_flag
from jaxtransfer._pytree import as_arrays, check_same, is_float

__all__ = ["GreedySoup", "ensemble", "evaluate_many", "greedy_soup", "learned_soup", "uniform_soup"]


def _acc_dtype(dtype):
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _score(value, what: str) -> float:
    """A held-out score as a float; NaN or Inf raises (a NaN would silently never, or always, be accepted)."""
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a real number; got {value!r}.") from err
    if not np.isfinite(out):
        raise ValueError(f"{what} is {out}: fix the evaluation (a NaN or Inf score cannot be compared).")
    return out


def uniform_soup(ingredients: Iterable) -> object:
    """The element-wise mean of the ingredients' floating-point leaves.

    Args:
        ingredients: a sequence, or any iterable (e.g. a generator restoring checkpoints one at a time: then at
            most the running sum and one ingredient are in memory).

    Returns:
        A pytree like the first ingredient.


    Example:
        >>> import numpy as np
        >>> from jaxtransfer.soup import uniform_soup
        >>> uniform_soup([{'w': np.array([1.0, 2.0])}, {'w': np.array([3.0, 6.0])}])['w'].tolist()
        [2.0, 4.0]

    Raises:
        ValueError: empty input, or an ingredient differing in structure, shape or dtype, or non-finite (the message
            names the ingredient and the leaf).
    """
    first, mean = None, None
    for i, ingredient in enumerate(ingredients):
        ingredient = as_arrays(ingredient)
        first = ingredient if first is None else first
        check_same(first, ingredient, i)
        mean = _update_mean(mean, ingredient, i + 1)
    if first is None:
        raise ValueError("uniform_soup needs at least one ingredient.")
    return _cast_like(mean, first)


@dataclasses.dataclass(frozen=True)
class GreedySoup:
    """Result of :func:`greedy_soup`.

    Attributes:
        soup: the averaged parameters.
        chosen: indices (into the input) of the ingredients in the soup, in the order they were added.
        order: all indices, sorted by individual held-out score (best first).
        individual_scores: held-out score of each ingredient (input order).
        trace: held-out score of the soup after each candidate was considered (len = number of ingredients).

    Example:
        >>> import jax.numpy as jnp
        >>> ingredients = [{"w": jnp.array(0.0)}, {"w": jnp.array(2.0)}, {"w": jnp.array(10.0)}]
        >>> result = greedy_soup(ingredients, lambda p: -abs(float(p["w"]) - 1.0))  # best at w = 1
        >>> result.chosen, float(result.soup["w"])  # the third would make the soup worse
        ((0, 1), 1.0)
    """

    soup: object
    chosen: tuple[int, ...]
    order: tuple[int, ...]
    individual_scores: tuple[float, ...]
    trace: tuple[float, ...]


def _update_mean(mean, ingredient, k: int):
    """The running mean after the k-th ingredient (k >= 1), in the accumulation dtype; it cannot overflow."""
    if mean is None:
        return jax.tree.map(lambda x: x.astype(_acc_dtype(x.dtype)) if is_float(x) else x, ingredient)
    keep, new = (k - 1) / k, 1 / k
    return jax.tree.map(lambda m, x: m * keep + x.astype(m.dtype) * new if is_float(x) else m, mean, ingredient)


def _cast_like(mean, like):
    return jax.tree.map(lambda m, x: m.astype(x.dtype) if is_float(x) else x, mean, like)


def greedy_soup(
    ingredients: Sequence,
    evaluate: Callable[[object], float],
    *,
    held_out_scores: Sequence[float] | None = None,
    strict: bool = True,
) -> GreedySoup:
    """Greedy soup: sort by held-out score, then add each ingredient if the soup's held-out score improves.

    Starting from the best ingredient, one pass over the others; the candidate soup is the uniform average of the
    chosen ingredients plus the next one, kept if ``evaluate(candidate) > evaluate(current soup)`` (``strict``, as
    published: Wortsman et al., Algorithm 1) or ``>=`` (``strict=False``: ties join, which adds ingredients that
    change nothing on a coarse metric such as accuracy on a small split). Either way the result is never worse on
    the held-out data than the best single ingredient.

    Only the running sum of the chosen ingredients, the candidate and one ingredient are held at a time: pass a
    lazy ``Sequence`` (whose ``__getitem__`` restores a checkpoint) to keep memory at about three models.

    Args:
        ingredients: a sequence of pytrees (random access: each is read once for its score, once as a candidate).
        evaluate: held-out score of a pytree, higher is better (e.g. accuracy on a validation split).
        held_out_scores: the ingredients' own scores if already known (then each is read only once).
        strict: keep a candidate only if it strictly improves the score (default); ``False``: also on a tie.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.soup import greedy_soup
        >>> ingredients = [{"w": np.array([1.0])}, {"w": np.array([3.0])}, {"w": np.array([-9.0])}]
        >>> result = greedy_soup(ingredients, lambda p: -abs(float(p["w"][0]) - 2.0))  # best at w = 2
        >>> result.chosen, float(result.soup["w"][0])
        ((0, 1), 2.0)
    """
    check_flag(strict, "strict")
    if not isinstance(ingredients, Sequence):
        ingredients = list(ingredients)
    k = len(ingredients)
    if k == 0:
        raise ValueError("greedy_soup needs at least one ingredient.")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable params -> score; got {type(evaluate).__name__}.")
    if held_out_scores is None:
        scores = [_score(evaluate(as_arrays(ingredients[i])), f"evaluate(ingredient {i})") for i in range(k)]
    else:
        scores = [_score(s, f"held_out_scores[{i}]") for i, s in enumerate(held_out_scores)]
        if len(scores) != k:
            raise ValueError(f"{len(scores)} held_out_scores for {k} ingredients.")
    order = sorted(range(k), key=lambda i: -scores[i])
    first = as_arrays(ingredients[order[0]])
    check_same(first, first, order[0])
    chosen, mean, best = [order[0]], _update_mean(None, first, 1), scores[order[0]]
    soup, trace = first, [best]
    for i in order[1:]:
        ingredient = as_arrays(ingredients[i])
        check_same(first, ingredient, i)
        candidate_mean = _update_mean(mean, ingredient, len(chosen) + 1)
        candidate = _cast_like(candidate_mean, first)
        score = _score(evaluate(candidate), f"evaluate(soup + ingredient {i})")
        if score > best or (not strict and score == best):
            chosen.append(i)
            mean, soup, best = candidate_mean, candidate, score
        trace.append(best)
    return GreedySoup(soup, tuple(chosen), tuple(order), tuple(scores), tuple(trace))


def learned_soup(
    ingredients: Sequence,
    loss_fn: Callable[[object, object], jax.Array],
    data,
    *,
    per_layer: bool = False,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 100,
) -> tuple[object, object]:
    """Learned soup: mixing weights softmax(logits / temperature) optimised on held-out data.

    theta(alpha, t) = sum_k softmax(alpha / t)_k theta_k, with one logit per ingredient (``per_layer=False``) or one
    per ingredient per leaf ("by layer", as published) and one learned temperature t = exp(-s) shared by all
    leaves (as published; it lets one step size move sharp and flat mixtures alike), optimised with ``optimizer``
    (default ``optax.adamw(0.1)``, as published) for ``steps`` full-batch steps of ``loss_fn(theta, data)``. The
    logits start at 0 (the uniform soup) and t at 1.

    Returns:
        (soup, mixing weights: an array (K,) or a pytree of (K,) arrays, one per leaf; the temperature included).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.soup import learned_soup
        >>> ingredients = [{"w": jnp.array([0.0])}, {"w": jnp.array([1.0])}]
        >>> def loss(p, target):  # best mixture: w = 0.25, i.e. weights (0.75, 0.25)
        ...     return jnp.sum(jnp.square(p["w"] - target))
        >>> _, weights = learned_soup(ingredients, loss, jnp.array([0.25]), steps=300)
        >>> [round(float(w), 2) for w in weights]
        [0.75, 0.25]
    """
    ingredients = [as_arrays(ing) for ing in ingredients]
    if not ingredients:
        raise ValueError("learned_soup needs at least one ingredient.")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0 (0 gives the uniform soup); got {steps!r}.")
    for i, ing in enumerate(ingredients):
        check_same(ingredients[0], ing, i)
    k = len(ingredients)
    if per_layer:
        alpha = jax.tree.map(lambda x: jnp.zeros((k,), jnp.float32), ingredients[0])
    else:
        alpha = jnp.zeros((k,), jnp.float32)
    logits = {"alpha": alpha, "log_inverse_temperature": jnp.zeros((), jnp.float32)}

    def mixing_weights(logits):
        scale = jnp.exp(logits["log_inverse_temperature"])
        return jax.tree.map(lambda a: jax.nn.softmax(a * scale), logits["alpha"])

    def mix(logits):
        w = mixing_weights(logits)
        weights = w if per_layer else jax.tree.map(lambda _: w, ingredients[0])

        def combine(wl, *leaves):
            if not is_float(leaves[0]):
                return leaves[0]
            acc = sum(wl[j] * leaves[j].astype(_acc_dtype(leaves[0].dtype)) for j in range(k))
            return acc.astype(leaves[0].dtype)

        return jax.tree.map(combine, weights, *ingredients)

    tx = optimizer or optax.adamw(0.1)
    with jax.numpy_dtype_promotion("standard"):
        state = tx.init(logits)

    @jax.jit
    def step(logits, state):
        loss, grads = jax.value_and_grad(lambda lg: loss_fn(mix(lg), data))(logits)
        updates, state = tx.update(grads, state, logits)
        return optax.apply_updates(logits, updates), state, loss

    for _ in range(steps):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with Python floats
            logits, state, loss = step(logits, state)
        if not bool(jnp.isfinite(loss)):
            raise FloatingPointError("the learned-soup loss became non-finite; lower the learning rate.")
    return mix(logits), mixing_weights(logits)


def _stack(ingredients: Sequence) -> object:
    ingredients = [as_arrays(ing) for ing in ingredients]
    for i, ing in enumerate(ingredients):
        check_same(ingredients[0], ing, i)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *ingredients)


def evaluate_many(apply_fn: Callable, ingredients: Sequence, data) -> jax.Array:
    """Outputs of every ingredient on ``data`` with one ``vmap`` over the stacked ingredients: (K, ...).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.soup import evaluate_many
        >>> ingredients = [{'w': jnp.array(1.0)}, {'w': jnp.array(3.0)}]
        >>> evaluate_many(lambda p, x: p['w'] * x, ingredients, jnp.array([1.0, 2.0])).tolist()
        [[1.0, 2.0], [3.0, 6.0]]
    """
    ingredients = list(ingredients)
    if not ingredients:
        raise ValueError("evaluate_many needs at least one ingredient.")
    return jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))(_stack(ingredients), data)


def ensemble(apply_fn: Callable, ingredients: Sequence) -> Callable:
    """The logit ensemble baseline: ``x -> mean_k apply_fn(theta_k, x)`` (K forward passes per input).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.soup import ensemble
        >>> predict = ensemble(lambda p, x: p['w'] * x, [{'w': jnp.array(1.0)}, {'w': jnp.array(3.0)}])
        >>> predict(jnp.array([1.0, 2.0])).tolist()
        [2.0, 4.0]
    """
    ingredients = list(ingredients)
    if not ingredients:
        raise ValueError("ensemble needs at least one ingredient.")
    stacked = _stack(ingredients)

    @jax.jit
    def predict(x):
        return jnp.mean(jax.vmap(apply_fn, in_axes=(0, None))(stacked, x), axis=0)

    return predict
