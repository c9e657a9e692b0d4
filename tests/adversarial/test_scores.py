"""Bad and edge inputs for every transferability score: each case asserts the exact outcome.

A bad input must raise the named error type with a message that names the argument; a valid edge case must
give the correct value (a closed form, or the value of an equivalent input).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer import score as S

RNG = np.random.default_rng(0)
N, D, C = 30, 4, 3
Y = np.arange(N) % C
F = RNG.normal(size=(N, D)) + np.eye(C)[Y] @ RNG.normal(size=(C, D))
P = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(N, 5)))), np.float64)


def _nan(a, value=np.nan):
    a = np.array(a, np.float64)
    a[0, 0] = value
    return a


FEATURE_SCORES = {
    "logme": jt.logme,
    "hscore": jt.hscore,
    "hscore_regularized": jt.hscore_regularized,
    "transrate": jt.transrate,
    "nleep": lambda f, y, **kw: jt.nleep(f, y, components_per_class=1, **kw),
    "gbc": jt.gbc,
    "sfda": jt.sfda,
    "parc": jt.parc,
    "logme_naive": lambda f, y, **kw: jt.logme(f, y, method="naive", **kw),
    "logme_stats": lambda f, y, **kw: jt.logme_stats(f, y, **kw),
    "logme_many": lambda f, y, **kw: jt.logme_many([f], y, **kw),
    "logme_sharded": jt.logme_sharded,
    "LogME.fit": lambda f, y, **kw: jt.LogME(**kw).fit(f, y),
}

BAD_FEATURES = [
    ("nan", _nan(F), ValueError, "features contains 1 NaN or Inf"),
    ("inf", _nan(F, np.inf), ValueError, "features contains 1 NaN or Inf"),
    ("-inf", _nan(F, -np.inf), ValueError, "features contains 1 NaN or Inf"),
    ("all-nan", np.full((N, D), np.nan), ValueError, f"features contains {N * D} NaN"),
    ("1-D", F[:, 0], ValueError, r"features must be a 2-D array .*\(30,\)"),
    ("3-D", F[None], ValueError, r"features must be a 2-D array .*\(1, 30, 4\)"),
    ("scalar", np.float64(1.0), ValueError, "features must be a 2-D array"),
    ("no columns", F[:, :0], ValueError, "features must have at least one feature"),
    ("complex", F.astype(complex), TypeError, "features must hold real numbers"),
    ("strings", np.full((N, D), "a"), TypeError, "features must hold real numbers"),
    ("objects", np.full((N, D), None), TypeError, "features must hold real numbers"),
    ("ragged", [[1.0, 2.0]] * (N - 1) + [[1.0]], TypeError, "features must be an array of real numbers"),
    ("rows != labels", F[:-1], ValueError, "labels has 30 entries but features has 29"),
]


@pytest.mark.parametrize("name", FEATURE_SCORES)
@pytest.mark.parametrize(("case", "features", "error", "match"), BAD_FEATURES, ids=[c[0] for c in BAD_FEATURES])
def test_bad_features_raise_naming_the_argument(name, case, features, error, match):
    if name == "logme_many":  # the list's members are named by index
        match = r"features\[0\]" + match[len("features") :] if match.startswith("features") else match
    with pytest.raises(error, match=match):
        FEATURE_SCORES[name](features, Y)


BAD_LABELS = [
    ("float", Y.astype(float), {}, TypeError, "labels must be integer class ids"),
    ("bool", Y > 0, {}, TypeError, "labels must be integer class ids"),
    ("strings", Y.astype(str), {}, TypeError, "labels must hold real numbers"),
    ("2-D", Y[:, None], {}, ValueError, r"labels must be a 1-D array .*\(30, 1\)"),
    ("short", Y[:-1], {}, ValueError, "(labels has 29 entries|but labels has 29)"),
    ("negative", np.where(Y == 0, -1, Y), {}, ValueError, "labels must be >= 0; got -1"),
    ("int8 negative", np.where(Y == 0, -128, Y).astype(np.int8), {}, ValueError, "labels must be >= 0; got -128"),
    ("above num_classes", Y, {"num_classes": 2}, ValueError, "labels must be < num_classes=2; got 2"),
    ("int64 above 2^31", np.where(Y == 2, 2**31 + 5, Y), {}, ValueError, "labels must be < .*got 2147483653"),
    ("uint32 3e9", np.where(Y == 2, 3_000_000_000, Y).astype(np.uint32), {}, ValueError, "got 3000000000"),
    ("uint64 2^63", np.where(Y == 2, 2**63, Y).astype(np.uint64), {}, ValueError, "got 9223372036854775808"),
    ("missing class", np.where(Y == 1, 2, Y), {}, ValueError, r"class\(es\) 1 of range \[0, 3\) have no samples"),
    ("missing top class", Y, {"num_classes": 4}, ValueError, r"class\(es\) 3 of range \[0, 4\) have no samples"),
    ("one class", np.zeros(N, int), {}, ValueError, "labels must contain at least 2 classes"),
    ("num_classes=1", Y % 1, {"num_classes": 1}, ValueError, "number of classes of labels must be an integer >= 2"),
    ("num_classes=2.5", Y, {"num_classes": 2.5}, ValueError, "number of classes of labels must be an integer"),
    ("num_classes='3'", Y, {"num_classes": "3"}, ValueError, "number of classes of labels must be an integer"),
]
LABEL_SCORES = {
    **{k: v for k, v in FEATURE_SCORES.items() if k != "logme_stats"},
    "leep": lambda f, y, **kw: jt.leep(P, y, **kw),
    "nce": lambda f, y, **kw: jt.nce(Y, y, **kw),
}


@pytest.mark.parametrize("name", LABEL_SCORES)
@pytest.mark.parametrize(("case", "labels", "kwargs", "error", "match"), BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_bad_labels_raise_naming_the_value_in_its_own_dtype(name, case, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        LABEL_SCORES[name](F, labels, **kwargs)


CONSTANT = [("zeros", np.zeros((N, D))), ("identical rows", np.tile(RNG.normal(size=D), (N, 1)))]


@pytest.mark.parametrize("name", ["hscore", "hscore_regularized", "transrate", "nleep", "gbc", "sfda", "parc"])
@pytest.mark.parametrize(("case", "features"), CONSTANT, ids=[c[0] for c in CONSTANT])
def test_constant_features_raise_for_the_covariance_scores(name, case, features):
    with pytest.raises(ValueError, match="features are the same for every sample"):
        FEATURE_SCORES[name](features, Y)


@pytest.mark.parametrize("name", ["logme", "logme_naive", "logme_many", "logme_sharded", "LogME.fit"])
@pytest.mark.parametrize("counts", [(10, 10, 10), (20, 5, 5), (2, 3, 25)])
def test_logme_of_zero_features_is_the_closed_form_null_evidence(name, counts):
    # F = 0: log|A| = D log a cancels the prior term, m = 0, so L = n/2 log b - b/2 ||y||^2 - n/2 log 2 pi, maximal at
    # b = n / ||y||^2 = n / n_k: LogME = mean_k 1/2 (log(n / n_k) - 1 - log 2 pi).
    y = np.repeat(np.arange(3), counts)
    n = len(y)
    expected = np.mean([0.5 * (np.log(n / k) - 1 - np.log(2 * np.pi)) for k in counts])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(np.mean(FEATURE_SCORES[name](np.zeros((n, D)), y)))
    assert value == pytest.approx(expected, abs=2e-6)


SCALE_INVARIANT = ["logme", "logme_naive", "hscore", "hscore_regularized", "parc", "logme_many", "logme_sharded"]
TRANSLATION_INVARIANT = ["hscore", "hscore_regularized", "transrate", "nleep", "gbc", "sfda"]


def _value(name, f, y=Y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.mean(FEATURE_SCORES[name](f, y, **kw)))


@pytest.mark.parametrize("name", SCALE_INVARIANT)
@pytest.mark.parametrize("scale", [2.0**-100, 1e-30, 1e-10, 1e10, 1e30, 2.0**100])
def test_scale_invariant_scores_hold_at_every_finite_scale(name, scale):
    # Power-of-two scales are exact in floating point; the others change the inputs by rounding only.
    tol = 0 if np.log2(scale) % 1 == 0 else 5e-5
    assert _value(name, F * scale) == pytest.approx(_value(name, F), rel=tol, abs=tol)


@pytest.mark.parametrize("name", TRANSLATION_INVARIANT)
@pytest.mark.parametrize("offset", [-1e6, 1e3, 1e6])
def test_translation_invariant_scores_are_exact_at_large_offsets(name, offset):
    # float64 input is centred before the cast to float32, so the offset costs nothing (before: SFDA 0.38 for 0.67).
    assert _value(name, F + offset) == pytest.approx(_value(name, F), rel=2e-5, abs=1e-6)


@pytest.mark.parametrize("name", ["transrate", "gbc", "sfda"])
@pytest.mark.parametrize("scale", [1e30])
def test_scale_dependent_scores_raise_on_overflow(name, scale):
    with pytest.raises(FloatingPointError, match=f"{name}: the score is not finite"):
        FEATURE_SCORES[name](F * scale, Y)


def test_nleep_raises_on_overflow():
    with pytest.raises(FloatingPointError, match="nleep: the principal components of the features overflow"):
        jt.nleep(F * 1e30, Y, components_per_class=1)


EQUIVALENT_INPUTS = [
    ("labels as a list", lambda: (F, list(Y))),
    ("labels uint8", lambda: (F, Y.astype(np.uint8))),
    ("labels int64", lambda: (F, Y.astype(np.int64))),
    ("features float32", lambda: (F.astype(np.float32), Y)),
    ("features as a jax array", lambda: (jnp.asarray(F, jnp.float32), jnp.asarray(Y))),
    ("features as nested lists", lambda: (F.tolist(), Y)),
]


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore_regularized", "transrate", "gbc", "sfda", "parc"])
@pytest.mark.parametrize(("case", "make"), EQUIVALENT_INPUTS, ids=[c[0] for c in EQUIVALENT_INPUTS])
def test_equivalent_inputs_give_the_same_score(name, case, make):
    f, y = make()
    assert _value(name, f, y) == pytest.approx(_value(name, F.astype(np.float32), Y), rel=1e-6, abs=1e-7)


def test_inputs_are_not_mutated():
    f, y, p = F.copy(), Y.copy(), P.copy()
    for fn in FEATURE_SCORES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(f, y)
    jt.leep(p, y)
    jt.nce(y, y)
    np.testing.assert_array_equal(f, F)
    np.testing.assert_array_equal(y, Y)
    np.testing.assert_array_equal(p, P)


OPTIONS = [
    ("logme tol=0", lambda: jt.logme(F, Y, tol=0), ValueError, "tol must be a positive finite number"),
    ("logme tol=nan", lambda: jt.logme(F, Y, tol=float("nan")), ValueError, "tol must be a positive finite"),
    ("logme tol=-1", lambda: jt.logme(F, Y, tol=-1.0), ValueError, "tol must be a positive finite"),
    ("logme tol='a'", lambda: jt.logme(F, Y, tol="a"), ValueError, "tol must be a positive finite"),
    ("logme max_iter=0", lambda: jt.logme(F, Y, max_iter=0), ValueError, "max_iter must be a positive integer"),
    ("logme max_iter=1.5", lambda: jt.logme(F, Y, max_iter=1.5), ValueError, "max_iter must be a positive integer"),
    ("logme method", lambda: jt.logme(F, Y, method="fast"), ValueError, "method must be 'optimized' or 'naive'"),
    ("logme regression='yes'", lambda: jt.logme(F, Y, regression="yes"), TypeError, "regression must be True"),
    ("logme regression=1", lambda: jt.logme(F, Y, regression=1), TypeError, "regression must be True"),
    ("target NaN", lambda: jt.logme(F, _nan(F)[:, 0], regression=True), ValueError, "targets contain NaN"),
    ("target Inf", lambda: jt.logme(F, _nan(F, np.inf)[:, :2], regression=True), ValueError, "targets contain NaN"),
    ("target zero", lambda: jt.logme(F, np.zeros(N), regression=True), ValueError, r"target column\(s\) 0 are"),
    ("target 3-D", lambda: jt.logme(F, F[:, :, None], regression=True), ValueError, r"targets must have shape \(n,\)"),
    ("target rows", lambda: jt.logme(F, F[:-1, 0], regression=True), ValueError, "targets has 29 rows"),
    ("target strings", lambda: jt.logme(F, Y.astype(str), regression=True), TypeError, "targets must hold real"),
    (
        "target + num_classes",
        lambda: jt.logme(F, F[:, 0], regression=True, num_classes=3),
        ValueError,
        "num_classes applies to classification only",
    ),
    ("gbc pca_dim=0", lambda: jt.gbc(F, Y, pca_dim=0), ValueError, "pca_dim must be a positive integer"),
    ("gbc pca_dim=2.5", lambda: jt.gbc(F, Y, pca_dim=2.5), ValueError, "pca_dim must be a positive integer"),
    ("gbc gaussian", lambda: jt.gbc(F, Y, gaussian="full"), ValueError, "gaussian must be 'diagonal' or 'spherical'"),
    ("parc pca_dim=0", lambda: jt.parc(F, Y, pca_dim=0), ValueError, "pca_dim must be an integer >= 2"),
    ("parc pca_dim=1", lambda: jt.parc(F, Y, pca_dim=1), ValueError, "pca_dim must be an integer >= 2"),
    ("parc one column", lambda: jt.parc(F[:, :1], Y), ValueError, "parc needs at least 2 feature dimensions"),
    ("nleep variance=0", lambda: jt.nleep(F, Y, variance=0), ValueError, r"variance must be in \(0, 1\]"),
    ("nleep variance=1.5", lambda: jt.nleep(F, Y, variance=1.5), ValueError, r"variance must be in \(0, 1\]"),
    ("nleep variance=nan", lambda: jt.nleep(F, Y, variance=float("nan")), ValueError, r"variance must be in"),
    ("nleep variance='a'", lambda: jt.nleep(F, Y, variance="a"), ValueError, r"variance must be in"),
    ("nleep components=0", lambda: jt.nleep(F, Y, components_per_class=0), ValueError, "components_per_class must"),
    ("nleep components>n", lambda: jt.nleep(F, Y, components_per_class=20), ValueError, "needs 60 components but"),
    ("transrate eps=0", lambda: jt.transrate(F, Y, eps=0), ValueError, "eps must be positive"),
    ("transrate eps=-1", lambda: jt.transrate(F, Y, eps=-1), ValueError, "eps must be positive"),
    ("transrate eps=nan", lambda: jt.transrate(F, Y, eps=float("nan")), ValueError, "eps must be positive"),
    ("leep negative", lambda: jt.leep(P - 0.1, Y), ValueError, "source_probs has negative entries"),
    ("leep logits", lambda: jt.leep(np.log(P), Y), ValueError, "source_probs has negative entries"),
    ("leep rows != 1", lambda: jt.leep(P * 0.5, Y), ValueError, "the rows of source_probs must sum to 1"),
    ("leep NaN", lambda: jt.leep(_nan(P), Y), ValueError, "source_probs contains 1 NaN"),
    ("leep rows", lambda: jt.leep(P[:-1], Y), ValueError, "source_probs has 29 rows but labels has 30"),
    ("leep 1-D", lambda: jt.leep(P[:, 0], Y), ValueError, "source_probs must be a 2-D array"),
    ("nce float source", lambda: jt.nce(Y.astype(float), Y), TypeError, "source_labels must be integer class ids"),
    ("nce negative source", lambda: jt.nce(Y - 1, Y), ValueError, "source_labels must be >= 0; got -1"),
    ("nce source too big", lambda: jt.nce(Y + 5, Y, num_source_classes=3), ValueError, "source_labels must be <"),
    ("nce num_source=0", lambda: jt.nce(Y, Y, num_source_classes=0), ValueError, "classes of source_labels must be"),
    ("nce source short", lambda: jt.nce(Y[:-1], Y), ValueError, "source_labels has 29 entries but labels has 30"),
    ("lw shrinkage 1 row", lambda: S.ledoit_wolf_shrinkage(F[:1]), ValueError, "features must have at least 2"),
    ("lw shrinkage NaN", lambda: S.ledoit_wolf_shrinkage(_nan(F)), ValueError, "features contains 1 NaN"),
    ("gmm components=0", lambda: S.gaussian_mixture_posteriors(F, 0), ValueError, "num_components must be"),
    ("gmm components>n", lambda: S.gaussian_mixture_posteriors(F, N + 1), ValueError, "num_components must be"),
    ("LogME unknown option", lambda: jt.LogME(bogus=1), TypeError, r"unexpected keyword argument 'bogus'"),
    ("LogME regression='no'", lambda: jt.LogME(regression="no").fit(F, Y), TypeError, "regression must be True"),
    ("LogME set bad method", lambda: jt.LogME().set_params(method="qr").fit(F, Y), ValueError, "method must be"),
    ("LogME set unknown", lambda: jt.LogME().set_params(bogus=1), ValueError, r"no parameter\(s\) \['bogus'\]"),
    ("LogME score constant", lambda: _fitted_regression().score(F, np.ones(N)), ValueError, "constant target"),
    ("LogME predict first", lambda: jt.LogME().predict(F), RuntimeError, "LogME.predict called before fit"),
    ("many empty", lambda: jt.logme_many([], Y), TypeError, "features must be a non-empty list"),
    ("many not a list", lambda: jt.logme_many(F, Y), TypeError, "features must be a non-empty list"),
    ("many mismatch", lambda: jt.logme_many([F, F[:-1]], Y), ValueError, "features.1. has 29 samples"),
    ("many NaN", lambda: jt.logme_many([F, _nan(F)], Y), ValueError, r"features\[1\] contains 1 NaN"),
    (
        "stream no num_classes",
        lambda: jt.logme_streaming([(F, Y)], progress=False),
        ValueError,
        "num_classes is required for streaming",
    ),
    ("stream empty", lambda: jt.logme_streaming([], num_classes=3, progress=False), ValueError, "yielded no chunk"),
    (
        "stream not pairs",
        lambda: jt.logme_streaming([F], num_classes=3, progress=False),
        ValueError,
        "chunk 0 must be a .features, labels. pair",
    ),
    (
        "stream NaN chunk",
        lambda: jt.logme_streaming([(F, Y), (_nan(F), Y)], num_classes=3, progress=False),
        ValueError,
        "NaN",
    ),
    (
        "stream widths",
        lambda: jt.logme_streaming([(F, Y), (F[:, :3], Y)], num_classes=3, progress=False),
        ValueError,
        "cannot merge statistics",
    ),
    (
        "merge widths",
        lambda: jt.merge_stats(jt.logme_stats(F, Y), jt.logme_stats(F[:, :3], Y)),
        ValueError,
        "cannot merge statistics of .D, K. = .4, 3. and .3, 3.",
    ),
    (
        "merge targets",
        lambda: jt.merge_stats(jt.logme_stats(F, Y), jt.logme_stats(F, Y % 2)),
        ValueError,
        "cannot merge statistics",
    ),
    (
        "stats of 1 sample",
        lambda: jt.logme_from_stats(jt.logme_stats(F[:1], Y[:1], num_classes=3)),
        ValueError,
        "the statistics cover 1 sample",
    ),
]


def _fitted_regression():
    est = jt.LogME(regression=True)
    est.fit(F, F[:, 0] + RNG.normal(size=N))
    return est


@pytest.mark.parametrize(("case", "call", "error", "match"), OPTIONS, ids=[c[0] for c in OPTIONS])
def test_bad_options_raise_naming_the_argument(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_logme_predict_checks_its_features():
    est = jt.LogME()
    est.fit(F, Y)
    with pytest.raises(ValueError, match="features has 3 columns but the model was fitted on 4"):
        est.predict(F[:, :3])
    with pytest.raises(ValueError, match="features contains 1 NaN"):
        est.predict(_nan(F))


RANKING = [
    ("unknown score", lambda: jt.rank({"a": F}, Y, score="bogus"), ValueError, "unknown score 'bogus'"),
    ("empty zoo", lambda: jt.rank({}, Y), ValueError, "features_by_model must be a non-empty dict"),
    ("zoo not a dict", lambda: jt.rank([F], Y), ValueError, "features_by_model must be a non-empty dict"),
    ("rows mismatch", lambda: jt.rank({"a": F[:-1]}, Y), ValueError, "model 'a', score 'logme': labels has 30"),
    ("NaN features", lambda: jt.rank({"a": F, "b": _nan(F)}, Y), ValueError, "model 'b'.*features contains 1 NaN"),
    (
        "regression leep",
        lambda: jt.rank({"a": F}, F[:, 0], score="leep", regression=True),
        ValueError,
        r"the scores \[.leep.\] take class labels only",
    ),
    ("tau constant", lambda: jt.weighted_tau([1, 1, 1], [1, 2, 3]), ValueError, "scores is the same for every model"),
    ("tau constant truth", lambda: jt.weighted_tau([1, 2, 3], [2, 2, 2]), ValueError, "ground_truth is the same"),
    ("tau lengths", lambda: jt.weighted_tau([1, 2], [1, 2, 3]), ValueError, "must be 1-D of the same length"),
    ("tau one model", lambda: jt.weighted_tau([1], [1]), ValueError, "needs at least 2 models"),
    ("tau NaN", lambda: jt.weighted_tau([1, np.nan, 3], [1, 2, 3]), ValueError, "must be finite"),
    ("tau Inf", lambda: jt.weighted_tau([1, 2, 3], [1, np.inf, 3]), ValueError, "must be finite"),
    ("tau strings", lambda: jt.weighted_tau(["a", "b"], [1, 2]), ValueError, "must be real numbers"),
    ("tau 2-D", lambda: jt.weighted_tau(np.ones((2, 2)), np.ones((2, 2))), ValueError, "must be 1-D"),
    ("tau dict names", lambda: jt.weighted_tau({"a": 1, "b": 2}, {"a": 1, "c": 2}), ValueError, "different models"),
    ("tau dict and list", lambda: jt.weighted_tau({"a": 1, "b": 2}, [1, 2]), ValueError, "both be dicts"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), RANKING, ids=[c[0] for c in RANKING])
def test_bad_rankings_raise(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_weighted_tau_edge_values_match_scipy():
    from scipy.stats import weightedtau

    for x, y in [([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [3, 2, 1]), ([1, 2, 2, 3], [4, 1, 3, 2])]:
        assert jt.weighted_tau(x, y) == pytest.approx(weightedtau(x, y).statistic, abs=1e-12)


CHECKED = [
    ("NaN feature", lambda f, y: (f.at[1, 0, 0].set(jnp.nan), y), "features contains NaN or Inf"),
    ("label too big", lambda f, y: (f, y.at[0, 3].set(5)), "labels must be < num_classes=3"),
    ("negative label", lambda f, y: (f, y.at[1, 3].set(-1)), "labels must be >= 0"),
    ("missing class", lambda f, y: (f, jnp.where(y == 2, 1, y)), "every class in .0, 3. of labels needs a sample"),
]


@pytest.mark.parametrize(("case", "corrupt", "match"), CHECKED, ids=[c[0] for c in CHECKED])
@pytest.mark.parametrize("name", ["logme", "hscore", "sfda", "gbc", "transrate"])
def test_checked_mode_raises_inside_jit_and_vmap(case, corrupt, match, name):
    fn = FEATURE_SCORES[name]
    run = jt.checked(lambda f, y: fn(f, y, num_classes=3), vmap_axes=0)
    f = jnp.asarray(np.stack([F, F[::-1]]), jnp.float32)
    y = jnp.asarray(np.stack([Y, Y[::-1]]))
    ok = run(f, y)
    np.testing.assert_allclose(ok, jax.vmap(lambda a, b: fn(a, b, num_classes=3))(f, y), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=match):
        run(*corrupt(f, y))


def test_plain_jit_skips_value_checks_by_design():
    f = jnp.asarray(F, jnp.float32).at[0, 0].set(jnp.nan)
    assert np.isnan(float(jax.jit(lambda a: jt.logme(a, Y, num_classes=3))(f)))


def test_checked_leep_rejects_non_probabilities_under_jit():
    run = jt.checked(lambda p, y: jt.leep(p, y, num_classes=3))
    p = jnp.asarray(P, jnp.float32)
    assert float(run(p, Y)) == pytest.approx(float(jt.leep(p, Y)), rel=1e-6)
    with pytest.raises(ValueError, match="the rows of source_probs must sum to 1"):
        run(p * 2, Y)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_streaming_logme_holds_at_every_scale_even_with_chunks_of_different_scales(scale):
    # Each chunk is rescaled by its own power of two and merged exactly: before, 1e-20 silently gave the
    # no-information value (-0.8696 for -0.8660) and 1e20 raised that the statistics were not finite.
    mixed = np.r_[F[:15], F[15:] * 1e3]
    chunks = [(F[:15] * scale, Y[:15]), (F[15:] * scale * 1e3, Y[15:])]
    value = float(jt.logme_streaming(chunks, num_classes=3, progress=False))
    assert value == pytest.approx(float(jt.logme(mixed, Y)), rel=5e-6)
