"""Bad and edge inputs for the weight-space tools: soups, ensembles, landscape, similarity, criticality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtransfer import criticality, landscape, merge, similarity, soup

RNG = np.random.default_rng(0)


def _tree(seed=0, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, 2)), dtype), "b": jnp.asarray(r.normal(size=2), dtype)}


A, B, C3 = _tree(0), _tree(1), _tree(2)
NAN = {"w": A["w"].at[0, 0].set(jnp.nan), "b": A["b"]}
INF = {"w": A["w"], "b": A["b"].at[1].set(jnp.inf)}
WIDE = {"w": jnp.zeros((3, 1)), "b": A["b"]}  # (3, 1) broadcasts against (3, 2)
ROW = {"w": jnp.zeros((1, 2)), "b": A["b"]}
F64 = {"w": A["w"].astype(jnp.float16), "b": A["b"]}
OTHER = {"w": A["w"], "c": A["b"]}
X = jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)
DATA = (X, jnp.asarray(RNG.normal(size=(8, 2)), jnp.float32))


def _loss(p, data):
    x, y = data
    return jnp.mean(jnp.square(x @ p["w"] + p["b"][None, :] - y))


def _apply(p, x):
    return x @ p["w"] + p["b"][None, :]


BAD_PAIRS = [
    ("NaN leaf", NAN, "leaf \\['w'\\] contains NaN or Inf"),
    ("Inf leaf", INF, "leaf \\['b'\\] contains NaN or Inf"),
    ("broadcastable shape", WIDE, r"leaf \['w'\]: shape \(3, 1\) differs from \(3, 2\)"),
    ("row shape", ROW, r"leaf \['w'\]: shape \(1, 2\) differs from \(3, 2\)"),
    ("dtype", F64, r"leaf \['w'\]: dtype float16 differs from float32"),
    ("structure", OTHER, "different tree structure"),
]
CALLS = {
    "uniform_soup": lambda t: soup.uniform_soup([A, t]),
    "uniform_soup (generator)": lambda t: soup.uniform_soup(x for x in (A, t)),
    "greedy_soup": lambda t: soup.greedy_soup([A, t], lambda p: 0.0),
    "learned_soup": lambda t: soup.learned_soup([A, t], _loss, DATA, steps=1),
    "evaluate_many": lambda t: soup.evaluate_many(_apply, [A, t], X),
    "ensemble": lambda t: soup.ensemble(_apply, [A, t]),
    "interpolate": lambda t: landscape.interpolate(A, t, 0.5),
    "linear_path": lambda t: landscape.linear_path(_loss, A, t, DATA, num=3),
    "plane(points)": lambda t: landscape.plane(_loss, A, DATA, points=(B, t), grid=(2, 2)),
    "plane(directions)": lambda t: landscape.plane(_loss, A, DATA, directions=(t, B), grid=(2, 2)),
    "param_distance": lambda t: similarity.param_distance(A, t),
    "criticality": lambda t: criticality.module_criticality(_loss, A, t, DATA, {"w": "w"}, num_samples=1),
    "soup_diagnostics": lambda t: soup.soup_diagnostics([A, t], _loss, DATA, num=3),
    "wise_ft": lambda t: merge.wise_ft(A, t, 0.5),
    "task_vector": lambda t: merge.task_vector(A, t),
    "ties_merge": lambda t: merge.ties_merge(A, [B, t]),
    "dare": lambda t: merge.dare(A, t, density=0.5, key=jax.random.key(0)),
    "dare_ties": lambda t: merge.dare_ties(A, [t], density=0.5, key=jax.random.key(0)),
    "project_trajectory": lambda t: landscape.project_trajectory([t, A], (B, C3)),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(("case", "other", "match"), BAD_PAIRS, ids=[c[0] for c in BAD_PAIRS])
def test_mismatched_or_non_finite_pytrees_raise_naming_the_leaf(call, case, other, match):
    with pytest.raises(ValueError, match=match):
        CALLS[call](other)


@pytest.mark.parametrize("call", ["uniform_soup", "linear_path", "param_distance", "criticality", "interpolate"])
def test_a_non_finite_first_pytree_raises_too(call):
    first = {
        "uniform_soup": lambda: soup.uniform_soup([NAN, A]),
        "linear_path": lambda: landscape.linear_path(_loss, NAN, A, DATA, num=3),
        "param_distance": lambda: similarity.param_distance(NAN, A),
        "criticality": lambda: criticality.module_criticality(_loss, NAN, A, DATA, {"w": "w"}, num_samples=1),
        "interpolate": lambda: landscape.interpolate(NAN, A, 0.5),
    }[call]
    with pytest.raises(ValueError, match=r"leaf \['w'\] contains NaN or Inf"):
        first()


PY_FLOATS = [
    ("python floats", [{"w": 1.0, "v": [2.0, 4.0]}, {"w": 3.0, "v": [0.0, 0.0]}], {"w": 2.0, "v": [1.0, 2.0]}),
    ("numpy floats", [{"w": np.float64(1.0)}, {"w": np.float64(2.0)}], {"w": 1.5}),
    ("numpy arrays", [{"w": np.ones(2, np.float32)}, {"w": np.zeros(2, np.float32)}], {"w": [0.5, 0.5]}),
    ("tuples", [{"w": (1.0, 3.0)}, {"w": (3.0, 5.0)}], {"w": (2.0, 4.0)}),
]


@pytest.mark.parametrize(("case", "ingredients", "expected"), PY_FLOATS, ids=[c[0] for c in PY_FLOATS])
def test_python_and_numpy_float_leaves_are_averaged(case, ingredients, expected):
    out = soup.uniform_soup(ingredients)
    got = jax.tree.map(lambda x: np.asarray(x).tolist(), out)
    assert got == expected


def test_integer_leaves_come_from_the_first_ingredient():
    out = soup.uniform_soup([{"w": A["w"], "step": 3}, {"w": B["w"], "step": 7}])
    assert out["step"] == 3
    np.testing.assert_allclose(out["w"], (np.asarray(A["w"]) + np.asarray(B["w"])) / 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_the_mean_of_finite_values_near_the_largest_float_is_finite(dtype):
    big = float(jnp.finfo(dtype).max) * 0.75
    ings = [{"w": jnp.full((2,), big, dtype)} for _ in range(4)]
    out = soup.uniform_soup(ings)["w"]
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float64), big, rtol=1e-2)
    mixed = soup.uniform_soup([{"w": jnp.full((2,), big, dtype)}, {"w": jnp.full((2,), -big, dtype)}])["w"]
    np.testing.assert_allclose(np.asarray(mixed, np.float64), 0.0, atol=float(jnp.finfo(dtype).eps) * big)


SCORES_BAD = [
    ("evaluate NaN", lambda: soup.greedy_soup([A, B], lambda p: float("nan")), ValueError,
     r"evaluate\(ingredient 0\) is nan"),
    ("evaluate NaN later", lambda: soup.greedy_soup([A, B], lambda p: float("nan") if p is not A else 1.0),
     ValueError, "is nan"),
    ("evaluate Inf", lambda: soup.greedy_soup([A, B], lambda p: float("inf")), ValueError, "is inf"),
    ("evaluate string", lambda: soup.greedy_soup([A, B], lambda p: "good"), TypeError, "must be a real number"),
    ("evaluate None", lambda: soup.greedy_soup([A, B], lambda p: None), TypeError, "must be a real number"),
    ("evaluate not callable", lambda: soup.greedy_soup([A, B], 3), TypeError, "evaluate must be a callable"),
    ("held-out NaN", lambda: soup.greedy_soup([A, B], lambda p: 0.0, held_out_scores=[1.0, float("nan")]),
     ValueError, r"held_out_scores\[1\] is nan"),
    ("held-out count", lambda: soup.greedy_soup([A, B], lambda p: 0.0, held_out_scores=[1.0]), ValueError,
     "1 held_out_scores for 2 ingredients"),
    ("greedy empty", lambda: soup.greedy_soup([], lambda p: 0.0), ValueError, "at least one ingredient"),
    ("uniform empty", lambda: soup.uniform_soup([]), ValueError, "at least one ingredient"),
    ("uniform empty generator", lambda: soup.uniform_soup(iter([])), ValueError, "at least one ingredient"),
    ("learned empty", lambda: soup.learned_soup([], _loss, DATA), ValueError, "at least one ingredient"),
    ("learned steps<0", lambda: soup.learned_soup([A, B], _loss, DATA, steps=-5), ValueError,
     "steps must be an integer >= 0"),
    ("learned steps float", lambda: soup.learned_soup([A, B], _loss, DATA, steps=2.5), ValueError,
     "steps must be an integer >= 0"),
    ("learned steps bool", lambda: soup.learned_soup([A, B], _loss, DATA, steps=True), ValueError,
     "steps must be an integer"),
    ("learned NaN loss", lambda: soup.learned_soup([A, B], lambda p, d: jnp.nan * _loss(p, d), DATA, steps=2),
     FloatingPointError, "learned-soup loss became non-finite"),
    ("evaluate_many empty", lambda: soup.evaluate_many(_apply, [], X), ValueError, "at least one ingredient"),
    ("ensemble empty", lambda: soup.ensemble(_apply, []), ValueError, "at least one ingredient"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), SCORES_BAD, ids=[c[0] for c in SCORES_BAD])
def test_soup_scores_counts_and_steps_are_validated(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_learned_soup_with_no_steps_is_the_uniform_soup():
    mixed, weights = soup.learned_soup([A, B, C3], _loss, DATA, steps=0)
    np.testing.assert_allclose(weights, np.full(3, 1 / 3), rtol=1e-6)
    for got, want in zip(jax.tree.leaves(mixed), jax.tree.leaves(soup.uniform_soup([A, B, C3])), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_greedy_soup_does_not_mutate_and_keeps_the_best():
    before = jax.tree.map(np.array, [A, B])
    scores = {0: 1.0, 1: 0.5}
    result = soup.greedy_soup([A, B], lambda p: 0.0, held_out_scores=[scores[0], scores[1]])
    assert result.chosen[0] == 0
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves([A, B]), strict=True):
        np.testing.assert_array_equal(x, y)


LANDSCAPE_BAD = [
    ("lam NaN", lambda: landscape.interpolate(A, B, float("nan")), ValueError, "lam must be finite"),
    ("lam Inf", lambda: landscape.interpolate(A, B, float("inf")), ValueError, "lam must be finite"),
    ("lams NaN", lambda: landscape.linear_path(_loss, A, B, DATA, lams=[0.0, float("nan"), 1.0]), ValueError,
     "lams must be finite"),
    ("lams empty", lambda: landscape.linear_path(_loss, A, B, DATA, lams=[]), ValueError, "non-empty 1-D"),
    ("lams 2-D", lambda: landscape.linear_path(_loss, A, B, DATA, lams=[[0.0, 1.0]]), ValueError, "non-empty 1-D"),
    ("lams outside", lambda: landscape.linear_path(_loss, A, B, DATA, lams=[-0.5, 1.0]), ValueError,
     "pass extrapolate=True"),
    ("num=1", lambda: landscape.linear_path(_loss, A, B, DATA, num=1), ValueError, "num must be an integer >= 2"),
    ("num=2.5", lambda: landscape.linear_path(_loss, A, B, DATA, num=2.5), ValueError, "num must be an integer"),
    ("chunk=0", lambda: landscape.linear_path(_loss, A, B, DATA, num=3, chunk=0), ValueError,
     "chunk must be a positive integer"),
    ("NaN loss", lambda: landscape.linear_path(lambda p, d: jnp.nan * _loss(p, d), A, B, DATA, num=3),
     FloatingPointError, "the loss along the path is NaN at 3 of 3 points"),
    ("vector loss", lambda: landscape.linear_path(lambda p, d: p["b"], A, B, DATA, num=3), ValueError,
     "loss_fn must return a scalar"),
    ("barrier short losses", lambda: landscape.barrier(landscape.Path(np.linspace(0, 1, 5), np.ones(3))), ValueError,
     "a loss per coefficient"),
    ("barrier NaN", lambda: landscape.barrier(landscape.Path(np.linspace(0, 1, 3), np.array([1, np.nan, 1]))),
     ValueError, "must be finite"),
    ("barrier no endpoint", lambda: landscape.barrier(landscape.Path(np.array([0.2, 0.5]), np.ones(2))), ValueError,
     "must include the endpoints"),
    ("plane both", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), directions=(B, C3)), ValueError,
     "exactly one of"),
    ("plane neither", lambda: landscape.plane(_loss, A, DATA), ValueError, "exactly one of"),
    ("plane one point", lambda: landscape.plane(_loss, A, DATA, points=(B,)), ValueError, "must be a pair"),
    ("plane grid 0", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), grid=(0, 3)), ValueError,
     "grid must be two positive integers"),
    ("plane grid float", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), grid=(2.5, 3)), ValueError,
     "grid must be two positive integers"),
    ("plane grid 1-D", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), grid=(3,)), ValueError,
     "grid must be two"),
    ("plane span NaN", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), span=(float("nan"), 1.0)),
     ValueError, "span must be two finite numbers"),
    ("plane span reversed", lambda: landscape.plane(_loss, A, DATA, points=(B, C3), span=(1.0, -1.0)), ValueError,
     "low < high"),
    ("plane NaN loss", lambda: landscape.plane(lambda p, d: jnp.nan * _loss(p, d), A, DATA, points=(B, C3),
     grid=(2, 2)), FloatingPointError, "the loss over the plane is NaN at 4 of 4 points"),
    ("directions normalize", lambda: landscape.random_directions(A, jax.random.key(0), normalize="l2"), ValueError,
     "normalize must be"),
    ("directions NaN", lambda: landscape.random_directions(NAN, jax.random.key(0)), ValueError,
     r"theta, leaf \['w'\] contains NaN"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), LANDSCAPE_BAD, ids=[c[0] for c in LANDSCAPE_BAD])
def test_landscape_inputs_are_validated(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_interpolation_endpoints_are_exact_and_the_midpoint_is_the_mean():
    path = landscape.linear_path(_loss, A, B, DATA, num=3)
    assert path.losses[0] == pytest.approx(float(_loss(A, DATA)), rel=1e-6)
    assert path.losses[-1] == pytest.approx(float(_loss(B, DATA)), rel=1e-6)
    mid = landscape.interpolate(A, B, 0.5)
    np.testing.assert_allclose(mid["w"], (np.asarray(A["w"]) + np.asarray(B["w"])) / 2, rtol=1e-6)


def test_barrier_of_a_convex_path_is_zero_and_of_a_bump_its_height():
    lams = np.linspace(0, 1, 5)
    assert landscape.barrier(landscape.Path(lams, 1 + lams)) == pytest.approx((0.0, 0.0), abs=1e-12)
    bump = 1 + np.array([0, 0, 2.0, 0, 0])
    assert landscape.barrier(landscape.Path(lams, bump)) == pytest.approx((2.0, 0.5))


Xf = RNG.normal(size=(20, 5))
Yf = Xf @ RNG.normal(size=(5, 3))
SIM_BAD = [
    ("constant x", lambda: similarity.cka(np.ones((20, 5)), Yf), ValueError, "x is constant"),
    ("zero y", lambda: similarity.cka(Xf, np.zeros((20, 3))), ValueError, "y is constant"),
    ("constant x rbf", lambda: similarity.cka(np.ones((20, 5)), Yf, kernel="rbf"), ValueError, "x is constant"),
    ("rows", lambda: similarity.cka(Xf, Yf[:-1]), ValueError, "same samples: 20 vs 19 rows"),
    ("NaN x", lambda: similarity.cka(np.where(np.eye(20, 5) > 0, np.nan, Xf), Yf), ValueError, "x contains 5 NaN"),
    ("1-D y", lambda: similarity.cka(Xf, Yf[:, 0]), ValueError, "y must be a 2-D array"),
    ("kernel", lambda: similarity.cka(Xf, Yf, kernel="poly"), ValueError, "kernel must be 'linear' or 'rbf'"),
    ("sigma 0", lambda: similarity.cka(Xf, Yf, kernel="rbf", sigma_fraction=0), ValueError, "sigma_fraction"),
    ("batches not pairs", lambda: similarity.minibatch_cka([(Xf, Yf, Xf)]), ValueError, "must yield pairs"),
    ("batches arrays", lambda: similarity.minibatch_cka([Xf]), ValueError, "batch 0 is a ndarray"),
    ("batch sizes", lambda: similarity.minibatch_cka([(Xf, Yf), (Xf[:10], Yf[:10])]), ValueError,
     "batch 1 has 10 samples; every batch must have 20"),
    ("tiny batch", lambda: similarity.minibatch_cka([(Xf[:3], Yf[:3])]), ValueError, "at least 4 samples"),
    ("no batch", lambda: similarity.minibatch_cka([]), ValueError, "at least one batch"),
    ("constant batches", lambda: similarity.minibatch_cka([(np.ones((8, 5)), Yf[:8])] * 2), ValueError,
     "unbiased HSIC of x with itself"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), SIM_BAD, ids=[c[0] for c in SIM_BAD])
def test_similarity_inputs_are_validated(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1.0, 1e10, 1e30])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_is_invariant_to_scale_and_offset_at_every_finite_scale(scale, kernel):
    # Reference: linear CKA in float64 numpy from its definition.
    def ref(x, y):
        x, y = x - x.mean(0), y - y.mean(0)
        return np.sum((y.T @ x) ** 2) / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))

    base = float(similarity.cka(Xf, Yf, kernel=kernel))
    if kernel == "linear":
        assert base == pytest.approx(ref(Xf, Yf), rel=1e-5)
    got = float(similarity.cka(Xf * scale, Yf * scale + 3 * scale, kernel=kernel))
    assert got == pytest.approx(base, rel=1e-5)


def test_cka_of_a_representation_with_itself_is_one():
    assert float(similarity.cka(Xf, Xf)) == pytest.approx(1.0, rel=1e-6)
    assert float(similarity.cka(Xf, 2 * Xf @ np.linalg.qr(RNG.normal(size=(5, 5)))[0])) == pytest.approx(1.0, rel=1e-5)


CRIT_BAD = [
    ("num_samples=0", dict(num_samples=0), ValueError, "num_samples must be a positive integer"),
    ("num_samples=1.5", dict(num_samples=1.5), ValueError, "num_samples must be a positive integer"),
    ("sigma 0", dict(sigmas=[0.0, 1.0]), ValueError, "sigmas must be a non-empty 1-D array of finite values > 0"),
    ("sigma negative", dict(sigmas=[-1.0]), ValueError, "sigmas must be"),
    ("sigma NaN", dict(sigmas=[np.nan]), ValueError, "sigmas must be"),
    ("sigmas empty", dict(sigmas=[]), ValueError, "sigmas must be a non-empty"),
    ("alphas empty", dict(alphas=[]), ValueError, "alphas must be a non-empty"),
    ("alphas NaN", dict(alphas=[0.0, np.nan]), ValueError, "alphas must be"),
    ("eps negative", dict(eps=-0.1), ValueError, "eps must be a finite number >= 0"),
    ("eps NaN", dict(eps=float("nan")), ValueError, "eps must be a finite number"),
    ("chunk 0", dict(chunk=0), ValueError, "chunk must be a positive integer"),
    ("modules empty", dict(modules={}), ValueError, "modules must be a non-empty mapping"),
    ("modules list", dict(modules=["w"]), ValueError, "modules must be a non-empty mapping"),
    ("module selects nothing", dict(modules={"x": "nothing"}), ValueError, "module 'x' selects no floating-point"),
    ("loss NaN", dict(loss=lambda p, d: jnp.nan * _loss(p, d)), FloatingPointError, "the final loss"),
    ("loss zero", dict(loss=lambda p, d: 0.0 * _loss(p, d)), ValueError, "needs a positive loss"),
    ("loss NaN on the grid", dict(loss=lambda p, d: jnp.where(jnp.abs(p["w"][0, 0] - B["w"][0, 0]) > 1e-3, jnp.nan,
     _loss(p, d))), FloatingPointError, "the perturbed loss is NaN at alpha="),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kwargs", "error", "match"), CRIT_BAD, ids=[c[0] for c in CRIT_BAD])
def test_criticality_inputs_are_validated(case, kwargs, error, match):
    kwargs = dict(kwargs)
    loss = kwargs.pop("loss", _loss)
    modules = kwargs.pop("modules", {"w": "w"})
    kwargs.setdefault("num_samples", 2)
    with pytest.raises(error, match=match):
        criticality.module_criticality(loss, A, B, DATA, modules, **kwargs)


def test_a_module_that_never_moved_has_criticality_zero():
    final = {"w": A["w"], "b": B["b"]}
    crit = criticality.module_criticality(_loss, A, final, DATA, {"w": "w", "b": "b"}, num_samples=2)
    assert crit.to_dict()["w"] == 0.0
    assert crit.to_dict()["b"] > 0.0
