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
        assert jnp.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(ings), jax.tree.leaves(copies), strict=True):
        assert jnp.array_equal(a, b)


def test_bf16_in_bf16_out_accumulated_in_float32():
    ings = [_ingredient(i, jnp.bfloat16) for i in range(8)]
    soup = uniform_soup(ings)
    assert soup["dense"]["kernel"].dtype == jnp.bfloat16
    exact = np.mean([np.asarray(i["dense"]["kernel"], np.float64) for i in ings], axis=0)
    # One bf16 rounding of the result (8 bits of mantissa), not eight of the partial sums.
    np.testing.assert_allclose(np.asarray(soup["dense"]["kernel"], np.float64), exact, rtol=2**-8, atol=1e-2)


def test_greedy_soup_is_never_worse_than_the_best_ingredient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    target = _apply(_ingredient(100), x)
    ings = [_ingredient(100 + i) if i < 3 else _ingredient(i) for i in range(8)]

    def evaluate(p):
        return -float(jnp.mean(jnp.square(_apply(p, x) - target)))

    result = greedy_soup(ings, evaluate)
    assert result.trace[0] == max(result.individual_scores)
    assert all(b >= a for a, b in zip(result.trace, result.trace[1:], strict=False))
    assert evaluate(result.soup) >= max(result.individual_scores)
    assert result.chosen[0] == result.order[0] == 0
    again = greedy_soup(ings, evaluate, held_out_scores=result.individual_scores)
    assert again.chosen == result.chosen


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
