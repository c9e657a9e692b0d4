"""The zoo builder (variants, source / target tasks, deterministic cached pre-training) and the selection report."""

import jax
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.data.variants import add_noise, block_shuffle, class_subset, invert, resize, rotate
from jaxtransfer.experiments import (
    SOURCE_TASKS,
    Candidate,
    ZooModel,
    build_zoo,
    model_selection,
    source_task,
    summary_table,
    target_task,
)
from jaxtransfer.experiments._zoo import _pools
from tests.score import oracle

IMAGES = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)


@settings(max_examples=10)
@given(st.integers(0, 3), st.integers(0, 100))
def test_variants_are_the_transformations_they_claim(k, seed):
    before = IMAGES.copy()
    np.testing.assert_array_equal(rotate(rotate(IMAGES, k), 4 - k), IMAGES)  # four quarter turns
    np.testing.assert_allclose(invert(invert(IMAGES)), IMAGES, atol=1e-7)  # 1 - (1 - x): one rounding each
    shuffled = block_shuffle(IMAGES, 2, seed=seed)
    np.testing.assert_array_equal(np.sort(shuffled.reshape(5, -1)), np.sort(IMAGES.reshape(5, -1)))  # same pixels
    tiles = {IMAGES[0, i : i + 4, j : j + 4].tobytes() for i in (0, 4) for j in (0, 4)}
    assert {shuffled[0, i : i + 4, j : j + 4].tobytes() for i in (0, 4) for j in (0, 4)} == tiles  # same tiles
    noisy = add_noise(IMAGES, 0.3, seed=seed)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, IMAGES)
    np.testing.assert_array_equal(IMAGES, before)  # inputs are not changed


def test_resize_and_class_subset():
    assert resize(np.ones((2, 28, 28, 1)), 8).shape == (2, 8, 8, 1)
    np.testing.assert_allclose(resize(np.full((2, 28, 28, 1), 0.25), 8), 0.25, atol=1e-6)
    x, y = class_subset(IMAGES, np.array([3, 7, 3, 1, 7]), [7, 3])
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    np.testing.assert_array_equal(x, IMAGES[[0, 1, 2, 4]])
    with pytest.raises(ValueError, match="no sample"):
        class_subset(IMAGES, np.zeros(5, int), [9])
    with pytest.raises(ValueError, match="multiple"):
        block_shuffle(IMAGES, 3)


def test_source_and_target_pools_share_no_image():
    (xs, _), (xt, _) = _pools()
    assert len(xs) + len(xt) == 1797
    source = {a.tobytes() for a in xs}
    assert not any(a.tobytes() in source for a in xt)
    for name in SOURCE_TASKS:
        x, y = source_task(name)
        assert x.shape[1:] == (8, 8, 1) and len(x) == len(y) and x.min() >= 0 and x.max() <= 1
    assert source_task("digits0-4")[1].max() == 4
    t = target_task("digits5-9")
    assert t.num_classes == 5 and t.classes == ("5", "6", "7", "8", "9")
    assert abs(len(t.splits["train"]) / len(t.y) - 0.3) < 0.02
    with pytest.raises(ValueError, match="unknown source task"):
        source_task("imagenet")
    with pytest.raises(ValueError, match="unknown target task"):
        target_task("imagenet")


def test_zoo_is_deterministic_and_cached(tmp_path):
    spec = ZooModel("tiny", "mlp", (8,), "digits0-4", 1, batch_size=64)
    assert spec.key != ZooModel("tiny", "mlp", (8,), "digits0-4", 2, batch_size=64).key  # recipe in the key
    lines = []
    (a,) = build_zoo([spec], directory=tmp_path / "one", progress=False, echo=lines.append)
    (b,) = build_zoo([spec], directory=tmp_path / "two", progress=False)  # built again from scratch
    (c,) = build_zoo([spec], directory=tmp_path / "one", progress=False, echo=lines.append)  # restored
    assert "pre-trained" in lines[0] and "restored" in lines[1] and c.info["restored"]
    for other in (b, c):
        same = jax.tree.map(np.array_equal, nnx.state(a.model, nnx.Param), nnx.state(other.model, nnx.Param))
        assert jax.tree.all(same)
    assert a.model(a.transform(IMAGES)).shape == (5, 5)
    with pytest.raises(ValueError, match="unique"):
        build_zoo([spec, spec], directory=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown arch"):
        ZooModel("x", "resnet", (1,), "digits", 1).build(3)


def test_model_selection_report_on_a_small_zoo(tmp_path):
    specs = [
        ZooModel("trained", "mlp", (32,), "digits", 10, batch_size=64),
        ZooModel("early", "mlp", (32,), "digits", 1, batch_size=64),
        ZooModel("random", "mlp", (32,), "digits", 0),
    ]
    zoo = build_zoo(specs, directory=tmp_path, progress=False)
    target = target_task("digits5-9", max_per_class=30)
    report = model_selection(zoo, {"d": target}, scores=("logme", "leep", "nce"), learning_rates=(3e-3,), epochs=3)
    t = report["targets"]["d"]
    assert set(t["candidates"]) == {"trained", "early", "random"}
    from scipy.stats import weightedtau

    truth = {n: r["ground_truth"]["accuracy"] for n, r in t["candidates"].items()}
    names = sorted(truth)
    for s in ("logme", "leep", "nce"):  # every figure of the agreement, recomputed from the report's own rows
        agr = t["agreement"][s]
        scores = {n: t["candidates"][n]["scores"][s] for n in names}
        expected_tau = weightedtau([scores[n] for n in names], [truth[n] for n in names]).statistic
        assert agr["weighted_tau"] == pytest.approx(expected_tau, abs=1e-12)
        pick = max(names, key=lambda n: scores[n])
        assert agr["pick"] == pick
        assert agr["relative_accuracy"] == pytest.approx(truth[pick] / max(truth.values()))
        assert agr["top1"] == (truth[pick] == max(truth.values()))
        spent = sum(t["candidates"][n]["extract_seconds"] + t["candidates"][n]["seconds"][s] for n in names)
        assert t["speedup"][s] == pytest.approx(t["finetune_seconds"] / spent)
    text = summary_table(report)
    assert "tau_w d" in text and "trained" in text
    with pytest.raises(ValueError, match="at least 2"):
        model_selection(zoo[:1], {"d": target})
    with pytest.raises(ValueError, match="unknown scores"):
        model_selection(zoo, {"d": target}, scores=("accuracy",), epochs=1)


def test_candidate_transform_is_applied():
    model = ZooModel("m", "mlp", (4,), "digits", 0).build(3)
    cand = Candidate("m", model, transform=lambda b: b[:, :8, :8])
    from jaxtransfer.experiments import score_features

    x, y = np.random.default_rng(0).uniform(size=(12, 28, 28, 1)).astype(np.float32), np.arange(12) % 3
    out = score_features(cand, x, y, scores=("logme",))
    # the score is LogME of the features of the transformed (cropped) images, computed here by hand
    features = np.asarray(model.features(x[:, :8, :8]), np.float64)
    assert out["dim"] == 4
    assert out["scores"]["logme"] == pytest.approx(oracle.logme(features, y), rel=1e-4)


def test_agreement_leaves_out_the_models_a_score_failed_on():
    from jaxtransfer.experiments import ranking_agreement
    from jaxtransfer.select import weighted_tau

    truth = {"a": 0.9, "b": 0.8, "c": 0.5, "d": 0.7}
    agr = ranking_agreement({"a": 1.0, "b": float("nan"), "c": 0.0, "d": 0.5}, truth)
    assert agr["failed"] == ["b"] and agr["pick"] == "a" and agr["top1"] and agr["relative_accuracy"] == 1.0
    assert agr["weighted_tau"] == weighted_tau({"a": 1.0, "c": 0.0, "d": 0.5}, {"a": 0.9, "c": 0.5, "d": 0.7})
    worse = ranking_agreement({"a": 0.0, "b": 1.0, "c": 0.5, "d": 0.2}, truth)
    assert worse["pick"] == "b" and not worse["top1"] and worse["relative_accuracy"] == pytest.approx(0.8 / 0.9)
    assert worse["regret"] == pytest.approx(0.9 - 0.8) and agr["regret"] == 0.0
    none = ranking_agreement({"a": float("nan"), "b": 1.0, "c": float("nan"), "d": float("nan")}, truth)
    assert none["pick"] is None and np.isnan(none["weighted_tau"])
