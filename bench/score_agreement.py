"""Agreement of every score with its independent float64 oracle (the ones in tests/score), and timing.

    python -m bench.score_agreement

Prints the largest relative difference over a few random problems per score, in float64 and in float32
(against the float64 oracle), and writes bench/results/score_agreement.json.
"""

from __future__ import annotations

import time

import jax
import numpy as np

import jaxtransfer as jt
from bench._common import save
from tests.score import oracle as logme_oracle
from tests.score._data import classification, source_probs
from tests.score.test_gbc import gbc_oracle
from tests.score.test_hscore import hscore_oracle, hscore_regularized_oracle
from tests.score.test_leep_nce import leep_oracle, nce_oracle
from tests.score.test_parc import parc_oracle
from tests.score.test_sfda import sfda_oracle
from tests.score.test_transrate import transrate_oracle

CASES = {
    "logme": (lambda f, y: jt.logme(f, y), lambda f, y: logme_oracle.logme(f, y)),
    "leep": (lambda f, y: jt.leep(source_probs(1, y), y), lambda f, y: leep_oracle(source_probs(1, y), y)),
    "nce": (
        lambda f, y: jt.nce(source_probs(1, y).argmax(1), y),
        lambda f, y: nce_oracle(source_probs(1, y).argmax(1), y),
    ),
    "hscore": (jt.hscore, hscore_oracle),
    "hscore_regularized": (jt.hscore_regularized, hscore_regularized_oracle),
    "transrate": (jt.transrate, transrate_oracle),
    "gbc": (lambda f, y: jt.gbc(f, y, pca_dim=None), gbc_oracle),
    "sfda": (jt.sfda, sfda_oracle),
    "parc": (lambda f, y: jt.parc(f, y, pca_dim=None), parc_oracle),
}


def main() -> None:
    rows = []
    print(f"{'score':<20}{'max rel diff f64':>18}{'max rel diff f32':>18}{'ms (f32, warm)':>16}")
    for name, (ours, ref) in CASES.items():
        d64, d32, ms = 0.0, 0.0, 0.0
        for seed in range(3):
            f, y = classification(seed, n=200, d=12, c=4)
            expected = float(ref(f, y))
            with jax.enable_x64(True):
                d64 = max(d64, abs(float(ours(f, y)) - expected) / abs(expected))
            f32 = f.astype(np.float32)
            d32 = max(d32, abs(float(ours(f32, y)) - expected) / abs(expected))
            start = time.perf_counter()
            float(ours(f32, y))
            ms = max(ms, 1000 * (time.perf_counter() - start))
        rows.append({"score": name, "rel_diff_float64": d64, "rel_diff_float32": d32, "ms": ms})
        print(f"{name:<20}{d64:>18.1e}{d32:>18.1e}{ms:>16.1f}")
    print(f"saved {save('score_agreement', {'rows': rows, 'sizes': 'n=200, D=12, C=4, 3 seeds'})}")


if __name__ == "__main__":
    main()
