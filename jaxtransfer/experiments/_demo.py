"""The model-selection demos.

``run_demo`` (``jaxtransfer demo``): the LogME paper's headline experiment at CI size. A zoo of 12 models is
pre-trained here on variants of half of the scikit-learn digits (cached after the first run), then every model is
fine-tuned on two real target tasks (real MNIST digits, and the other half's digits 5-9) to get the ground truth,
and scored with every transferability score. It prints the LogME ranking next to the fine-tuned accuracies and the
weighted Kendall tau of each score.

``run_feature_demo`` (``jaxtransfer demo --feature-maps``, a few seconds): rank feature maps of the digits of
clearly different quality (principal components, pooled and raw pixels, random ReLU and Fourier features) by LogME
and check the ranking against a logistic-regression probe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxtransfer.data import load_digits
from jaxtransfer.experiments._zoo import CI_ZOO, ZooModel, build_zoo, target_task
from jaxtransfer.score import logme
from jaxtransfer.select import weighted_tau

__all__ = ["digits_feature_maps", "run_demo", "run_feature_demo"]


def digits_feature_maps(images: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Candidate feature extractors for the digits, from weak to strong. ``images``: (n, 8, 8) in [0, 1].

    Example:
        >>> from jaxtransfer.data import load_digits
        >>> maps = digits_feature_maps(load_digits()[0][:100])
        >>> {name: f.shape[1] for name, f in maps.items()}["pca-6"]
        6
    """
    rng = np.random.default_rng(seed)
    x = images.reshape(len(images), -1).astype(np.float64)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    sq = np.sum(np.square(x[:300, None] - x[None, :300]), -1)
    bandwidth = np.sqrt(np.median(sq[sq > 0]))

    def relu(width):
        w = rng.normal(size=(x.shape[1], width)) / np.sqrt(x.shape[1])
        return np.maximum(x @ w + rng.uniform(-1, 1, width), 0)

    def fourier(width):
        w = rng.normal(size=(x.shape[1], width)) / bandwidth
        return np.cos(x @ w + rng.uniform(0, 2 * np.pi, width))

    maps = {
        "pca-2": centred @ vt[:2].T,
        "pca-6": centred @ vt[:6].T,
        "pooled-4x4": images.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(len(images), 16),
        "pixels": x,
        "random-relu-128": relu(128),
        "random-relu-2048": relu(2048),
        "random-fourier-512": fourier(512),
        "random-fourier-2048": fourier(2048),
    }
    return {name: f.astype(np.float32) for name, f in maps.items()}


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, *, splits: int = 3) -> float:
    from sklearn.linear_model import LogisticRegression

    n = len(labels)
    accs = []
    for i in range(splits):
        perm = np.random.default_rng(100 + i).permutation(n)
        tr, te = perm[: n // 2], perm[n // 2 :]
        clf = LogisticRegression(max_iter=5000).fit(features[tr], labels[tr])
        accs.append(clf.score(features[te], labels[te]))
    return float(np.mean(accs))


def run_feature_demo(*, seed: int = 0, probe: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Runs the feature-map demo and returns its table as a dict (also printed through ``echo``).

    Example:
        >>> lines = []
        >>> table = run_feature_demo(probe=False, echo=lines.append)
        >>> lines[0]
        'Data: scikit-learn digits, n=1797, 10 classes. Candidates: 8.'
        >>> names = [row["model"] for row in table["rows"]]  # ranked by LogME, best first
        >>> names.index("random-fourier-2048") < names.index("pixels") < names.index("pca-2") == 7
        True
    """
    images, labels = load_digits()
    maps = digits_feature_maps(images, seed=seed)
    echo(f"Data: scikit-learn digits, n={len(labels)}, {labels.max() + 1} classes. Candidates: {len(maps)}.")
    rows = []
    for name, feats in maps.items():
        logme(feats, labels)  # compile for this shape
        start = time.perf_counter()
        score = float(logme(feats, labels))
        seconds = time.perf_counter() - start
        row = {"model": name, "dim": feats.shape[1], "logme": score, "logme_seconds": seconds}
        if probe:
            row["probe_accuracy"] = _probe_accuracy(feats, labels)
        rows.append(row)
    rows.sort(key=lambda r: r["logme"], reverse=True)
    header = f"{'rank':>4}  {'model':<22}{'D':>6}{'LogME':>10}{'time (s)':>10}"
    header += f"{'probe acc':>11}" if probe else ""
    echo(header)
    for i, r in enumerate(rows, 1):
        line = f"{i:>4}  {r['model']:<22}{r['dim']:>6}{r['logme']:>10.4f}{r['logme_seconds']:>10.3f}"
        line += f"{r['probe_accuracy']:>11.4f}" if probe else ""
        echo(line)
    out = {"dataset": "sklearn-digits", "n": len(labels), "rows": rows}
    if probe:
        tau = weighted_tau([r["logme"] for r in rows], [r["probe_accuracy"] for r in rows])
        best = max(rows, key=lambda r: r["probe_accuracy"])
        out["weighted_tau"] = float(tau)
        echo(
            f"Weighted Kendall tau(LogME, probe accuracy) = {tau:.3f}: a pair of candidates is ordered as the "
            f"probe orders it with probability {(tau + 1) / 2:.2f}."
        )
        echo(f"LogME picks {rows[0]['model']}; the best probe is {best['model']} ({best['probe_accuracy']:.4f}).")
    return json.loads(json.dumps(out))


def run_demo(
    *,
    echo: Callable[[str], None] = print,
    mnist_per_class: int = 100,
    epochs: int = 15,
    zoo: Sequence[ZooModel] = CI_ZOO,
    directory: str | Path | None = None,
    scores: Sequence[str] | None = None,
) -> dict:
    """Runs the CI-sized model-zoo experiment and returns its report (:func:`jaxtransfer.experiments.model_selection`).

    Args:
        echo: where the progress lines and the tables go.
        mnist_per_class: real MNIST digits per class in the "mnist" target (30 % of them train).
        epochs: fine-tuning epochs of the ground truth (grid: learning rates 1e-3 and 3e-3).
        zoo: the candidates' recipes (default ``CI_ZOO``: 12 models).
        directory: the zoo's cache (default ``jaxtransfer.models.cache_dir() / "zoo"``).
        scores: the registered scores to compare (default all; LogME is always among them, the summary line reads
            it).

    Example (two untrained-or-barely-trained models and one fine-tuning epoch: the pipeline, not the finding):
        >>> import tempfile
        >>> from jaxtransfer.experiments import ZooModel
        >>> zoo = [ZooModel("mlp16-random", "mlp", (16,), "digits", 0),
        ...        ZooModel("mlp16-digits", "mlp", (16,), "digits", 2)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     report = run_demo(zoo=zoo, directory=d, mnist_per_class=20, epochs=1, scores=("logme", "leep"),
        ...                       echo=lambda line: None)
        >>> sorted(report["targets"]), sorted(report["targets"]["mnist"]["candidates"])
        (['digits5-9', 'mnist'], ['mlp16-digits', 'mlp16-random'])
        >>> report["config"]["scores"]
        ['logme', 'leep']
    """
    from jaxtransfer.experiments._benchmark import ALL_SCORES, model_selection, summary_table

    started = time.perf_counter()
    echo(f"Zoo: {len(zoo)} models pre-trained on variants of the scikit-learn digits (cached after the first run).")
    zoo = build_zoo(zoo, directory=directory, progress=False, echo=lambda line: echo("  " + line))
    targets = {"mnist": target_task("mnist", max_per_class=mnist_per_class), "digits5-9": target_task("digits5-9")}
    echo("Targets: " + "; ".join(f"{k}: {v!r}" for k, v in targets.items()))
    echo("Ground truth: full fine-tuning with a new head, best validation accuracy over 2 learning rates.")
    names = tuple(ALL_SCORES if scores is None else dict.fromkeys(("logme", *scores)))
    report = model_selection(zoo, targets, epochs=epochs, scores=names)
    echo(summary_table(report))
    logme_summary = report["summary"]["logme"]
    echo(
        f"LogME: mean weighted tau {logme_summary['mean_weighted_tau']:.3f}, picks a best fine-tuned model on "
        f"{logme_summary['top1_hits']} of {len(targets)} targets; scoring (features + LogME) is "
        f"{logme_summary['speedup']:.0f}x faster than the fine-tuning grid. "
        f"Total {time.perf_counter() - started:.0f} s."
    )
    return json.loads(json.dumps(report))
