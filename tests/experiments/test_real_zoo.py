"""The real zoo for model selection: candidates, layer cuts, candidates without a source head, and the main demo
against the shipped ground truth (and a ground-truth file it must refuse)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.experiments import (
    REAL_ZOO,
    Candidate,
    load_ground_truth,
    real_zoo,
    run_real_demo,
    score_features,
)
from jaxtransfer.experiments._real_zoo import TRUTH_FILE, real_target
from jaxtransfer.models import MLP, LayerModel, load
from tests.score import oracle


def test_layer_model_is_the_backbone_cut_at_a_layer():
    resnet = load("resnet50-1by2-nsfw")
    cut = LayerModel(resnet, "stage2")
    x = jax.random.normal(jax.random.key(0), (2, 56, 56, 3))
    np.testing.assert_array_equal(np.asarray(cut.features(x)), np.asarray(resnet.layer_features(x)["stage2"]))
    assert cut(x).shape == (2, 256)  # no head: the features
    cut.head = nnx.Linear(256, 3, rngs=nnx.Rngs(0))
    assert cut(x).shape == (2, 3)
    with pytest.raises(ValueError, match="no layer 'stage9'"):
        LayerModel(resnet, "stage9")


def test_real_zoo_candidates_and_their_inputs():
    cands = real_zoo(image_size=28)
    names = [c.name for c in cands]
    assert names == [
        "efficientnet-lite0",
        "efficientnet-lite0/stage6",
        "efficientnet-lite1",
        "efficientnet-lite2",
        "vit-s14-saliency",
        "vit-s14-saliency/block6",
        "resnet50-1by2-nsfw",
        "resnet50-1by2-nsfw/stage3",
    ]
    heads = {c.name: c.source_head for c in cands}
    assert [n for n, h in heads.items() if h] == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                                                  "resnet50-1by2-nsfw"]  # fmt: skip
    grey = np.full((1, 28, 28, 1), 0.5, np.float32)
    by = {c.name: c for c in cands}
    np.testing.assert_allclose(by["efficientnet-lite0"].transform(grey)[0, 0, 0], (127.5 - 127) / 128, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(by["vit-s14-saliency"].transform(grey)[0, 0, 0], (0.5 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(by["resnet50-1by2-nsfw"].transform(grey)[0, 0, 0], 127.5 - np.array([104, 117, 123]))
    assert real_zoo(REAL_ZOO[:1], image_size=28, layers=False)[0].name == "efficientnet-lite0"
    with pytest.raises(ValueError, match="multiple of 14"):
        real_zoo(image_size=100)


def test_a_candidate_without_a_source_head_gets_no_probability_scores():
    model = MLP(4, (6,), 3, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    out = score_features(Candidate("m", model, source_head=False), x, y, scores=("logme", "leep"))
    assert np.isnan(out["scores"]["leep"]) and "has none" in out["errors"]["leep"]
    features = np.asarray(model.features(jnp.asarray(x)), np.float64)
    assert out["scores"]["logme"] == pytest.approx(oracle.logme(features, y), rel=1e-4)  # features still scored
    with_head = score_features(Candidate("m", model), x, y, scores=("leep",))
    assert np.isfinite(with_head["scores"]["leep"]) and with_head["errors"] == {}


def test_the_shipped_ground_truth_describes_the_zoo_it_was_measured_on():
    truth = load_ground_truth()
    assert truth["made_by"].startswith("python -m bench.real_zoo")
    rows = truth["targets"]["mnist"]["candidates"]
    names = {c.name for c in real_zoo(image_size=truth["config"]["image_size"])}
    assert names <= set(rows)
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy"] == max(row["grid"].values())
    assert truth["targets"]["mnist"]["n_train"] == len(real_target("mnist").part("train")[1]) == 100


def test_the_demo_refuses_a_ground_truth_that_does_not_cover_its_candidates(tmp_path):
    truth = json.loads(TRUTH_FILE.read_text())
    del truth["targets"]["mnist"]["candidates"]["resnet50-1by2-nsfw"]
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    with pytest.raises(ValueError, match=r"no fine-tuned accuracy for \['resnet50-1by2-nsfw'\]"):
        run_real_demo(zoo=REAL_ZOO[4:], small_models=(), ground_truth=path, scores=("logme",), echo=lambda s: None)
    with pytest.raises(ValueError, match="no target 'digits5-9'"):
        run_real_demo(target="digits5-9", echo=lambda s: None)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a ground-truth file"):
        load_ground_truth(tmp_path / "other.json")


def test_the_demo_agreement_matches_weighted_tau_on_the_shipped_accuracies():
    from jaxtransfer.select import weighted_tau

    lines = []
    report = run_real_demo(zoo=REAL_ZOO[4:], small_models=(), scores=("logme", "hscore"), echo=lines.append)
    t = report["targets"]["mnist"]
    truth = load_ground_truth()["targets"]["mnist"]["candidates"]
    logme = {n: r["scores"]["logme"] for n, r in t["candidates"].items()}
    acc = {n: truth[n]["accuracy"] for n in logme}
    assert t["agreement"]["logme"]["weighted_tau"] == pytest.approx(weighted_tau(logme, acc))
    pick = max(logme, key=logme.get)
    assert t["agreement"]["logme"]["regret"] == pytest.approx(max(acc.values()) - acc[pick])
    assert any(line.startswith("LogME picks") for line in lines)


def test_the_demo_can_measure_its_own_ground_truth():
    resnet = dataclasses.replace(REAL_ZOO[4], layers=())  # one real backbone: the same path as the whole zoo
    lines = []
    report = run_real_demo(zoo=(resnet,), small_models=(), scores=("logme",), ground_truth="measure",
                           measure_epochs=1, echo=lines.append)  # fmt: skip
    assert lines[-1] == "LogME ranked fewer than two candidates (failed: []): nothing to compare."
    rows = report["targets"]["mnist"]["candidates"]
    assert report["ground_truth"] == "measured here" and list(rows) == ["resnet50-1by2-nsfw"]
    assert report["targets"]["mnist"]["agreement"]["logme"]["pick"] is None  # a ranking of one compares nothing
    for row in rows.values():
        gt = row["ground_truth"]
        assert [float(k) for k in gt["grid"]] == [1e-4]  # (JSON keys: strings)
        assert gt["accuracy"] == next(iter(gt["grid"].values())) and 0 <= gt["test_accuracy"] <= 1


def test_the_demo_names_an_unknown_small_model():
    with pytest.raises(ValueError, match=r"unknown small models \['cnn99'\]"):
        run_real_demo(zoo=(), small_models=("cnn99",), echo=lambda s: None)
