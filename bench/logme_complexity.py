"""Naive vs optimised LogME as K (targets), D (features) and n (samples) grow.

Prints one table per sweep with both times (jit-compiled, warm, best of a few runs) and the ratio
naive / optimised measured in the same run, the log-log slope of each time in the swept size, and saves
bench/results/logme_complexity.json and .png.

    python -m bench.logme_complexity            # full sweeps (~10 minutes on 2 CPU cores)
    python -m bench.logme_complexity --quick    # small sizes, for a smoke test
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from bench._common import RESULTS, planted_features, save, time_call
from jaxtransfer import logme_evidence


def _run(n, d, k, seed=0):
    f, y = planted_features(n, d, k, seed=seed)
    f, y = jax.device_put(f), jax.device_put(y)
    row = {"n": n, "D": d, "K": k}
    for method in ("optimized", "naive"):

        def call(method=method):
            return jax.block_until_ready(logme_evidence(f, y, num_classes=k, method=method).evidence)

        row[f"{method}_s"] = time_call(call)
        row[f"{method}_score"] = float(np.mean(call()))
    row["ratio"] = row["naive_s"] / row["optimized_s"]
    return row


def _slope(xs, ts):
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        sweeps = {
            "K": [(500, 32, k) for k in (2, 8, 32)],
            "D": [(500, d, 4) for d in (16, 32, 64)],
            "n": [(n, 32, 4) for n in (250, 500, 1000)],
        }
    else:
        sweeps = {
            "K": [(2000, 256, k) for k in (2, 8, 32, 128, 256)],
            "D": [(4000, d, 10) for d in (64, 128, 256, 512, 1024, 2048)],
            "n": [(n, 256, 10) for n in (1000, 4000, 16000, 64000)],
        }
    results = {}
    for axis, configs in sweeps.items():
        rows = []
        print(f"\nSweep over {axis} ({jax.devices()[0].platform}, float32):")
        print(f"{'n':>7}{'D':>6}{'K':>5}{'naive (s)':>12}{'optimized (s)':>15}{'naive/opt':>11}{'|score diff|':>14}")
        for n, d, k in configs:
            r = _run(n, d, k)
            rows.append(r)
            diff = abs(r["naive_score"] - r["optimized_score"])
            print(f"{n:>7}{d:>6}{k:>5}{r['naive_s']:>12.4f}{r['optimized_s']:>15.4f}{r['ratio']:>11.1f}{diff:>14.2e}")
        xs = [r[axis] for r in rows]
        slopes = {m: _slope(xs, [r[f"{m}_s"] for r in rows]) for m in ("naive", "optimized")}
        print(f"log-log slope in {axis}: naive {slopes['naive']:.2f}, optimized {slopes['optimized']:.2f}")
        results[axis] = {"rows": rows, "slopes": slopes}
    name = "logme_complexity_quick" if args.quick else "logme_complexity"
    path = save(name, {"sweeps": results})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"saved {path} (matplotlib not installed: no plot)")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (axis, res) in zip(axes, results.items(), strict=True):
        xs = [r[axis] for r in res["rows"]]
        for m, style in (("naive", "o-"), ("optimized", "s-")):
            ax.loglog(xs, [r[f"{m}_s"] for r in res["rows"]], style, label=f"{m} (slope {res['slopes'][m]:.2f})")
        ax.set_xlabel(axis)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"LogME naive vs optimized ({jax.devices()[0].platform}, float32)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print(f"saved {path} and {name}.png")


if __name__ == "__main__":
    main()
