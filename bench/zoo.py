"""The model-zoo experiment at bench size: does a one-minute score rank models like fine-tuning does?

Zoo: ``FULL_ZOO`` (20 models pre-trained here on variants of half of the scikit-learn digits: MLP / CNN / tiny ViT,
several widths and depths, 6 source tasks, early checkpoints, random inits) plus the real ImageNet backbones
EfficientNet-Lite0/1/2 (fine-tuned and scored at ``--backbone-size`` pixels, default 96, to keep the fine-tuning
grid affordable on a CPU). Targets: real MNIST digits (100 per class, 30 % for training), the held-out digits 5-9,
and the same inverted. Ground truth: full fine-tuning with a new head, best validation accuracy over two learning
rates (3e-4, 3e-3), 15 epochs. Scores: LogME, LEEP, NCE, NLEEP, H-score, TransRate, GBC, SFDA, PARC.

    python -m bench.zoo                   # ~15 minutes on 2 CPU cores; bench/results/zoo.json and zoo.png
    python -m bench.zoo --no-backbones    # the 20 zoo models only
    python -m bench.zoo --quick           # CI_ZOO, 2 targets, 1 learning rate: results/zoo_quick.*
    python -m bench.zoo --replot          # redraw zoo.png from zoo.json
"""

from __future__ import annotations

import argparse
import time

from bench._common import RESULTS, save
from jaxtransfer.data import efficientnet_preprocess
from jaxtransfer.experiments import (
    ALL_SCORES,
    CI_ZOO,
    FULL_ZOO,
    Candidate,
    build_zoo,
    model_selection,
    summary_table,
    target_task,
)


def backbones(size: int) -> list[Candidate]:
    """EfficientNet-Lite0/1/2 (ImageNet) as candidates that see the target images at ``size`` x ``size`` RGB."""
    from jaxtransfer.models import load

    out = []
    for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        out.append(Candidate(name, load(name), lambda b: efficientnet_preprocess(b, size), {"size": size}))
    return out


def _label_points(ax, points, names, *, fontsize: float = 7) -> int:
    """Labels the points best-first (highest accuracy) where a label fits without overlapping an earlier one or
    leaving the axes; returns how many got a label (the rest stay unlabelled rather than unreadable)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for (x, y), name in sorted(zip(points, names, strict=True), key=lambda p: -p[0][1]):
        for dx, dy in ((4, 2), (4, -9), (-4, 2), (-4, -9)):
            text = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="left" if dx > 0 else "right")  # fmt: skip
            box = text.get_window_extent(renderer)
            fits = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if fits and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            text.remove()
    return len(placed)


def plot(report: dict, path) -> None:
    """One scatter per target (LogME against the fine-tuned accuracy, the ImageNet backbones in red) and the
    weighted Kendall tau of every score per target; labels are placed only where they do not overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    targets = report["targets"]
    scores = report["config"]["scores"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    axes = axes.ravel()
    for ax, (tname, t) in zip(axes, targets.items(), strict=False):
        names = list(t["candidates"])
        points = [
            (t["candidates"][n]["scores"]["logme"], t["candidates"][n]["ground_truth"]["accuracy"]) for n in names
        ]
        colours = ["tab:red" if n.startswith("efficientnet") else "tab:blue" for n in names]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=22, c=colours, zorder=3)
        ax.margins(x=0.25, y=0.08)
        tau = t["agreement"]["logme"]["weighted_tau"]
        ax.set(xlabel="LogME (mean log evidence per sample)", ylabel="fine-tuned accuracy (validation)")
        labelled = _label_points(ax, points, names)
        ax.set_title(f"{tname}: {t['n_train']} training images, {t['num_classes']} classes, {len(names)} models\n"
                     f"tau_w(LogME) = {tau:.2f}; {labelled} of {len(names)} labelled", fontsize=10)  # fmt: skip
        ax.grid(alpha=0.3)
    legend = [
        Line2D([], [], marker="o", ls="", color="tab:red", label="EfficientNet-Lite0/1/2 (ImageNet)"),
        Line2D([], [], marker="o", ls="", color="tab:blue", label="pre-trained here on digit variants"),
    ]
    axes[0].legend(handles=legend, fontsize=8, loc="lower right")
    ax = axes[-1]
    width = 0.8 / len(targets)
    for i, (tname, t) in enumerate(targets.items()):
        ax.bar([j + i * width for j in range(len(scores))], [t["agreement"][s]["weighted_tau"] for s in scores],
               width, label=tname)  # fmt: skip
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scores))], scores, rotation=45)
    ax.set(title="weighted Kendall tau of each score with the fine-tuned accuracies", ylabel="tau_w (1: same order)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-backbones", action="store_true")
    parser.add_argument("--backbone-size", type=int, default=96)
    parser.add_argument("--replot", action="store_true", help="redraw zoo.png from zoo.json; no runs")
    args = parser.parse_args()
    if args.replot:
        import json

        name = "zoo_quick" if args.quick else "zoo"
        plot(json.loads((RESULTS / f"{name}.json").read_text()), RESULTS / f"{name}.png")
        return
    started = time.perf_counter()
    zoo = build_zoo(CI_ZOO if args.quick else FULL_ZOO, echo=print)
    if not (args.quick or args.no_backbones):
        zoo += backbones(args.backbone_size)
    names = ("mnist", "digits5-9") if args.quick else ("mnist", "digits5-9", "digits-inverted5-9")
    targets = {n: target_task(n, max_per_class=100 if n == "mnist" else None) for n in names}
    lrs = (3e-3,) if args.quick else (3e-4, 3e-3)
    report = model_selection(zoo, targets, scores=ALL_SCORES, learning_rates=lrs, epochs=15, echo=print)
    print(summary_table(report))
    name = "zoo_quick" if args.quick else "zoo"
    report["zoo"] = {c.name: {k: v for k, v in c.info.items() if k != "seconds"} for c in zoo}
    report["total_seconds"] = time.perf_counter() - started
    path = save(name, report)
    plot(report, RESULTS / f"{name}.png")
    print(f"saved {path} and {name}.png in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
