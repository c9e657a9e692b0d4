"""Model soups and logit ensembles for any pytree (Wortsman et al., "Model soups", ICML 2022).

Ingredients are pytrees of identical structure, shapes and dtypes (e.g. ``nnx.state(model, nnx.Param)`` of models
fine-tuned from one pre-trained model, Linen params, Equinox arrays, raw dicts). Only floating-point leaves are
averaged (Python and NumPy float scalars count as float leaves and come back as arrays); other leaves (integer
counters, RNG keys) are taken from the first ingredient. Averages are computed in float32 (or float64 when the
leaves are float64) as sum_k x_k / K (a list, in one compiled pass) or as the running mean
m_k = (1 - 1/k) m_{k-1} + x_k / k (an iterable), so the mean of finite values is finite even where their sum would
overflow; they are cast back, so bf16 in gives bf16 out. Ingredients holding NaN or Inf are rejected. NNX modules are
pytrees too: a list of fine-tuned models gives a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtransfer._checks import check_flag, check_positive_int, check_score
from jaxtransfer._pytree import accumulation_dtype, as_arrays, check_finite, check_same, is_float
from jaxtransfer.landscape import barrier, linear_path
from jaxtransfer.similarity import param_distance

__all__ = [
    "GreedySoup",
    "SoupDiagnostics",
    "ensemble",
    "evaluate_many",
    "greedy_soup",
    "learned_soup",
    "soup_diagnostics",
    "uniform_soup",
]


def _float_leaves(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if is_float(x)]


def _on_device(tree) -> bool:
    """Whether every float leaf is a JAX array (NumPy leaves keep NumPy arithmetic: float64 stays float64)."""
    return all(isinstance(x, jax.Array) for x in _float_leaves(tree))


def _with_floats(like, floats):
    leaves, treedef = jax.tree.flatten(like)
    it = iter(floats)
    return jax.tree.unflatten(treedef, [next(it) if is_float(x) else x for x in leaves])


def _running_step(m, x, k):
    """m_k = (1 - 1/k) m_{k-1} + x_k / k (k a float32 scalar): finite values cannot overflow."""
    return m * ((k - 1) / k).astype(m.dtype) + x.astype(m.dtype) * (1 / k).astype(m.dtype)


def _all_finite(arrays) -> jax.Array:
    # x * 0 is 0 for a finite entry and NaN for NaN or Inf: one reduction, fused with the pass that made the arrays
    return jnp.isfinite(sum(jnp.sum(a * 0) for a in arrays))


@jax.jit
def _fused_mean(ingredients: list, weights: jax.Array) -> tuple[list, jax.Array]:
    """sum_k weights[k] x_k over K lists of float leaves in one compiled pass, and whether the result is finite.

    With weights 1/K each term is scaled before the sum, so finite ingredients cannot overflow, and the mean is
    finite if and only if every ingredient is. ``weights`` (K,) is an argument indexed per ingredient, not one
    constant: XLA would factor x_1 / K + x_2 / K into (x_1 + x_2) / K, which overflows near the largest float."""
    means = []
    for j, first in enumerate(ingredients[0]):
        acc = accumulation_dtype(first.dtype)
        means.append(sum(ing[j].astype(acc) * weights[k].astype(acc) for k, ing in enumerate(ingredients)))
    finite = _all_finite(means)
    return [m.astype(x.dtype) for m, x in zip(means, ingredients[0], strict=True)], finite


@jax.jit
def _fused_update(mean: list, ingredient: list, k: jax.Array) -> tuple[list, jax.Array]:
    """One compiled step of the running mean, and whether it is still finite."""
    out = [_running_step(m, x, k) for m, x in zip(mean, ingredient, strict=True)]
    return out, _all_finite(out)


def _raise_non_finite(ingredients, what: str) -> None:
    """Names the first ingredient (and leaf) holding NaN or Inf: the slow path, run only once a mean was not finite."""
    for i, ing in enumerate(ingredients):
        check_finite(ing, f"ingredient {i}")
    raise ValueError(f"{what} is not finite although every ingredient is: report this as a bug.")


def uniform_soup(ingredients: Iterable) -> object:
    """The element-wise mean of the ingredients' floating-point leaves.

    Args:
        ingredients: a sequence, or any iterable (e.g. a generator restoring checkpoints one at a time: then at
            most the running mean and one ingredient are in memory).

    Returns:
        A pytree like the first ingredient.

    A sequence of JAX-array ingredients is averaged in one compiled pass (the finiteness check fused in); an
    iterable is a compiled running-mean update per ingredient.

    Example:
        >>> import numpy as np
        >>> from jaxtransfer.soup import uniform_soup
        >>> uniform_soup([{'w': np.array([1.0, 2.0])}, {'w': np.array([3.0, 6.0])}])['w'].tolist()
        [2.0, 4.0]

    Raises:
        ValueError: empty input, or an ingredient differing in structure, shape or dtype, or non-finite (the message
            names the ingredient and the leaf).
    """
    if isinstance(ingredients, Sequence) and len(ingredients) > 0:
        ings = [as_arrays(ing) for ing in ingredients]
        flats = [jax.tree.flatten(ing) for ing in ings]  # flattened once: NNX states are slow to flatten
        floats = [[x for x in leaves if is_float(x)] for leaves, _ in flats]
        if all(isinstance(x, jax.Array) for fl in floats for x in fl):
            ref_leaves, ref_def = flats[0]
            for i, (leaves, treedef) in enumerate(flats):
                if treedef != ref_def or any(
                    np.shape(a) != np.shape(b) or getattr(a, "dtype", None) != getattr(b, "dtype", None)
                    for a, b in zip(ref_leaves, leaves, strict=True)
                ):
                    check_same(ings[0], ings[i], i, finite=False)  # raises, naming the leaf
            means, finite = _fused_mean(floats, jnp.full(len(floats), 1 / len(floats), jnp.float32))
            if not bool(finite):
                _raise_non_finite(ings, "the soup")
            it = iter(means)
            return jax.tree.unflatten(ref_def, [next(it) if is_float(x) else x for x in ref_leaves])
    first, mean = None, None
    for i, ingredient in enumerate(ingredients):
        ingredient = as_arrays(ingredient)
        first = ingredient if first is None else first
        if _on_device(ingredient) and mean is not None and _on_device(mean):
            check_same(first, ingredient, i, finite=False)
            floats, ok = _fused_update(_float_leaves(mean), _float_leaves(ingredient), jnp.asarray(i + 1, jnp.float32))
            if not bool(ok):
                check_finite(ingredient, f"ingredient {i}")
                raise ValueError(f"the running mean is not finite after ingredient {i}.")
            mean = _with_floats(mean, floats)
            continue
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
        return jax.tree.map(lambda x: x.astype(accumulation_dtype(x.dtype)) if is_float(x) else x, ingredient)
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
        scores = [check_score(evaluate(as_arrays(ingredients[i])), f"evaluate(ingredient {i})") for i in range(k)]
    else:
        scores = [check_score(s, f"held_out_scores[{i}]") for i, s in enumerate(held_out_scores)]
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
        score = check_score(evaluate(candidate), f"evaluate(soup + ingredient {i})")
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
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[object, object]:
    """Learned soup: mixing weights softmax(logits / temperature) optimised on held-out data.

    theta(alpha, t) = sum_k softmax(alpha / t)_k theta_k, with one logit per ingredient (``per_layer=False``) or one
    per ingredient per leaf ("by layer", as published) and one learned temperature t = exp(-s) shared by all
    leaves (as published; it lets one step size move sharp and flat mixtures alike), optimised with ``optimizer``
    (default ``optax.adamw(0.1)``, as published) for ``steps`` steps of ``loss_fn(theta, batch)``: full-batch
    (``batch = data``), or with ``batch_size`` minibatches of that many examples drawn without replacement (a fresh
    permutation of ``data``'s leading axis each epoch, from ``seed``), as the paper trains it on a held-out split too
    large for one step. The logits start at 0 (the uniform soup) and t at 1.

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
            acc = sum(wl[j] * leaves[j].astype(accumulation_dtype(leaves[0].dtype)) for j in range(k))
            return acc.astype(leaves[0].dtype)

        return jax.tree.map(combine, weights, *ingredients)

    tx = optimizer or optax.adamw(0.1)
    with jax.numpy_dtype_promotion("standard"):
        state = tx.init(logits)

    if batch_size is None:
        order = None
    else:
        n = _leading_size(data)
        check_positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} held-out examples.")
        data = jax.tree.map(jnp.asarray, data)
        order = _minibatch_order(n, batch_size, steps, seed)

    @jax.jit
    def step(logits, state, idx):
        batch = data if idx is None else jax.tree.map(lambda a: a[idx], data)
        loss, grads = jax.value_and_grad(lambda lg: loss_fn(mix(lg), batch))(logits)
        updates, state = tx.update(grads, state, logits)
        return optax.apply_updates(logits, updates), state, loss

    for i in range(steps):
        idx = None if order is None else jnp.asarray(order[i])
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with Python floats
            logits, state, loss = step(logits, state, idx)
        if not bool(jnp.isfinite(loss)):
            raise FloatingPointError("the learned-soup loss became non-finite; lower the learning rate.")
    return mix(logits), mixing_weights(logits)


def _leading_size(data) -> int:
    sizes = {int(np.shape(x)[0]) for x in jax.tree.leaves(data) if np.ndim(x) > 0}
    if len(sizes) != 1:
        raise ValueError(
            "minibatches need data whose arrays share one leading (example) axis; got leading sizes "
            f"{sorted(sizes) or 'none'}."
        )
    return sizes.pop()


def _minibatch_order(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) example indices: consecutive slices of one permutation per epoch (remainder dropped)."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch) if steps else 0
    rows = [rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size) for _ in range(epochs)]
    return np.concatenate(rows)[:steps] if rows else np.zeros((0, batch_size), np.int64)


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


@dataclasses.dataclass(frozen=True)
class SoupDiagnostics:
    """Whether ingredients share a basin, before averaging them: result of :func:`soup_diagnostics`.

    Attributes:
        losses: (K,) held-out loss of each ingredient.
        barriers: (K, K) loss barrier on the straight line between ingredients i and j (0 on the diagonal; <= 0:
            linearly connected, their average is no worse than the endpoints' mean).
        distances: (K, K) l2 distance between the ingredients' float leaves.
        relative_distances: (K, K) distances over the norm of ingredient i.

    Example:
        >>> import numpy as np
        >>> d = SoupDiagnostics(np.array([1.0, 1.1]), np.array([[0, 0.02], [0.02, 0]]), np.ones((2, 2)),
        ...                     np.ones((2, 2)))
        >>> d.shares_basin(), d.worst_pair()
        (True, (0, 1, 0.02))
    """

    losses: np.ndarray
    barriers: np.ndarray
    distances: np.ndarray
    relative_distances: np.ndarray

    def worst_pair(self) -> tuple[int, int, float]:
        """(i, j, barrier) of the highest barrier between two ingredients."""
        k = len(self.losses)
        if k < 2:
            return (0, 0, 0.0)
        i, j = np.unravel_index(int(np.argmax(self.barriers)), self.barriers.shape)
        return int(i), int(j), float(self.barriers[i, j])

    def shares_basin(self, tolerance: float = 0.05) -> bool:
        """Whether every pairwise barrier is at most ``tolerance`` x the mean ingredient loss (a soup is then
        expected to help; a large barrier means some ingredients sit in other basins and averaging them hurts)."""
        return bool(self.worst_pair()[2] <= tolerance * float(np.mean(self.losses)))

    def table(self) -> str:
        """The pairwise barriers and relative distances as text, one row per pair."""
        rows = ["  i   j   barrier   relative distance"]
        k = len(self.losses)
        for i in range(k):
            for j in range(i + 1, k):
                rows.append(f"{i:3d} {j:3d} {self.barriers[i, j]:9.4f} {self.relative_distances[i, j]:12.4f}")
        return "\n".join(rows)


def soup_diagnostics(
    ingredients: Sequence, loss_fn: Callable, data=None, *, num: int = 11, batches=None, chunk: int = 8
) -> SoupDiagnostics:
    """Pairwise loss barriers and distances of the ingredients on held-out data (K (K - 1) / 2 paths of ``num``
    points, one compiled evaluator for all): Wortsman et al. find soups help when the ingredients are fine-tuned
    from one pre-trained model and lie in one low-loss basin, which is what a small barrier shows.

    Args:
        ingredients: K >= 1 pytrees of one structure.
        loss_fn: ``(params, data) -> scalar`` held-out loss (lower is better), jit-compatible.
        data / batches: the held-out batch, or a sequence of batches (as :func:`jaxtransfer.landscape.linear_path`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.soup import soup_diagnostics
        >>> def loss(p, data):  # two basins, at w = -1 and w = 1
        ...     return jnp.square(jnp.square(p["w"]) - 1.0)
        >>> ings = [{"w": jnp.array(v)} for v in (0.9, 1.1, -1.0)]
        >>> d = soup_diagnostics(ings, loss, num=5)
        >>> d.shares_basin(), d.worst_pair()[:2]
        (False, (0, 2))
    """
    ingredients = [as_arrays(ing) for ing in ingredients]
    if not ingredients:
        raise ValueError("soup_diagnostics needs at least one ingredient.")
    for i, ing in enumerate(ingredients):
        check_same(ingredients[0], ing, i)
    k = len(ingredients)
    barriers, distances, relative = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
    losses = np.full(k, np.nan)
    for i in range(k):
        for j in range(i + 1, k):
            path = linear_path(loss_fn, ingredients[i], ingredients[j], data, num=num, batches=batches, chunk=chunk)
            losses[i], losses[j] = path.losses[0], path.losses[-1]
            barriers[i, j] = barriers[j, i] = barrier(path)[0]
            dist_ij = param_distance(ingredients[i], ingredients[j], per_leaf=False)
            dist_ji = param_distance(ingredients[j], ingredients[i], per_leaf=False)
            distances[i, j] = distances[j, i] = dist_ij["total"]
            relative[i, j], relative[j, i] = dist_ij["relative"], dist_ji["relative"]
    if k == 1:
        losses[0] = linear_path(loss_fn, ingredients[0], ingredients[0], data, num=2, batches=batches).losses[0]
    return SoupDiagnostics(losses, barriers, distances, relative)
