"""WiSE-FT, task arithmetic, TIES and DARE against float64 NumPy oracles written from the papers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.merge import dare, dare_ties, task_arithmetic, task_vector, ties_merge, wise_ft, wise_ft_sweep


def _model(rng, scale=1.0):
    return {
        "layer": {"kernel": rng.normal(size=(5, 4)) * scale, "bias": rng.normal(size=4) * scale},
        "step": np.int32(7),  # a counter: never merged
    }


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) if np.asarray(x).dtype.kind == "f" else x, tree)


def _flat(tree):
    return np.concatenate([np.asarray(tree["layer"]["kernel"], np.float64).ravel(), np.asarray(tree["layer"]["bias"])])


def _ties_oracle(pre, fts, density, scale):
    """TIES-merging as Yadav et al. describe it, entry by entry in float64 (Python loops, no shared code)."""
    p = _flat(pre)
    taus = [_flat(f) - p for f in fts]
    trimmed = []
    for tau in taus:
        keep = math.ceil(density * tau.size)
        order = sorted(range(tau.size), key=lambda i: -abs(tau[i]))
        kept = set(order[:keep])
        trimmed.append([tau[i] if i in kept else 0.0 for i in range(tau.size)])
    merged = []
    for i in range(p.size):
        total = sum(t[i] for t in trimmed)
        sign = int(total > 0) - int(total < 0)
        agree = [t[i] for t in trimmed if t[i] != 0 and (int(t[i] > 0) - int(t[i] < 0)) == sign]
        merged.append(sum(agree) / len(agree) if agree and sign != 0 else 0.0)
    return p + scale * np.asarray(merged)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    density=st.sampled_from([0.05, 0.2, 0.5, 1.0]),
    scale=st.sampled_from([0.5, 1.0, 1.3]),
    spread=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_ties_matches_the_paper_oracle(k, density, scale, spread, seed):
    rng = np.random.default_rng(seed)
    pre = _model(rng)
    fts = [jax.tree.map(lambda p, d: p + d if np.asarray(p).dtype.kind == "f" else p, pre, _model(rng, spread))
           for _ in range(k)]  # fmt: skip
    got = ties_merge(_f32(pre), [_f32(f) for f in fts], density=density, scale=scale)
    want = _ties_oracle(_f32(pre), [_f32(f) for f in fts], density, scale)
    # float32 inputs: the task vectors are formed in float32; measured error 1.4e-7 x (1 + spread)(1 + scale) over
    # 270 drawn cases, bound 7x that
    np.testing.assert_allclose(_flat(got), want, rtol=0, atol=1e-6 * (1 + spread) * (1 + scale))
    assert int(got["step"]) == 7


def test_ties_with_density_one_and_agreeing_signs_is_the_mean():
    rng = np.random.default_rng(0)
    pre = _f32(_model(rng))
    deltas = [np.abs(rng.normal(size=(5, 4))) for _ in range(3)]  # every task moves every weight up
    fts = [{"layer": {"kernel": pre["layer"]["kernel"] + d, "bias": pre["layer"]["bias"] + 0.1 * (i + 1)},
            "step": pre["step"]} for i, d in enumerate(deltas)]  # fmt: skip
    got = ties_merge(pre, fts, density=1.0)
    np.testing.assert_allclose(
        got["layer"]["kernel"], np.asarray(pre["layer"]["kernel"], np.float64) + np.mean(deltas, 0), rtol=1e-6
    )
    np.testing.assert_allclose(got["layer"]["bias"], np.asarray(pre["layer"]["bias"], np.float64) + 0.2, rtol=1e-6)


def test_ties_trims_over_the_whole_model_not_per_leaf():
    pre = {"a": jnp.zeros(4), "b": jnp.zeros(4)}
    ft = {"a": jnp.array([10.0, 9.0, 8.0, 7.0]), "b": jnp.array([1.0, 2.0, 3.0, 4.0])}
    got = ties_merge(pre, [ft], density=0.5)  # the 4 largest of 8 are all in "a"
    assert got["a"].tolist() == [10.0, 9.0, 8.0, 7.0] and got["b"].tolist() == [0.0, 0.0, 0.0, 0.0]


@given(k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_task_arithmetic_matches_numpy(k, seed):
    rng = np.random.default_rng(seed)
    pre = _f32(_model(rng))
    fts = [_f32(_model(rng)) for _ in range(k)]
    scales = rng.uniform(-1, 1, size=k).tolist()
    got = task_arithmetic(pre, [task_vector(pre, f) for f in fts], scale=scales)
    p = _flat(pre)
    want = p + sum(s * (_flat(f) - p) for s, f in zip(scales, fts, strict=True))
    np.testing.assert_allclose(_flat(got), want, rtol=0, atol=1e-6 * k)  # float32; measured 5.3e-7 at k = 4
    negated = task_arithmetic(pre, [task_vector(pre, fts[0])], scale=-1.0)  # forgetting: theta_pre - tau
    np.testing.assert_allclose(_flat(negated), 2 * p - _flat(fts[0]), rtol=0, atol=2e-6)


def test_wise_ft_endpoints_and_sweep():
    rng = np.random.default_rng(1)
    a, b = _f32(_model(rng)), _f32(_model(rng))
    np.testing.assert_array_equal(wise_ft(a, b, 0.0)["layer"]["kernel"], a["layer"]["kernel"])
    np.testing.assert_array_equal(wise_ft(a, b, 1.0)["layer"]["kernel"], b["layer"]["kernel"])
    np.testing.assert_allclose(_flat(wise_ft(a, b, 0.3)), 0.7 * _flat(a) + 0.3 * _flat(b), rtol=1e-6, atol=1e-6)
    target = 0.6 * _flat(a) + 0.4 * _flat(b)
    sweep = wise_ft_sweep(a, b, lambda p: -float(np.sum((_flat(p) - target) ** 2)))
    assert sweep.best_alpha == pytest.approx(0.4)
    assert sweep.scores.shape == (11,) and sweep.scores[4] == sweep.scores.max()
    np.testing.assert_allclose(_flat(sweep.best), target, rtol=1e-6, atol=1e-6)


def test_dare_keeps_density_rescales_and_is_unbiased():
    n, density = 200_000, 0.3
    pre = {"w": jnp.full(n, 2.0)}
    ft = {"w": jnp.full(n, 3.0)}  # tau = 1 everywhere
    out = np.asarray(dare(pre, ft, density=density, key=jax.random.key(0))["w"], np.float64) - 2.0
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / density, rtol=1e-6)  # every kept entry is tau / density
    # Bernoulli(0.3) over 2e5 entries: the kept fraction and the mean (= E[DARE(tau)] = tau = 1) are within 5 standard
    # errors (sd of the mean: sqrt((1 - p) / (p n)) = 0.0024)
    assert abs(kept.mean() - density) < 5 * math.sqrt(density * (1 - density) / n)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt((1 - density) / (density * n))
    other = np.asarray(dare(pre, ft, density=density, key=jax.random.key(1))["w"])
    assert (other != out + 2.0).any()  # another key, another mask


def test_dare_ties_expectation_for_identical_tasks():
    # T identical task vectors tau, each dropped independently: the disjoint mean is tau / p where any copy survives,
    # 0 where none does, so E = tau / p * (1 - (1 - p)^T)
    n, p, t = 200_000, 0.5, 3
    pre, ft = {"w": jnp.zeros(n)}, {"w": jnp.ones(n)}
    out = np.asarray(dare_ties(pre, [ft] * t, density=p, key=jax.random.key(3))["w"], np.float64)
    assert set(np.unique(out).tolist()) == {0.0, 2.0}
    expected = (1 - (1 - p) ** t) / p
    assert abs(out.mean() - expected) < 5 * math.sqrt(expected * (1 / p - expected) / n)
    dense = dare_ties({"w": jnp.zeros(3)}, [{"w": jnp.array([1.0, -1.0, 2.0])}, {"w": jnp.array([3.0, 2.0, 0.0])}],
                      density=1.0, key=jax.random.key(0))  # fmt: skip
    assert dense["w"].tolist() == [2.0, 2.0, 2.0]  # density 1: TIES's election and disjoint mean, no trim


def test_dtypes_are_kept_and_inputs_are_not_mutated():
    rng = np.random.default_rng(2)
    pre = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16) if x.dtype.kind == "f" else x, _model(rng))
    ft = jax.tree.map(lambda x: (x + 0.01).astype(x.dtype) if x.dtype.kind == "f" else x, pre)
    vec = task_vector(pre, ft)
    assert vec["layer"]["kernel"].dtype == jnp.float32  # the difference of two close bf16 weights, kept in f32
    for merged in (ties_merge(pre, [ft]), task_arithmetic(pre, [vec]), wise_ft(pre, ft, 0.5),
                   dare(pre, ft, density=0.5, key=jax.random.key(0))):  # fmt: skip
        assert merged["layer"]["kernel"].dtype == jnp.bfloat16
    raw = _model(np.random.default_rng(3))
    before = _flat(raw).copy()
    ties_merge(raw, [_model(np.random.default_rng(4))], density=0.5)
    np.testing.assert_array_equal(_flat(raw), before)


def test_bad_inputs_raise_clearly():
    rng = np.random.default_rng(5)
    pre, ft = _f32(_model(rng)), _f32(_model(rng))
    with pytest.raises(ValueError, match="density"):
        ties_merge(pre, [ft], density=0.0)
    with pytest.raises(ValueError, match="density"):
        dare(pre, ft, density=1.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        ties_merge(pre, [{"layer": {"kernel": jnp.zeros((4, 5)), "bias": jnp.zeros(4)}, "step": np.int32(0)}])
    bad = jax.tree.map(lambda x: x, ft)
    bad["layer"]["bias"] = bad["layer"]["bias"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        task_vector(pre, bad)
    with pytest.raises(ValueError, match="2 scales for 1"):
        task_arithmetic(pre, [task_vector(pre, ft)], scale=[1.0, 2.0])
    with pytest.raises(TypeError, match="key"):
        dare(pre, ft, density=0.5, key=0)
    with pytest.raises(ValueError, match="at least one"):
        ties_merge(pre, [])
    with pytest.raises(TypeError, match="sequence"):
        ties_merge(pre, ft)
    with pytest.raises(ValueError, match="finite"):
        wise_ft(pre, ft, float("nan"))
    with pytest.raises(ValueError, match="NaN or Inf score"):
        wise_ft_sweep(pre, ft, lambda p: float("nan"))
