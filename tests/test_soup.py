"""Soups and ensembles against numpy references; greedy/learned soup properties; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.soup import ensemble, evaluate_many, greedy_soup, learned_soup, uniform_soup


def _ingredient(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(4, 3)), dtype),
            "bias": jnp.asarray(rng.normal(size=3), dtype),
        },
        "step": jnp.asarray(seed, jnp.int32),  # an integer counter: not averaged
    }


def _apply(params, x):
    return x @ params["dense"]["kernel"] + params["dense"]["bias"][None, :]


@given(k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_uniform_soup_is_the_mean_and_order_invariant(k, seed):
    ings = [_ingredient(seed + i) for i in range(k)]
    soup = uniform_soup(ings)
    expected = np.mean([np.asarray(i["dense"]["kernel"], np.float64) for i in ings], axis=0)
    np.testing.assert_allclose(np.asarray(soup["dense"]["kernel"]), expected, rtol=1e-6, atol=1e-6)
    assert int(soup["step"]) == seed  # non-float leaves come from the first ingredient
    reversed_soup = uniform_soup(ings[::-1])
    np.testing.assert_allclose(np.asarray(reversed_soup["dense"]["bias"]), np.asarray(soup["dense"]["bias"]), atol=1e-6)


def test_streaming_equals_in_memory_and_inputs_are_not_mutated():
    ings = [_ingredient(i) for i in range(5)]
    copies = jax.tree.map(jnp.copy, ings)
    from_list = uniform_soup(ings)
    from_generator = uniform_soup(_ingredient(i) for i in range(5))
    for a, b in zip(jax.tree.leaves(from_list), jax.tree.leaves(from_generator), strict=True):
        # the same running-mean arithmetic, fused into one kernel for the list: measured <= 1 ulp apart
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7, atol=3e-7)
    for a, b in zip(jax.tree.leaves(ings), jax.tree.leaves(copies), strict=True):
        assert jnp.array_equal(a, b)


def test_bf16_in_bf16_out_accumulated_in_float32():
    ings = [_ingredient(i, jnp.bfloat16) for i in range(8)]
    soup = uniform_soup(ings)
    assert soup["dense"]["kernel"].dtype == jnp.bfloat16
    # Accumulated in float32 and rounded to bf16 once: bit-equal to the float64 mean rounded to bf16 (the float32
    # partial sums of 8 bf16 numbers are exact). Accumulating in bf16 instead rounds every partial sum: it differs.
    exact = np.mean([np.asarray(i["dense"]["kernel"], np.float64) for i in ings], axis=0)
    once = np.asarray(jnp.asarray(exact, jnp.float32).astype(jnp.bfloat16), np.float64)
    np.testing.assert_array_equal(np.asarray(soup["dense"]["kernel"], np.float64), once)
    in_bf16 = ings[0]["dense"]["kernel"]
    for i in ings[1:]:
        in_bf16 = in_bf16 + i["dense"]["kernel"]  # bf16 + bf16 -> bf16: rounded at each step
    assert not np.array_equal(np.asarray(in_bf16 / 8, np.float64), once)


def test_greedy_soup_is_never_worse_than_the_best_ingredient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    ings = [_ingredient(100 + i) if i < 3 else _ingredient(i) for i in range(8)]
    target = _apply(uniform_soup(ings[:3]), x)  # the soup of the first three is best; no single ingredient is

    def evaluate(p):
        return -float(jnp.mean(jnp.square(_apply(p, x) - target)))

    def reference(strict):  # Wortsman et al., Algorithm 1, in float64 numpy on flat parameter vectors
        flat = [np.concatenate([np.ravel(i["dense"]["kernel"]), i["dense"]["bias"]]).astype(np.float64) for i in ings]

        def score(v):
            return -np.mean((x @ v[:12].reshape(4, 3) + v[12:] - np.asarray(target, np.float64)) ** 2)

        order = sorted(range(len(flat)), key=lambda i: -score(flat[i]))
        chosen = [order[0]]
        for i in order[1:]:
            new, old = score(np.mean([flat[j] for j in [*chosen, i]], 0)), score(np.mean([flat[j] for j in chosen], 0))
            if new > old or (not strict and new >= old):
                chosen.append(i)
        return tuple(chosen), tuple(order)

    result = greedy_soup(ings, evaluate)
    assert (result.chosen, result.order) == reference(strict=True)
    assert len(result.chosen) > 1 and len(result.chosen) < len(ings)  # a real choice was made
    assert result.trace[0] == max(result.individual_scores)
    assert all(b > a or b == a for a, b in zip(result.trace, result.trace[1:], strict=False))
    assert evaluate(result.soup) == result.trace[-1] > max(result.individual_scores)
    again = greedy_soup(ings, evaluate, held_out_scores=result.individual_scores)
    assert again.chosen == result.chosen


def test_greedy_soup_strict_leaves_out_ties():
    """On a coarse metric a candidate can tie with the soup: strict (published) leaves it out, >= takes it."""
    ings = [{"w": jnp.asarray([float(v)])} for v in (1.0, 1.2, 5.0)]

    def coarse(p):  # 1 if the weight is within 0.5 of 1, else 0
        return float(abs(float(p["w"][0]) - 1.0) < 0.5)

    assert greedy_soup(ings, coarse).chosen == (0,)
    assert greedy_soup(ings, coarse, strict=False).chosen == (0, 1)
    with pytest.raises(TypeError, match="strict"):
        greedy_soup(ings, coarse, strict="yes")


def test_learned_soup():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    good, bad = _ingredient(5), _ingredient(6)
    target = _apply(good, x)

    def loss(p, data):
        return jnp.mean(jnp.square(_apply(p, data[0]) - data[1]))

    single, w = learned_soup([good], loss, (x, target), steps=5)
    assert jnp.array_equal(single["dense"]["kernel"], good["dense"]["kernel"]) and float(w[0]) == 1.0
    soup, w = learned_soup([bad, good], loss, (x, target), steps=200, optimizer=optax.adam(0.1))
    assert float(w[1]) > 0.9  # it learns to weigh the good ingredient
    assert float(loss(soup, (x, target))) < float(loss(uniform_soup([bad, good]), (x, target)))
    # The outputs are linear in theta = (1 - w) bad + w good, so for the outputs of 0.7 bad + 0.3 good the loss is
    # zero exactly at w = 0.3 and the learned weights (default optimiser AdamW, learned temperature) must get there.
    target_mid = _apply({"dense": jax.tree.map(lambda a, b: 0.7 * a + 0.3 * b, bad["dense"], good["dense"])}, x)
    _, w_learned = learned_soup([bad, good], loss, (x, target_mid), steps=400)
    assert float(w_learned[1]) == pytest.approx(0.3, abs=2e-3)
    _, per_leaf = learned_soup([bad, good], loss, (x, target), per_layer=True, steps=50)
    assert per_leaf["dense"]["kernel"].shape == (2,)


def test_ensemble_and_evaluate_many_match_a_loop():
    x = np.random.default_rng(2).normal(size=(10, 4)).astype(np.float32)
    ings = [_ingredient(i) for i in range(4)]
    outs = evaluate_many(_apply, ings, x)
    loop = np.stack([np.asarray(_apply(p, x)) for p in ings])
    np.testing.assert_allclose(np.asarray(outs), loop, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ensemble(_apply, ings)(x)), loop.mean(0), rtol=1e-5, atol=1e-6)


def test_errors_name_the_ingredient_and_leaf():
    a = _ingredient(0)
    b = _ingredient(1)
    b["dense"]["bias"] = jnp.zeros(4)
    with pytest.raises(ValueError, match=r"ingredient 1, leaf \['dense'\]\['bias'\]: shape \(4,\)"):
        uniform_soup([a, b])
    c = _ingredient(1)
    c["dense"]["kernel"] = c["dense"]["kernel"].astype(jnp.bfloat16)
    with pytest.raises(ValueError, match="dtype bfloat16 differs from float32"):
        uniform_soup([a, c])
    with pytest.raises(ValueError, match="different tree structure"):
        uniform_soup([a, {"dense": a["dense"]}])
    d = _ingredient(2)
    d["dense"]["bias"] = d["dense"]["bias"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        uniform_soup([a, d])
    for fn in (uniform_soup, lambda i: greedy_soup(i, lambda p: 0.0), lambda i: ensemble(_apply, i)):
        with pytest.raises(ValueError, match="at least one ingredient"):
            fn([])
    with pytest.raises(ValueError, match="2 held_out_scores for 1"):
        greedy_soup([a], lambda p: 0.0, held_out_scores=[1.0, 2.0])


def test_learned_soup_with_minibatches_reaches_the_full_batch_optimum():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
    ings = [_ingredient(s) for s in range(3)]
    target = 0.6 * _apply(ings[0], x) + 0.3 * _apply(ings[1], x) + 0.1 * _apply(ings[2], x)

    def loss(params, batch):
        return jnp.mean(jnp.square(_apply(params, batch[0]) - batch[1]))

    _, full = learned_soup(ings, loss, (x, target), steps=400)
    _, whole = learned_soup(ings, loss, (x, target), steps=400, batch_size=64)  # one batch = all 64, permuted
    np.testing.assert_allclose(np.asarray(whole), np.asarray(full), rtol=1e-5, atol=1e-6)
    _, mini = learned_soup(ings, loss, (x, target), steps=400, batch_size=16, seed=3)
    # the planted mixture is exact, so every minibatch has the same optimum: stochastic steps reach it too
    np.testing.assert_allclose(np.asarray(mini), [0.6, 0.3, 0.1], atol=0.02)
    np.testing.assert_allclose(np.asarray(full), [0.6, 0.3, 0.1], atol=0.02)
    with pytest.raises(ValueError, match="batch_size 65 exceeds the 64"):
        learned_soup(ings, loss, (x, target), steps=1, batch_size=65)
    with pytest.raises(ValueError, match="one leading"):
        learned_soup(ings, loss, (x, target[:10]), steps=1, batch_size=8)


def test_soup_diagnostics_by_hand():
    from jaxtransfer.soup import soup_diagnostics

    def loss(p, data):  # a double well in w[0]: basins at -1 and +1; convex in w[1]
        return jnp.square(jnp.square(p["w"][0]) - 1.0) + jnp.square(p["w"][1])

    ws = [np.array([0.9, 0.1]), np.array([1.1, -0.2]), np.array([-1.0, 0.0])]
    d = soup_diagnostics([{"w": jnp.asarray(w, jnp.float32)} for w in ws], loss, num=21)

    def by_hand(a, b):  # the barrier on a 21-point grid, in float64
        lams = np.linspace(0, 1, 21)
        f = [(((1 - t) * a + t * b)[0] ** 2 - 1) ** 2 + ((1 - t) * a + t * b)[1] ** 2 for t in lams]
        return max(f[i] - ((1 - t) * f[0] + t * f[-1]) for i, t in enumerate(lams))

    for i in range(3):
        for j in range(3):
            if i != j:
                assert d.barriers[i, j] == pytest.approx(by_hand(ws[i], ws[j]), abs=1e-5)
                assert d.distances[i, j] == pytest.approx(np.linalg.norm(ws[i] - ws[j]), rel=1e-6)
                assert d.relative_distances[i, j] == pytest.approx(
                    np.linalg.norm(ws[i] - ws[j]) / np.linalg.norm(ws[i]), rel=1e-6
                )
    np.testing.assert_allclose(d.losses, [(w[0] ** 2 - 1) ** 2 + w[1] ** 2 for w in ws], rtol=1e-5)
    assert not d.shares_basin() and d.worst_pair()[2] == pytest.approx(np.max(d.barriers))
    near = soup_diagnostics([{"w": jnp.asarray(w, jnp.float32)} for w in ws[:2]], loss, num=21)
    assert near.shares_basin(tolerance=0.5) and "barrier" in near.table()


def test_uniform_soup_fast_path_still_names_the_bad_leaf():
    good = _ingredient(0)
    bad = _ingredient(1)
    bad["dense"]["bias"] = bad["dense"]["bias"].at[1].set(jnp.inf)
    with pytest.raises(ValueError, match=r"ingredient 1, leaf \['dense'\]\['bias'\] contains NaN or Inf"):
        uniform_soup([good, bad])
    with pytest.raises(ValueError, match=r"ingredient 1, leaf \['dense'\]\['bias'\] contains NaN or Inf"):
        uniform_soup(iter([good, bad]))
    wrong = _ingredient(2)
    wrong["dense"]["kernel"] = jnp.zeros((4, 4))
    with pytest.raises(ValueError, match=r"ingredient 1, leaf \['dense'\]\['kernel'\]: shape \(4, 4\)"):
        uniform_soup([good, wrong])
