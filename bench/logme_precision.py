"""float32 vs float64 LogME on realistic features (ReLU features with a shared mean and a class signal).

For each size the optimised method runs on the same features in float32 (JAX default) and float64 (x64), and the
relative difference of the scores is printed and saved to bench/results/logme_precision.json.

    python -m bench.logme_precision
"""

from __future__ import annotations

import time

import jax
import numpy as np

from bench._common import planted_features, save
from jaxtransfer import logme

SIZES = [(2000, 256, 10), (10000, 1024, 100), (50000, 2048, 100), (1000, 2048, 10)]


def main() -> None:
    rows = []
    print(f"{'n':>7}{'D':>6}{'K':>5}{'float32':>12}{'float64':>12}{'rel. diff':>11}{'f32 s':>8}{'f64 s':>8}")
    for n, d, k in SIZES:
        f, y = planted_features(n, d, k, dtype=np.float64)
        start = time.perf_counter()
        single = float(logme(f.astype(np.float32), y))
        t32 = time.perf_counter() - start
        with jax.enable_x64(True):
            start = time.perf_counter()
            double = float(logme(f, y))
            t64 = time.perf_counter() - start
        rel = abs(single - double) / abs(double)
        rows.append({"n": n, "D": d, "K": k, "float32": single, "float64": double, "rel_diff": rel})
        print(f"{n:>7}{d:>6}{k:>5}{single:>12.6f}{double:>12.6f}{rel:>11.2e}{t32:>8.2f}{t64:>8.2f}")
    path = save("logme_precision", {"rows": rows, "note": "times include compilation"})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
