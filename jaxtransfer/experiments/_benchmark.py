"""The LogME paper's headline experiment for any zoo: fine-tune every model on every target (the ground truth),
score every model with every transferability score, and measure how well each score predicts the ground truth.

For each target task and each candidate:

- ground truth: fine-tune the whole model with a new head for each learning rate of a small grid and keep the best
  validation accuracy (as the paper does; the test accuracy of that run is recorded too), with its wall-clock cost;
- scores: the frozen model's features (and its source head's softmax outputs, for LEEP and NCE) on the target's
  training split, then every score, each timed.

Per target and score: the weighted Kendall tau against the ground truth (``weighted_tau``), whether the top-scored
model is a best fine-tuned one (top-1 hit), the ground-truth accuracy of the pick relative to the best, and the
speed-up of scoring (features + score) over fine-tuning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxtransfer.data.dataset import Dataset
from jaxtransfer.experiments._zoo import Candidate
from jaxtransfer.models import extract_features
from jaxtransfer.score import SCORES
from jaxtransfer.select import weighted_tau

__all__ = [
    "ALL_SCORES",
    "finetune_accuracy",
    "model_selection",
    "ranking_agreement",
    "score_features",
    "summarise",
    "summary_table",
    "target_report",
]

ALL_SCORES = tuple(name for name, s in SCORES.items() if s.classification)  # every registered class score


def _inputs(candidate: Candidate, x: np.ndarray) -> np.ndarray:
    return np.asarray(candidate.transform(x)) if candidate.transform is not None else np.asarray(x)


def _features_and_probs(m, b):  # module level: one compiled function per model structure, reused across calls
    return {"features": m.features(b), "probs": jax.nn.softmax(m(b), axis=-1)}


def _features_only(m, b):
    return {"features": m.features(b)}


def score_features(
    candidate: Candidate, x: np.ndarray, labels: np.ndarray, *, scores: Sequence[str] = ALL_SCORES, batch_size=256
) -> dict:
    """Every score of one candidate on labelled target data.

    Returns:
        A dict with ``scores`` (``{name: value}``), ``seconds`` (``{name: s}``), ``extract_seconds``, ``dim`` (D)
        and ``errors`` (``{name: message}``);
        the extraction (one batched, jitted pass giving the features and the source head's softmax) is timed once.
        A score that raises on this model is NaN in ``scores`` and its message is in ``errors``; so is a score that
        reads source-class probabilities when the candidate has no source head (``source_head=False``).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.experiments import Candidate, target_task, to_8x8
        >>> from jaxtransfer.models import MLP
        >>> x, y = target_task("digits5-9", max_per_class=20).part("train")
        >>> row = score_features(Candidate("mlp", MLP(64, (16,), 10, rngs=nnx.Rngs(0)), to_8x8), x, y,
        ...                      scores=("logme", "leep"))
        >>> sorted(row["scores"]), row["dim"], row["errors"]
        (['leep', 'logme'], 16, {})
    """
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown scores {unknown}; choose from {sorted(SCORES)}.")
    started = time.perf_counter()
    out = extract_features(
        candidate.model,
        _inputs(candidate, x),
        fn=_features_and_probs if candidate.source_head else _features_only,
        batch_size=batch_size,
        progress=False,
    )
    extract_seconds = time.perf_counter() - started
    values, seconds, errors = {}, {}, {}
    for name in scores:
        if SCORES[name].input != "features" and "probs" not in out:
            values[name], seconds[name] = float("nan"), 0.0
            errors[name] = f"{name} reads a source classifier's probabilities; this candidate has none."
            continue
        arg = SCORES[name].pick(features=out["features"], source_probabilities=out.get("probs"))
        started = time.perf_counter()
        try:
            values[name] = float(SCORES[name](arg, labels))
        except (ValueError, FloatingPointError) as err:  # one score failing on one model does not end the run
            values[name], errors[name] = float("nan"), f"{type(err).__name__}: {err}"
        seconds[name] = time.perf_counter() - started
    return {"scores": values, "seconds": seconds, "extract_seconds": extract_seconds, "dim": out["features"].shape[1],
            "errors": errors}  # fmt: skip


def finetune_accuracy(
    candidate: Candidate,
    target: Dataset,
    *,
    learning_rates: Sequence[float] = (1e-3, 3e-3),
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    freeze_batch_norm: bool = True,
) -> dict:
    """The ground truth for one candidate: full fine-tuning with a new head, best validation accuracy over the grid.

    BatchNorm layers keep their pre-trained statistics (``freeze_batch_norm``, see ``finetune``): with a few
    hundred target images, adapting them gave ImageNet backbones a much worse (and unrepresentative) accuracy.

    Returns:
        A dict with ``accuracy`` (the best validation accuracy), ``test_accuracy`` (the test accuracy of that run),
        ``learning_rate`` (its rate), ``grid`` (``{lr: val accuracy}``) and ``seconds`` (the wall time of all runs).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.experiments import Candidate, target_task, to_8x8
        >>> from jaxtransfer.models import MLP
        >>> candidate = Candidate("mlp", MLP(64, (16,), 10, rngs=nnx.Rngs(0)), to_8x8)
        >>> truth = finetune_accuracy(candidate, target_task("digits5-9", max_per_class=20), learning_rates=(1e-2,),
        ...                           epochs=2, batch_size=16)
        >>> truth["learning_rate"], 0 <= truth["test_accuracy"] <= 1
        (0.01, True)
    """
    import optax
    from flax import nnx

    from jaxtransfer.finetune import evaluate, finetune

    x_tr, y_tr = target.part("train")
    x_va, y_va = target.part("val")
    x_te, y_te = target.part("test")
    x_tr, x_va, x_te = (_inputs(candidate, a) for a in (x_tr, x_va, x_te))
    started = time.perf_counter()
    grid, best = {}, None
    for lr in learning_rates:
        model = nnx.clone(candidate.model)
        model.eval()
        dim = model.features(x_tr[:1]).shape[-1]
        model.head = nnx.Linear(dim, target.num_classes, rngs=nnx.Rngs(seed))
        trained, _ = finetune(model, (x_tr, y_tr), strategy="full", optimizer=optax.adam(lr), epochs=epochs,
                              batch_size=batch_size, seed=seed, progress=False,
                              freeze_batch_norm=freeze_batch_norm)  # fmt: skip
        acc = evaluate(trained, (x_va, y_va))["accuracy"]
        grid[float(lr)] = acc
        if best is None or acc > best[0]:
            best = (acc, float(lr), trained)
    test = evaluate(best[2], (x_te, y_te))["accuracy"]
    seconds = time.perf_counter() - started
    return {"accuracy": best[0], "test_accuracy": test, "learning_rate": best[1], "grid": grid, "seconds": seconds}


def ranking_agreement(scores: Mapping[str, float], truth: Mapping[str, float]) -> dict:
    """tau_w, pick, top-1, relative accuracy and regret (best accuracy - the pick's) over the models the score could
    rate (NaN: it failed on them).

    Args:
        scores: model name -> score (higher = predicted better); truth: model name -> fine-tuned accuracy.

    Returns:
        A dict with ``weighted_tau`` (:func:`jaxtransfer.select.weighted_tau`), ``pick`` (the top-scored model),
        ``top1`` (the pick is a best model), ``relative_accuracy`` (the pick's accuracy over the best),
        ``regret`` and ``failed`` (the models scored NaN, left out).

    Example:
        >>> agreement = ranking_agreement({"a": 2.0, "b": 1.0, "c": float("nan")}, {"a": 0.8, "b": 0.9, "c": 0.5})
        >>> agreement["pick"], agreement["top1"], round(agreement["regret"], 3), agreement["failed"]
        ('a', False, 0.1, ['c'])
    """
    failed = sorted(n for n, v in scores.items() if not np.isfinite(v))
    rated = {n: v for n, v in scores.items() if np.isfinite(v)}
    if len(rated) < 2:
        nan = float("nan")
        return {"weighted_tau": nan, "pick": None, "top1": False, "relative_accuracy": nan, "regret": nan,
                "failed": failed}  # fmt: skip
    pick = max(rated, key=rated.get)
    best = max(truth.values())
    return {
        "weighted_tau": weighted_tau(rated, {n: truth[n] for n in rated}),
        "pick": pick,
        "top1": bool(truth[pick] >= best),
        "relative_accuracy": truth[pick] / best,
        "regret": best - truth[pick],
        "failed": failed,
    }


def model_selection(
    candidates: Sequence[Candidate],
    targets: Mapping[str, Dataset],
    *,
    scores: Sequence[str] = ALL_SCORES,
    learning_rates: Sequence[float] = (1e-3, 3e-3),
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    freeze_batch_norm: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Runs the whole experiment (see the module docstring) and returns a JSON-ready report.

    Returns:
        A dict with ``targets`` and ``summary``. ``targets[target]`` holds ``candidates`` (per model its
        ``ground_truth``, ``scores``, ``seconds``, ``extract_seconds`` and ``dim``), ``agreement`` (per score its
        ``weighted_tau``, ``pick``, ``top1`` and ``relative_accuracy``), ``finetune_seconds`` (the total),
        ``score_seconds`` (per score, features plus score) and ``speedup`` (per score, fine-tuning over scoring
        seconds); ``summary`` holds per score the means over the targets.

    Example (two models, one fine-tuning epoch: the pipeline at toy size):
        >>> from flax import nnx
        >>> from jaxtransfer.experiments import Candidate, target_task, to_8x8
        >>> from jaxtransfer.models import MLP
        >>> zoo = [Candidate(f"mlp{w}", MLP(64, (w,), 10, rngs=nnx.Rngs(0)), to_8x8) for w in (8, 32)]
        >>> report = model_selection(zoo, {"digits5-9": target_task("digits5-9", max_per_class=20)}, scores=("logme",),
        ...                          learning_rates=(1e-2,), epochs=1, batch_size=16)
        >>> sorted(report["summary"]["logme"])
        ['mean_regret', 'mean_relative_accuracy', 'mean_weighted_tau', 'speedup', 'top1_hits']
        >>> print(summary_table(report).splitlines()[0])
        == target digits5-9: 30 training images, 5 classes ==
    """
    if len(candidates) < 2:
        raise ValueError("model selection needs at least 2 candidates.")
    report: dict = {"targets": {}, "config": {"scores": list(scores), "learning_rates": list(learning_rates),
                                             "epochs": epochs, "batch_size": batch_size, "seed": seed,
                                             "freeze_batch_norm": freeze_batch_norm}}  # fmt: skip
    for tname, target in targets.items():
        x_tr, y_tr = target.part("train")
        rows = {}
        for cand in candidates:
            row = score_features(cand, x_tr, y_tr, scores=scores)
            row["ground_truth"] = finetune_accuracy(
                cand,
                target,
                learning_rates=learning_rates,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                freeze_batch_norm=freeze_batch_norm,
            )
            rows[cand.name] = row
            if echo is not None:
                gt = row["ground_truth"]
                echo(f"[{tname}] {cand.name:<22} fine-tuned {gt['accuracy']:.4f} in {gt['seconds']:.1f} s; "
                     f"LogME {row['scores'].get('logme', float('nan')):.4f}")  # fmt: skip
        report["targets"][tname] = target_report(rows, scores, n_train=len(y_tr), num_classes=target.num_classes)
    report["summary"] = summarise(report["targets"], scores)
    return report


def target_report(rows: Mapping[str, dict], scores: Sequence[str], *, n_train: int, num_classes: int) -> dict:
    """One target's part of a report from its candidates' rows (``score_features`` plus ``"ground_truth"``):
    the agreement of each score with the fine-tuned accuracies, and the time of scoring against fine-tuning.

    Args:
        rows: model name -> {"scores": {score: value}, "seconds": {score: s}, "extract_seconds": s,
            "ground_truth": {"accuracy": a, "seconds": s}}; scores: the score names to report;
        n_train, num_classes: of the target, recorded as they are.

    Returns:
        A dict with ``agreement`` (per score, :func:`ranking_agreement`), ``finetune_seconds`` (summed over the
        models), ``score_seconds`` (per score, features plus score, summed) and ``speedup`` (their ratio).

    Example:
        >>> rows = {m: {"scores": {"logme": v}, "seconds": {"logme": 0.1}, "extract_seconds": 0.4,
        ...             "ground_truth": {"accuracy": a, "seconds": 20.0}}
        ...         for m, v, a in [("a", 1.0, 0.9), ("b", 0.0, 0.7)]}
        >>> report = target_report(rows, ["logme"], n_train=100, num_classes=5)
        >>> report["agreement"]["logme"]["pick"], report["speedup"]["logme"]
        ('a', 40.0)
    """
    truth = {n: r["ground_truth"]["accuracy"] for n, r in rows.items()}
    ft_seconds = sum(r["ground_truth"]["seconds"] for r in rows.values())
    agreement, score_seconds, speedup = {}, {}, {}
    for s in scores:
        agreement[s] = ranking_agreement({n: r["scores"][s] for n, r in rows.items()}, truth)
        score_seconds[s] = sum(r["extract_seconds"] + r["seconds"][s] for r in rows.values())
        speedup[s] = ft_seconds / score_seconds[s]
    return {"n_train": n_train, "num_classes": num_classes, "candidates": dict(rows), "agreement": agreement,
            "finetune_seconds": ft_seconds, "score_seconds": score_seconds, "speedup": speedup}  # fmt: skip


def _nanmean(values) -> float:
    """The mean of the finite values; NaN (without numpy's empty-slice warning) when there are none."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(targets: Mapping[str, dict], scores: Sequence[str]) -> dict:
    """Per score, over the targets' reports: mean tau_w, top-1 hits, mean relative accuracy, mean regret of the
    pick, and the speed-up of scoring over the fine-tuning grid (totals over the targets).

    Args:
        targets: target name -> :func:`target_report`; scores: the score names to summarise.

    Returns:
        score -> {"mean_weighted_tau", "top1_hits", "mean_relative_accuracy", "mean_regret", "speedup"}; means
        skip the targets where a score was NaN.

    Example:
        >>> agree = {"weighted_tau": 0.5, "top1": True, "relative_accuracy": 1.0, "regret": 0.0}
        >>> t = {"agreement": {"logme": agree}, "finetune_seconds": 60.0, "score_seconds": {"logme": 2.0}}
        >>> summary = summarise({"t1": t, "t2": dict(t, agreement={"logme": dict(agree, weighted_tau=float("nan"))})},
        ...                     ["logme"])
        >>> summary["logme"]["mean_weighted_tau"], summary["logme"]["top1_hits"], summary["logme"]["speedup"]
        (0.5, 2, 30.0)
    """
    per = list(targets.values())
    return {
        s: {
            "mean_weighted_tau": _nanmean(t["agreement"][s]["weighted_tau"] for t in per),
            "top1_hits": int(sum(t["agreement"][s]["top1"] for t in per)),
            "mean_relative_accuracy": _nanmean(t["agreement"][s]["relative_accuracy"] for t in per),
            "mean_regret": _nanmean(t["agreement"][s].get("regret", np.nan) for t in per),
            "speedup": float(sum(t["finetune_seconds"] for t in per) / sum(t["score_seconds"][s] for t in per)),
        }
        for s in scores
    }


def summary_table(report: dict) -> str:
    """The report as text: per target, the LogME ranking next to the fine-tuned accuracy; then tau_w per score.

    Example (the fields it reads of a :func:`model_selection` report):
        >>> rows = {"a": {"scores": {"logme": 0.5}, "ground_truth": {"accuracy": 0.9}},
        ...         "b": {"scores": {"logme": 0.1}, "ground_truth": {"accuracy": 0.7}}}
        >>> report = {"config": {"scores": ["logme"]},
        ...           "targets": {"t": {"n_train": 30, "num_classes": 5, "candidates": rows,
        ...                             "agreement": {"logme": {"weighted_tau": 1.0, "failed": []}}}},
        ...           "summary": {"logme": {"mean_weighted_tau": 1.0, "top1_hits": 1, "speedup": 40.0}}}
        >>> print(summary_table(report))
        == target t: 30 training images, 5 classes ==
        rank  model                     logme  fine-tuned (rank)
           1  a                        0.5000      0.9000      1
           2  b                        0.1000      0.7000      2
        <BLANKLINE>
        score            tau_w t  mean tau_w  top-1  speed-up
        logme              1.000       1.000    1/1       40x
    """
    lines = []
    scores = report["config"]["scores"]
    for tname, t in report["targets"].items():
        rows = t["candidates"]
        primary = "logme" if "logme" in scores else scores[0]
        order = sorted(rows, key=lambda n: -rows[n]["scores"][primary])
        truth_rank = {n: i + 1 for i, n in enumerate(sorted(rows, key=lambda n: -rows[n]["ground_truth"]["accuracy"]))}
        lines.append(f"== target {tname}: {t['n_train']} training images, {t['num_classes']} classes ==")
        w = max(22, *(len(n) + 2 for n in rows))
        lines.append(f"{'rank':>4}  {'model':<{w}}{primary:>9}{'fine-tuned':>12}{'(rank)':>7}")
        for i, n in enumerate(order, 1):
            gt = rows[n]["ground_truth"]["accuracy"]
            lines.append(f"{i:>4}  {n:<{w}}{rows[n]['scores'][primary]:>9.4f}{gt:>12.4f}{truth_rank[n]:>7}")
        lines.append("")
    width = max(12, *(len(t) + 8 for t in report["targets"]))
    name_width = max(12, *(len(s) + 2 for s in scores))  # registered names can be long (hscore_regularized)
    header = f"{'score':<{name_width}}" + "".join(f"{'tau_w ' + t:>{width}}" for t in report["targets"])
    header += f"{'mean tau_w':>12}{'top-1':>7}{'speed-up':>10}"
    lines.append(header)
    n_targets = len(report["targets"])
    for s in sorted(scores, key=lambda s: -report["summary"][s]["mean_weighted_tau"]):
        row = f"{s:<{name_width}}" + "".join(
            f"{t['agreement'][s]['weighted_tau']:>{width}.3f}" for t in report["targets"].values()
        )
        summ = report["summary"][s]
        row += f"{summ['mean_weighted_tau']:>12.3f}{summ['top1_hits']:>5}/{n_targets}{summ['speedup']:>9.0f}x"
        lines.append(row)
    for tname, t in report["targets"].items():
        for s in scores:
            if t["agreement"][s]["failed"]:
                lines.append(f"({s} did not rate {t['agreement'][s]['failed']} on {tname}: tau_w over the others)")
    return "\n".join(lines)
