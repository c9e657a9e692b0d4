import json

import matplotlib
import numpy as np
import pytest
import scipy.stats

from jaxtransfer import Ranking, logme, rank, weighted_tau
from tests.score._data import classification, source_probs

matplotlib.use("Agg")


def _zoo():
    out = {}
    for name, sep in [("weak", 0.2), ("strong", 3.0), ("medium", 1.0)]:
        f, y = classification(0, n=150, d=6, c=3, separation=sep)
        out[name] = f
    return out, y


def test_rank_sorts_best_first_and_matches_the_score():
    zoo, y = _zoo()
    r = rank(zoo, y)
    assert r.models == ("strong", "medium", "weak")
    assert r.best == "strong" and len(r) == 3 and r.primary == "logme"
    for m, v in zip(r.models, r.scores["logme"], strict=True):
        assert v == pytest.approx(float(logme(zoo[m], y)), rel=1e-6)


def test_rank_with_several_scores_and_a_callable():
    zoo, y = _zoo()

    def negative_dim(f, labels):
        return -f.shape[1]

    r = rank(zoo, y, score=["hscore", "logme", negative_dim])
    assert r.primary == "hscore"
    assert list(r.scores) == ["hscore", "logme", "negative_dim"]
    assert r.scores["hscore"] == tuple(sorted(r.scores["hscore"], reverse=True))
    assert set(r.seconds) == set(r.scores)
    text = str(r)
    assert "hscore" in text.splitlines()[0] and "strong" in text.splitlines()[1]


def test_rank_leep_and_nce_use_source_outputs():
    _, y = classification(1, n=200, c=3)
    outputs = {f"src{s}": source_probs(2, y, sharpness=s) for s in (0.0, 2.0, 8.0)}
    r = rank(outputs, y, score=["leep", "nce"])
    assert r.models == ("src8.0", "src2.0", "src0.0")


def test_rank_takes_features_and_source_outputs_per_model():
    """With a {"features", "source_probabilities"} dict per model every score reads its own input: the columns
    equal the scores of the separate arrays."""
    zoo, y = _zoo()
    probs = {name: source_probs(i, y, sharpness=2.0 * i) for i, name in enumerate(zoo)}
    both = {name: {"features": zoo[name], "source_probabilities": probs[name]} for name in zoo}
    r = rank(both, y, score=["logme", "leep", "nce"])
    by_features = rank(zoo, y, score="logme")
    by_outputs = rank(probs, y, score=["leep", "nce"])
    assert r.models == by_features.models
    for name in r.models:
        i, j = r.models.index(name), by_outputs.models.index(name)
        assert r.scores["leep"][i] == pytest.approx(by_outputs.scores["leep"][j], rel=1e-12)
        assert r.scores["nce"][i] == pytest.approx(by_outputs.scores["nce"][j], rel=1e-12)
    no_head = {**both, "headless": {"features": zoo["weak"]}}
    with pytest.raises(ValueError, match="model 'headless' has no 'source_probabilities', which score 'leep' reads"):
        rank(no_head, y, score=["logme", "leep"])
    with pytest.raises(ValueError, match=r"model 'weak': unknown entries \['probs'\]"):
        rank({"weak": {"features": zoo["weak"], "probs": probs["weak"]}}, y)


def test_rank_separates_compile_time_from_score_time():
    """The first model of a new width compiles LogME; a second model of the same width reuses it."""
    rng = np.random.default_rng(3)
    y = np.arange(90) % 3
    zoo = {"first": rng.normal(size=(90, 11)), "same_shape": rng.normal(size=(90, 11))}
    r = rank(zoo, y)
    compiled = dict(zip(r.models, r.compile_seconds["logme"], strict=True))
    assert compiled["first"] > 0.0
    assert compiled["same_shape"] < 0.1 * compiled["first"]
    assert all(t >= 0.0 for t in r.seconds["logme"])
    assert "logme_compile_seconds" in r.to_dict()["rows"][0]


def test_ranking_serialises_and_plots(tmp_path):
    zoo, y = _zoo()
    r = rank(zoo, y, score=["logme", "gbc"])
    path = tmp_path / "r.json"
    r.to_json(str(path))
    data = json.loads(path.read_text())
    assert data["primary"] == "logme"
    assert [row["model"] for row in data["rows"]] == list(r.models)
    assert data["rows"][0]["rank"] == 1 and "gbc" in data["rows"][0]
    ax = r.plot("gbc")
    assert ax.get_xlabel().startswith("gbc") and len(ax.patches) == 3
    assert "Bhattacharyya" in ax.get_xlabel()  # the registered units
    assert "ranked by gbc" in ax.get_title()
    drawn = [p.get_width() for p in ax.patches]  # bottom to top
    assert drawn == sorted(r.scores["gbc"])  # ordered by the score shown, best on top
    with pytest.raises(KeyError, match="no score 'parc'"):
        r.plot("parc")


def test_rank_errors_name_the_model():
    zoo, y = _zoo()
    zoo["broken"] = np.full((150, 6), np.nan)
    with pytest.raises(ValueError, match=r"model 'broken', score 'logme'.*NaN"):
        rank(zoo, y)
    with pytest.raises(ValueError, match="unknown score 'logmee'"):
        rank(_zoo()[0], y, score="logmee")
    with pytest.raises(ValueError, match="non-empty dict"):
        rank({}, y)
    with pytest.raises(ValueError, match=r"the scores \[.hscore.\] take class labels only"):
        rank(_zoo()[0], y.astype(float), score=["logme", "hscore"], regression=True)


def test_regression_ranking():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 5))
    t = f[:, :2] @ np.ones((2, 1)) + 0.1 * rng.normal(size=(200, 1))  # noise: an exact fit warns (its own test)
    r = rank({"informative": f, "noise": rng.normal(size=(200, 5))}, t, regression=True)
    assert r.best == "informative"


def test_weighted_tau_agrees_with_scipy_and_its_meaning():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=10), rng.normal(size=10)
    assert weighted_tau(a, b) == pytest.approx(scipy.stats.weightedtau(a, b).statistic)
    assert weighted_tau(a, 2 * a + 1) == pytest.approx(1.0)
    assert weighted_tau(a, -a) == pytest.approx(-1.0)


def test_weighted_tau_with_dicts_and_rankings():
    zoo, y = _zoo()
    r = rank(zoo, y)
    truth = {"weak": 0.4, "medium": 0.7, "strong": 0.9}
    assert weighted_tau(r, truth) == pytest.approx(1.0)
    assert weighted_tau(dict(zip(r.models, r.scores["logme"], strict=True)), truth) == pytest.approx(1.0)
    assert isinstance(r, Ranking)


@pytest.mark.parametrize(
    ("scores", "truth", "match"),
    [
        ([1.0], [1.0], "at least 2"),
        ([1.0, 2.0], [1.0], "same length"),
        ([1.0, np.nan], [1.0, 2.0], "finite"),
        ({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0}, r"different models: \['b', 'c'\]"),
        ({"a": 1.0, "b": 2.0}, [1.0, 2.0], "both be dicts"),
    ],
)
def test_weighted_tau_rejects_bad_input(scores, truth, match):
    with pytest.raises(ValueError, match=match):
        weighted_tau(scores, truth)
