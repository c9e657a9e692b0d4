"""Every parameter-efficient strategy on the real pre-trained backbones and real data, over 3 seeds.

- MiniLM-L6 (all-MiniLM-L6-v2) on BBC News (5 topics; 36 articles per topic to train, 12 to validate, 12 to test,
  128 tokens), the same task few-shot (8 articles per topic to train), and Twitter sentiment (3 classes; 60 / 20 / 20
  tweets per class, 64 tokens), full and few-shot (8 tweets per class).
- EfficientNet-Lite0 (ImageNet weights) on real MNIST digits at its native 224 x 224 px (18 / 6 / 6 images per
  digit); BatchNorm statistics frozen for every strategy.

Strategies: linear probe, BitFit, SSF, LoRA on q and v (the usual placement) and on every projection (r = 8,
alpha = 16), IA3, Houlsby adapters (bottleneck 32), VPT-deep (10 tokens), full. On Lite0 LoRA adapts every ungrouped
convolution, IA3 rescales the input of each block's projection conv (the expanded activation, the analogue of the
feed-forward activation), adapters follow each projection conv, and VPT does not apply (no token sequence).

Every run: a new head (seeded), Adam, ``select="best"`` on the validation split, test accuracy of the selected
epoch. Reported per strategy: trainable parameters (% of the adapted model), test accuracy (mean and sample std over
the seeds), train ms/step (batch 16), inference ms per batch of 32 unmerged and merged (strategies that merge).

    python -m bench.peft                 # about an hour on 2 CPU cores
    python -m bench.peft --seeds 1 --tasks bbc_fewshot    # a quick look
    python -m bench.peft --tasks twitter_fewshot --append  # add (or redo) tasks in the saved results
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
from flax import nnx

from bench._common import RESULTS, save
from jaxtransfer.data import bbc_news, mnist_5k, twitter_sentiment
from jaxtransfer.finetune import (
    STRATEGIES,
    count_params,
    evaluate,
    finetune,
    inject_adapter,
    inject_ia3,
    inject_lora,
    inject_ssf,
    inject_vpt,
)
from jaxtransfer.models import load, tokenize

BATCH = 16
TEXT = {
    "linear_probe": (3e-3, lambda m: m),
    "bitfit": (3e-3, lambda m: m),
    "ssf": (3e-3, inject_ssf),
    "lora_qv": (1e-3, lambda m: inject_lora(m, 8, alpha=16, where=["layers.*.query", "layers.*.value"])),
    "lora_all": (1e-3, lambda m: inject_lora(m, 8, alpha=16)),
    "ia3": (3e-3, inject_ia3),
    "adapter": (1e-3, lambda m: inject_adapter(m, 32)),
    "vpt": (3e-3, lambda m: inject_vpt(m, 10, deep=True)),
    "full": (1e-4, lambda m: m),
}
IMAGE = {
    "linear_probe": (3e-3, lambda m: m),
    "bitfit": (3e-3, lambda m: m),
    "ssf": (3e-3, inject_ssf),
    "lora_all": (1e-3, lambda m: inject_lora(m, 8, alpha=16)),
    "ia3": (3e-3, lambda m: inject_ia3(m, where=[], feedforward="stages.*.project")),
    "adapter": (1e-3, lambda m: inject_adapter(m, 32, where="stages.*.project")),
    "full": (3e-4, lambda m: m),
}


def _strategy(label: str) -> str:
    return label.split("_")[0] if label.startswith("lora") else label


def _texts(ds, max_length):
    return [(tokenize(list(x), max_length=max_length), y) for x, y in (ds.part(p) for p in ("train", "val", "test"))]


def _few_shot(train, per_class, seed):
    x, y = train
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]))
    return x[keep], y[keep]


def _inference_ms(model, x) -> float:
    model.eval()
    forward = jax.jit(lambda m, x: m(x))
    forward(model, x).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        forward(model, x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def _run(task, backbone, label, lr, prepare, parts, seed, epochs) -> dict:
    train, val, test = parts
    model = nnx.clone(backbone)
    model.head = nnx.Linear(model.head.kernel.shape[0], int(train[1].max()) + 1, rngs=nnx.Rngs(100 + seed))
    model = prepare(model)
    strategy = _strategy(label)
    started = time.perf_counter()
    options = {"eval_data": val, "select": "best", "seed": seed, "progress": False, "freeze_batch_norm": True,
               "learning_rate": lr, "epochs": epochs, "batch_size": BATCH}  # fmt: skip
    trained, hist = finetune(model, train, strategy=strategy, **options)
    x = test[0][:32]
    row = {
        "task": task,
        "strategy": label,
        "seed": seed,
        "trainable": count_params(model, strategy),
        "all_params": count_params(model),
        "test_accuracy": evaluate(trained, test)["accuracy"],
        "train_ms_per_step": 1000 * BATCH / hist[-1]["examples_per_second"],
        "inference_ms": _inference_ms(trained, x),
        "seconds": time.perf_counter() - started,
    }
    merge = STRATEGIES[strategy].merge
    if merge is not None:
        merged = merge(trained)
        row["inference_ms_merged"] = _inference_ms(merged, x)
        row["merge_max_abs_diff"] = float(np.max(np.abs(np.asarray(merged(x)) - np.asarray(trained(x)))))
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return row


def _summary(rows):
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for label in dict.fromkeys(r["strategy"] for r in rows if r["task"] == task):
            rs = [r for r in rows if r["task"] == task and r["strategy"] == label]
            accs = [r["test_accuracy"] for r in rs]
            merged = [r["inference_ms_merged"] for r in rs if "inference_ms_merged" in r]
            out.append({
                "task": task,
                "strategy": label,
                "seeds": len(rs),
                "trainable": rs[0]["trainable"],
                "trainable_percent": 100 * rs[0]["trainable"] / rs[0]["all_params"],
                "accuracy_mean": statistics.mean(accs),
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "train_ms_per_step": statistics.median(r["train_ms_per_step"] for r in rs),
                "inference_ms": statistics.median(r["inference_ms"] for r in rs),
                "inference_ms_merged": statistics.median(merged) if merged else None,
            })  # fmt: skip
    return out


def _print(summary):
    print(f"\n{'task':14s} {'strategy':13s} {'trainable':>10s} {'%':>7s} {'accuracy':>14s} {'ms/step':>8s} "
          f"{'inf ms':>7s} {'merged':>7s}")  # fmt: skip
    for s in summary:
        merged = "-" if s["inference_ms_merged"] is None else f"{s['inference_ms_merged']:.1f}"
        print(f"{s['task']:14s} {s['strategy']:13s} {s['trainable']:10d} {s['trainable_percent']:7.3f} "
              f"{s['accuracy_mean']:7.3f} ± {s['accuracy_std']:.3f} {s['train_ms_per_step']:8.0f} "
              f"{s['inference_ms']:7.1f} {merged:>7s}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="*", default=["bbc", "bbc_fewshot", "twitter", "twitter_fewshot", "mnist224"])
    parser.add_argument("--append", action="store_true", help="keep the saved rows of the other tasks")
    args = parser.parse_args()
    rows: list[dict] = []
    if args.append and (RESULTS / "peft.json").exists():
        rows = [r for r in json.loads((RESULTS / "peft.json").read_text())["rows"] if r["task"] not in args.tasks]
    seeds = range(args.seeds)
    text_tasks = {"bbc", "bbc_fewshot", "twitter", "twitter_fewshot"}
    minilm = load("minilm-l6", num_outputs=5) if text_tasks & set(args.tasks) else None

    def record():
        summary = _summary(rows)
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        save("peft", {"rows": rows, "summary": summary, "batch_size": BATCH, "tasks": tasks})
        return summary

    for name, load_text, max_length in (("bbc", bbc_news, 128), ("twitter", twitter_sentiment, 64)):
        full, few_shot = name in args.tasks, f"{name}_fewshot" in args.tasks
        if not (full or few_shot):
            continue
        parts = _texts(load_text(max_per_class=60 if name == "bbc" else 100), max_length)
        for label, (lr, prepare) in TEXT.items():
            for seed in seeds:
                if full:
                    rows.append(_run(name, minilm, label, lr, prepare, parts, seed, epochs=4))
                if few_shot:
                    few = [_few_shot(parts[0], 8, seed), *parts[1:]]
                    rows.append(_run(f"{name}_fewshot", minilm, label, lr, prepare, few, seed, epochs=12))
            record()
    if "mnist224" in args.tasks:
        digits = mnist_5k(image_size=224, max_per_class=30)
        parts = [digits.part(p) for p in ("train", "val", "test")]
        lite0 = load("efficientnet-lite0", num_outputs=10)
        for label, (lr, prepare) in IMAGE.items():
            for seed in seeds:
                rows.append(_run("mnist224", lite0, label, lr, prepare, parts, seed, epochs=4))
            record()
    _print(record())


if __name__ == "__main__":
    main()
