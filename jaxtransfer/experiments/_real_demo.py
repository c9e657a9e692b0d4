"""The main demo (``jaxtransfer demo``): rank the real model zoo on real MNIST digits with every score, and set the
ranking beside the accuracies that fine-tuning each candidate reached.

Scoring is what a user runs: one forward pass of the 100 labelled training images through each candidate, then
every registered score on the features (about two minutes on 2 CPU cores, most of it compiling and running the
backbones). The fine-tuned ground truth costs far more, so it ships with the package
(``real_zoo_truth.json``, measured by ``python -m bench.real_zoo``, which records its command, configuration and
machine); ``ground_truth="measure"`` re-measures it here at a CI size instead (one learning rate, few epochs: a
smoke test of the pipeline, not the shipped numbers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxtransfer.experiments._real_zoo import REAL_ZOO, TRUTH_FILE, RealBackbone, real_target, real_zoo

__all__ = ["SMALL_MODELS", "load_ground_truth", "run_real_demo"]

SMALL_MODELS = ("cnn32-digits", "mlp128-digits")
"""The project's own small models in the real zoo: weak candidates (pre-trained on 8 x 8 digits here)."""


def load_ground_truth(path: str | Path = TRUTH_FILE) -> dict:
    """The shipped fine-tuned ground truth of the real zoo (see ``bench/real_zoo.py``).

    Example:
        >>> truth = load_ground_truth()
        >>> sorted(truth)
        ['config', 'date', 'machine', 'made_by', 'targets']
    """
    with open(path) as f:
        truth = json.load(f)
    for key in ("config", "targets"):
        if key not in truth:
            raise ValueError(f"{path} is not a ground-truth file of the real zoo (no {key!r}).")
    return truth


def run_real_demo(
    *,
    target: str = "mnist",
    zoo: Sequence[RealBackbone] = REAL_ZOO,
    small_models: Sequence[str] = SMALL_MODELS,
    scores: Sequence[str] | None = None,
    ground_truth: str | Path = TRUTH_FILE,
    measure_epochs: int = 2,
    echo: Callable[[str], None] = print,
    directory: str | Path | None = None,
) -> dict:
    """Scores the real zoo on ``target`` and compares the ranking with fine-tuning (see the module docstring).

    Args:
        target: a target of ``real_target`` that the ground truth holds ("mnist" ships).
        zoo: the backbones (default ``REAL_ZOO``: 5 backbones and 3 layer cuts).
        small_models: names in ``CI_ZOO`` added as weak candidates (pre-trained here once, cached).
        scores: the registered scores to compute (default every classification score).
        ground_truth: a ground-truth file, or ``"measure"`` to fine-tune every candidate here (Adam at 1e-4, the
            rate most candidates did best at in the shipped grid, for ``measure_epochs`` epochs).
        echo: where the progress lines and the table go.
        directory: the cache of the small zoo models (default ``cache_dir() / "zoo"``).

    Returns:
        A :func:`model_selection`-shaped report (``summary_table`` prints it), plus ``"ground_truth"`` (where it
        came from) and ``"score_seconds_total"``.

    Example (one backbone and its layer, two scores, the shipped ground truth):
        >>> report = run_real_demo(zoo=REAL_ZOO[4:], small_models=(), scores=("logme", "leep"), echo=lambda s: None)
        >>> sorted(report["targets"]["mnist"]["candidates"])
        ['resnet50-1by2-nsfw', 'resnet50-1by2-nsfw/stage3']
        >>> report["targets"]["mnist"]["agreement"]["leep"]["failed"]  # a layer cut has no source classifier
        ['resnet50-1by2-nsfw/stage3']
    """
    from jaxtransfer.experiments._benchmark import (
        ALL_SCORES,
        finetune_accuracy,
        score_features,
        summarise,
        summary_table,
        target_report,
    )
    from jaxtransfer.experiments._zoo import CI_ZOO, build_zoo

    started = time.perf_counter()
    names = tuple(ALL_SCORES if scores is None else scores)
    measure = isinstance(ground_truth, str) and ground_truth == "measure"
    truth = None if measure else load_ground_truth(ground_truth)
    if truth is not None and target not in truth["targets"]:
        raise ValueError(f"the ground truth has no target {target!r}; it has {sorted(truth['targets'])}.")
    image_size = 112 if truth is None else int(truth["config"]["image_size"])
    data = real_target(target)
    x_tr, y_tr = data.part("train")
    echo(f"Target {target}: {data!r}; scores see the {len(y_tr)} training images at {image_size} px.")
    candidates = real_zoo(zoo, image_size=image_size)
    known = {m.name: m for m in CI_ZOO}
    unknown = [n for n in small_models if n not in known]
    if unknown:
        raise ValueError(f"unknown small models {unknown}; choose from {sorted(known)}.")
    if small_models:
        candidates += build_zoo([known[n] for n in small_models], directory=directory, progress=False, echo=echo)
    if truth is not None:
        shipped = truth["targets"][target]["candidates"]
        missing = [c.name for c in candidates if c.name not in shipped]
        if missing:
            raise ValueError(f"the ground truth has no fine-tuned accuracy for {missing}; re-measure it.")
        echo(f"Ground truth: {truth['made_by']} ({truth['date']}, {truth['machine']['cpu_count']} CPUs): full "
             f"fine-tuning, learning rates {truth['config']['learning_rates']}, {truth['config']['epochs']} epochs, "
             "best validation accuracy.")  # fmt: skip
    rows = {}
    for cand in candidates:
        t0 = time.perf_counter()
        row = score_features(cand, x_tr, y_tr, scores=names)
        row["wall_seconds"] = time.perf_counter() - t0
        if truth is None:
            row["ground_truth"] = finetune_accuracy(cand, data, learning_rates=(1e-4,), epochs=measure_epochs)
        else:
            row["ground_truth"] = shipped[cand.name]
        rows[cand.name] = row
        logme_value = row["scores"].get("logme", float("nan"))
        echo(f"  {cand.name:<28} D = {row['dim']:>4}  scored in {row['wall_seconds']:5.1f} s  LogME {logme_value:.4f}")
    per_target = target_report(rows, names, n_train=len(y_tr), num_classes=data.num_classes)
    accuracy = {n: r["ground_truth"]["accuracy"] for n, r in rows.items()}
    ft_seconds, agreement = per_target["finetune_seconds"], per_target["agreement"]
    report = {
        "targets": {target: per_target},
        "config": {"scores": list(names), "image_size": image_size},
        "summary": summarise({target: per_target}, names),
        "ground_truth": "measured here" if truth is None else {k: truth[k] for k in ("made_by", "date", "config")},
        "score_seconds_total": float(sum(r["wall_seconds"] for r in rows.values())),
    }
    echo(summary_table(report))
    if "logme" in names and agreement["logme"]["pick"] is None:  # one candidate, or all but one failed
        echo(f"LogME ranked fewer than two candidates (failed: {agreement['logme']['failed']}): nothing to compare.")
    elif "logme" in names:
        a = agreement["logme"]
        echo(
            f"LogME picks {a['pick']} (fine-tuned {accuracy[a['pick']]:.4f}; the best is "
            f"{max(accuracy, key=accuracy.get)} at {max(accuracy.values()):.4f}, regret {a['regret']:.4f}), "
            f"weighted tau {a['weighted_tau']:.3f}. Scoring all {len(rows)} candidates took "
            f"{report['score_seconds_total']:.0f} s; the fine-tuning grid took {ft_seconds:.0f} s"
            + ("" if truth is None else f" on the ground truth's machine ({truth['date']})")
            + f". Total {time.perf_counter() - started:.0f} s."
        )
    return json.loads(json.dumps(report, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
