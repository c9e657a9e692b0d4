"""Every registered score, read from the registry: eager == jit == vmap, invariances, errors, and the registry itself.

Adding a score to the registry adds it to every test here (and to ``rank``, the CLI, the benchmark and
``bench/score_agreement.py``) with no other edit. Tolerances: jit and vmap run the same float64 computation as the
eager call, in another fusion order; the largest difference measured over these problems was 2.9e-15 relative
(jit) and 4.4e-15 (vmap, batched matmuls); the bound is 1e-13. Row permutations change the summation order only:
worst measured 3.1e-14 relative (NLEEP: EM's stopping test sees rounding), bound 1e-12.
"""

import jax
import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer.score import INPUTS, SCORES, Score, register_score

N, D, C, SOURCE_CLASSES = 90, 6, 3, 5


def _problem(seed: int, spec: Score, *, n: int = N):
    """(x, labels) for ``spec``: features with one strong direction, or source outputs correlated with the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % C
    if spec.input == "features":
        x = rng.normal(size=(n, D)) + 1.5 * np.eye(C, D)[labels]
        x[:, 0] *= 4
    else:
        logits = rng.normal(size=(n, SOURCE_CLASSES))
        logits[np.arange(n), labels] += 2.0
        x = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        if spec.input == "source_labels":
            x = x.argmax(1)
    return x, labels


NAMES = sorted(SCORES)


@pytest.mark.parametrize("name", NAMES)
def test_eager_jit_and_vmap_agree(name):
    spec = SCORES[name]
    # traced labels have no maximum: the class counts are given (hard source labels have their own)
    sizes = {"num_classes": C} | ({"num_source_classes": SOURCE_CLASSES} if spec.input == "source_labels" else {})
    with jax.enable_x64(True):
        problems = [_problem(seed, spec) for seed in range(3)]
        labels = problems[0][1]
        eager = np.array([float(spec(x, labels)) for x, _ in problems])
        jitted = np.array([float(jax.jit(lambda a: spec(a, labels, **sizes))(x)) for x, _ in problems])
        stacked = np.stack([x for x, _ in problems])
        mapped = np.asarray(jax.vmap(lambda a: spec(a, labels, **sizes))(stacked))
    assert len(set(np.round(eager, 6))) == 3  # three different problems, three different scores
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)
    np.testing.assert_allclose(mapped, eager, rtol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_rows_in_any_order_give_the_same_score(name):
    spec = SCORES[name]
    with jax.enable_x64(True):
        x, labels = _problem(4, spec)
        perm = np.random.default_rng(5).permutation(N)
        np.testing.assert_allclose(float(spec(x[perm], labels[perm])), float(spec(x, labels)), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_changed_and_bad_values_are_named(name):
    spec = SCORES[name]
    x, labels = _problem(6, spec)
    x_copy, labels_copy = x.copy(), labels.copy()
    spec(x, labels)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(labels, labels_copy)
    bad = labels.copy()
    bad[7] = C + 4  # a class id past num_classes
    with pytest.raises(ValueError, match=f"{C + 4}"):
        spec(x, bad, num_classes=C)
    if spec.input != "source_labels":
        nan = x.astype(np.float64)
        nan[3, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            spec(nan, labels)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name):
    spec = SCORES[name]
    assert spec.name == name and spec.input in INPUTS and spec.reference
    assert spec.units != "score units"  # what its values measure, for the ranking plot's axis
    assert getattr(jt, name) is spec.fn and getattr(jt.score, name) is spec.fn  # exported once, from the registry
    assert spec.fn.__doc__ and "Returns" in spec.fn.__doc__
    if spec.from_stats is not None:  # scoring from the sufficient statistics gives the score of the rows
        with jax.enable_x64(True):
            x, labels = _problem(7, spec)
            np.testing.assert_allclose(
                float(spec.from_stats(jt.logme_stats(x, labels))), float(spec(x, labels)), rtol=1e-10
            )


@pytest.mark.parametrize("name", NAMES)
def test_rank_passes_each_score_what_it_reads(name):
    spec = SCORES[name]
    x, labels = _problem(8, spec)
    given = x if spec.input == "features" else _problem(8, Score("p", spec.fn, input="source_probabilities"))[0]
    ranking = jt.rank({"m": given}, labels, score=name)
    assert ranking.scores[name] == (pytest.approx(float(spec(x, labels)), rel=1e-6),)
    if not spec.regression:
        with pytest.raises(ValueError, match="take class labels only"):
            jt.rank({"m": given}, labels.astype(float), score=name, regression=True)


def test_a_new_score_is_one_registration():
    def mean_margin(features, labels, *, num_classes=None):
        """A throwaway score. Returns the mean of the first feature."""
        return features[:, 0].mean()

    try:
        register_score(mean_margin, reference="a test")
        assert SCORES["mean_margin"].fn is mean_margin
        x, labels = _problem(9, SCORES["hscore"])
        ranking = jt.rank({"a": x, "b": x + 1}, labels, score=["mean_margin", "hscore"])
        assert ranking.best == "b" and ranking.scores["mean_margin"][0] == pytest.approx(x[:, 0].mean() + 1)
        with pytest.raises(ValueError, match="already registered"):
            register_score(name="mean_margin")(lambda f, y: 0.0)
    finally:
        from jaxtransfer.score import _registry

        _registry._SCORES.pop("mean_margin", None)


def test_registration_errors():
    with pytest.raises(ValueError, match="input must be one of"):
        register_score(lambda f, y: 0.0, input="logits")
    with pytest.raises(ValueError, match=r"class ids .* or targets"):
        register_score(lambda f, y: 0.0, classification=False)
