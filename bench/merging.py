"""Weight-space merging on the real MiniLM-L6 (all-MiniLM-L6-v2) and two real text tasks: WiSE-FT per task, and one
backbone for both tasks by task arithmetic, TIES and DARE-TIES.

Tasks: BBC News (5 topics; 36 / 12 / 12 articles per topic for train / val / test, 128 tokens) and Twitter
sentiment (3 classes; 60 / 20 / 20 tweets per class, 64 tokens). Per task and seed: a linear probe on the frozen
pre-trained backbone (LP: Adam 3e-3, 4 epochs), then full fine-tuning from it (FT: Adam 1e-4, 4 epochs, best
epoch on val), batch 16.

- WiSE-FT: theta(alpha) = (1 - alpha) LP + alpha FT, alpha in {0, 0.1, ..., 1}; alpha picked on val.
- Merging: the task vectors of the two fine-tuned backbones (each task keeps its own fine-tuned head); task arithmetic
  with lambda in {0.3, 0.5, 0.7, 1.0}, TIES (density 0.2) and DARE-TIES (density 0.3) with lambda in
  {0.5, 0.7, 1.0, 1.3}; lambda picked on the mean val accuracy over the two tasks. Reported: test accuracy per task.

    python -m bench.merging              # ~10 minutes on 2 CPU cores (2 seeds)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from bench._common import save
from jaxtransfer.data import bbc_news, twitter_sentiment
from jaxtransfer.finetune import evaluate, finetune
from jaxtransfer.merge import dare_ties, task_arithmetic, task_vector, ties_merge, wise_ft
from jaxtransfer.models import load, tokenize

BATCH = 16
ALPHAS = tuple(np.round(np.linspace(0, 1, 11), 2))
BACKBONE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("head")))


def _parts(ds, max_length):
    return [(tokenize(list(x), max_length=max_length), y) for x, y in (ds.part(p) for p in ("train", "val", "test"))]


def _with(model, state):
    m = nnx.clone(model)
    nnx.update(m, state)
    return m


def _accuracy(model, split) -> float:
    return float(evaluate(model, split, batch_size=64)["accuracy"])


def run_seed(backbone, tasks: dict, seed: int) -> dict:
    out = {"seed": seed, "wise_ft": {}, "fine_tuned": {}}
    fine_tuned = {}
    for name, (train, val, test) in tasks.items():
        model = nnx.clone(backbone)
        model.head = nnx.Linear(model.head.kernel.shape[0], int(train[1].max()) + 1, rngs=nnx.Rngs(100 + seed))
        opts = {"batch_size": BATCH, "seed": seed, "progress": False, "epochs": 4}
        lp, _ = finetune(model, train, strategy="linear_probe", learning_rate=3e-3, **opts)
        ft, _ = finetune(lp, train, strategy="full", learning_rate=1e-4, eval_data=val, select="best", **opts)
        fine_tuned[name] = ft
        p_lp, p_ft = nnx.state(lp, nnx.Param), nnx.state(ft, nnx.Param)
        val_acc = [_accuracy(_with(ft, wise_ft(p_lp, p_ft, float(a))), val) for a in ALPHAS]
        best = float(ALPHAS[int(np.argmax(val_acc))])
        out["wise_ft"][name] = {
            "val_accuracy": val_acc,
            "best_alpha": best,
            "test_lp": _accuracy(lp, test),
            "test_ft": _accuracy(ft, test),
            "test_wise_ft": _accuracy(_with(ft, wise_ft(p_lp, p_ft, best)), test),
        }
        print(name, out["wise_ft"][name], flush=True)
    pre = nnx.state(backbone, BACKBONE)
    fts = [nnx.state(fine_tuned[n], BACKBONE) for n in tasks]
    vectors = [task_vector(pre, f) for f in fts]
    methods = {
        "task_arithmetic": ((0.3, 0.5, 0.7, 1.0), lambda lam: task_arithmetic(pre, vectors, scale=lam)),
        "ties": ((0.5, 0.7, 1.0, 1.3), lambda lam: ties_merge(pre, fts, density=0.2, scale=lam)),
        "dare_ties": ((0.5, 0.7, 1.0, 1.3),
                      lambda lam: dare_ties(pre, fts, density=0.3, key=jax.random.key(seed), scale=lam)),
    }  # fmt: skip
    out["fine_tuned"] = {n: _accuracy(fine_tuned[n], tasks[n][2]) for n in tasks}
    out["pre_trained_backbone"] = {
        n: _accuracy(_with(fine_tuned[n], pre), tasks[n][2]) for n in tasks
    }  # the fine-tuned heads on the pre-trained backbone
    out["merged"] = {}
    for method, (lams, merge) in methods.items():
        scores = []
        for lam in lams:
            merged = merge(lam)
            scores.append(float(np.mean([_accuracy(_with(fine_tuned[n], merged), tasks[n][1]) for n in tasks])))
        lam = lams[int(np.argmax(scores))]
        merged = merge(lam)
        test = {n: _accuracy(_with(fine_tuned[n], merged), tasks[n][2]) for n in tasks}
        out["merged"][method] = {"lambda": lam, "val_mean": scores, "test": test}
        print(method, out["merged"][method], flush=True)
    return out


def _summary(runs: list[dict], names) -> list[dict]:
    def agg(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    rows = []
    for n in names:
        for key in ("test_lp", "test_ft", "test_wise_ft"):
            rows.append({"task": n, "method": key[5:], **agg([r["wise_ft"][n][key] for r in runs])})
    for n in names:
        rows.append({"task": n, "method": "pre-trained backbone + FT head",
                     **agg([r["pre_trained_backbone"][n] for r in runs])})  # fmt: skip
        for method in runs[0]["merged"]:
            rows.append(
                {"task": n, "method": f"merged: {method}", **agg([r["merged"][method]["test"][n] for r in runs])}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    backbone = load("minilm-l6", num_outputs=5)
    tasks = {
        "bbc": _parts(bbc_news(max_per_class=60), 128),
        "twitter": _parts(twitter_sentiment(max_per_class=100), 64),
    }
    runs = [run_seed(backbone, tasks, s) for s in range(args.seeds)]
    summary = _summary(runs, list(tasks))
    for row in summary:
        print(f"{row['task']:8s} {row['method']:34s} {row['mean']:.3f} ± {row['std']:.3f}")
    path = save("merging", {"runs": runs, "summary": summary, "seconds": time.perf_counter() - started})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
