"""Every transferability score against a numpy float64 re-implementation of its published formula, same inputs.

The peers are the float64 numpy formulas the tests check against (``tests/score``; GBC's closed form is written
here, its test oracle integrates numerically): each follows the paper's definition the way the authors' code
computes it (per-class loops, dense matrices, scipy's ranks), which is what a user without jaxtransfer runs.
Ours: float32, warm best of 3, plus the first call in this process (it compiles).
LogME has its own benchmark (``bench.logme_speed``).

    python -m bench.score_speed            # n = 5000, D = 1024 (PCA-sized D = 64 for GBC / PARC), C = 50
    python -m bench.score_speed --quick    # n = 1000, D = 128, C = 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

import numpy as np

import jaxtransfer as jt
from bench._common import save, time_call
from tests.score._data import classification, source_probs
from tests.score.test_hscore import hscore_oracle, hscore_regularized_oracle
from tests.score.test_leep_nce import leep_oracle, nce_oracle
from tests.score.test_parc import parc_oracle
from tests.score.test_sfda import sfda_oracle
from tests.score.test_transrate import transrate_oracle


def gbc_published(f: np.ndarray, y: np.ndarray) -> float:
    """GBC as the published code computes it (Pandy et al., CVPR 2022): per-class diagonal Gaussians (variances
    floored at 1e-4), the closed-form Bhattacharyya distance of every ordered class pair in a Python loop,
    GBC = -sum_{i != j} exp(-D_B(i, j)). (The test oracle integrates each coefficient numerically: too slow here.)"""
    stats = []
    for k in range(y.max() + 1):
        x = f[y == k]
        stats.append((x.mean(0), np.maximum(x.var(0), 1e-4)))
    total = 0.0
    for i, (m1, v1) in enumerate(stats):
        for j, (m2, v2) in enumerate(stats):
            if i != j:
                v = (v1 + v2) / 2
                db = np.sum((m1 - m2) ** 2 / v) / 8 + 0.5 * np.sum(np.log(v) - 0.5 * (np.log(v1) + np.log(v2)))
                total += np.exp(-db)
    return -total


def _cases(f, y, probs, f_small):
    """name -> (ours on float32 input, the numpy float64 peer, the input's (n, D))."""
    f32, p32, s32 = f.astype(np.float32), probs.astype(np.float32), f_small.astype(np.float32)
    hard = probs.argmax(1)
    return {
        "leep": (lambda: jt.leep(p32, y), lambda: leep_oracle(probs, y), probs.shape),
        "nce": (lambda: jt.nce(hard, y), lambda: nce_oracle(hard, y), (len(y), 1)),
        "hscore": (lambda: jt.hscore(f32, y), lambda: hscore_oracle(f, y), f.shape),
        "hscore_regularized": (lambda: jt.hscore_regularized(f32, y), lambda: hscore_regularized_oracle(f, y), f.shape),
        "transrate": (lambda: jt.transrate(f32, y), lambda: transrate_oracle(f, y), f.shape),
        "sfda": (lambda: jt.sfda(f32, y), lambda: sfda_oracle(f, y), f.shape),
        "gbc": (lambda: jt.gbc(s32, y, pca_dim=None), lambda: gbc_published(f_small, y), f_small.shape),
        "parc": (lambda: jt.parc(s32, y, pca_dim=None), lambda: parc_oracle(f_small, y), f_small.shape),
    }


_NLEEP = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import jaxtransfer as jt
    from tests.score._data import classification
    n, d, c = (int(a) for a in sys.argv[1:4])
    f, y = classification(0, n=n, d=d, c=c)
    f = f.astype(np.float32)
    t = time.perf_counter(); float(jt.nleep(f, y)); first = time.perf_counter() - t
    t = time.perf_counter(); value = float(jt.nleep(f, y)); warm = time.perf_counter() - t
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
    print(json.dumps({"n": n, "D": d, "C": c, "nleep": value, "first_call_s": first, "warm_s": warm,
                      "peak_rss_mib": int(hwm[0].split()[1]) / 1024}))
    """
)


def nleep_memory(n: int, d: int, c: int) -> dict:
    """NLEEP's time and the peak RSS of a fresh process (the mixture's temporaries are the memory risk)."""
    out = subprocess.run([sys.executable, "-c", _NLEEP, str(n), str(d), str(c)], capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"NLEEP (n={n}, D={d}, C={c}, float32): first call {row['first_call_s']:.1f} s, warm {row['warm_s']:.1f} s, "
        f"peak RSS {row['peak_rss_mib']:.0f} MiB"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, d, c, small = (1000, 128, 10, 32) if args.quick else (5000, 1024, 50, 64)
    f, y = classification(0, n=n, d=d, c=c)
    f_small = f[:, :small]
    probs = source_probs(1, y, cs=100)
    rows = []
    print(f"scores (float32, warm best of 3) vs numpy float64 peers; n={n}, C={c}:")
    header = ("score", "(n, D)", "peer (s)", "ours (s)", "peer/ours", "first (s)", "rel diff")
    print(f"{header[0]:<20}{header[1]:>14}" + "".join(f"{h:>10}" for h in header[2:]))
    for name, (ours, peer, shape) in _cases(f, y, probs, f_small).items():
        start = time.perf_counter()
        value = float(ours())
        first = time.perf_counter() - start
        ours_s = time_call(lambda ours=ours: float(ours()))
        start = time.perf_counter()
        expected = float(peer())
        peer_s = time.perf_counter() - start
        rel = abs(value - expected) / abs(expected)
        row = {"score": name, "n": shape[0], "D": shape[1], "C": c, "peer_s": peer_s, "ours_s": ours_s}
        row.update(ratio=peer_s / ours_s, first_call_s=first, ours=value, peer=expected, rel_diff=rel)
        rows.append(row)
        print(f"{name:<20}{shape!s:>14}{peer_s:>10.3f}{ours_s:>10.3f}{row['ratio']:>10.1f}{first:>10.2f}{rel:>10.1e}")
    nleep = nleep_memory(n, d, c)
    path = save("score_speed_quick" if args.quick else "score_speed", {"rows": rows, "nleep": nleep})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
