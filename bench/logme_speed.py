"""jaxtransfer LogME vs a plain numpy float64 implementation of the published algorithm; where the time goes;
streaming at n = 10^6; 8 simulated devices vs 1.

The reference (``reference_logme`` below) follows the published code's structure: an SVD of F^T F in float64, then
a Python loop over the K targets, each iteration forming m = V (b z / (a + b s)) and the residual ||F m - y||^2 from
the features (O(n D) per iteration and target). It starts and stops where jaxtransfer does (so that the scores are
comparable to 1e-4) and evaluates the same evidence.

    python -m bench.logme_speed            # everything (~10 minutes on 2 CPU cores)
    python -m bench.logme_speed --quick    # small sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench._common import planted_features, save, time_call
from jaxtransfer import _checks, logme, logme_evidence, logme_many
from jaxtransfer.score._gram import upper_gram
from jaxtransfer.score._profile import maximize_profiles

_HI = jax.lax.Precision.HIGHEST


def reference_logme(f: np.ndarray, labels: np.ndarray, *, tol: float = 1e-3, max_iter: int = 100) -> float:
    """The published algorithm in numpy float64: one SVD, then a per-class loop with O(n D) residuals."""
    f = np.asarray(f, np.float64)
    n, d = f.shape
    v, s, _ = np.linalg.svd(f.T @ f)
    evidences = []
    for k in range(labels.max() + 1):
        y = (labels == k).astype(np.float64)
        z = v.T @ (f.T @ y)
        yy = y @ y
        b = n / yy
        a = b * s.sum() / d
        for _ in range(max_iter):
            gamma = np.sum(b * s / (a + b * s))
            m = v @ (b * z / (a + b * s))
            res = np.sum((f @ m - y) ** 2)
            a_new, b_new = gamma / (m @ m), (n - gamma) / res
            done = abs(a_new / b_new - a / b) <= tol * a / b
            a, b = a_new, b_new
            if done:
                break
        m = v @ (b * z / (a + b * s))
        res = np.sum((f @ m - y) ** 2)
        ev = (
            n / 2 * np.log(b)
            + d / 2 * np.log(a)
            - n / 2 * np.log(2 * np.pi)
            - b / 2 * res
            - a / 2 * (m @ m)
            - 0.5 * np.sum(np.log(a + b * s))
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


def _breakdown(f: np.ndarray, y: np.ndarray, k: int) -> dict:
    """Warm seconds of each stage of the blocked path on the whole matrix, and of the two floors' parts."""
    fj, yj = jax.device_put(f), jax.device_put(y)
    gram_fn = jax.jit(lambda f: jnp.matmul(f.T, f, precision=_HI))
    half_fn = jax.jit(upper_gram)
    eigh_fn = jax.jit(jnp.linalg.eigh)
    fty_fn = jax.jit(lambda f, y: jax.ops.segment_sum(f, y, num_segments=k))
    g = gram_fn(fj)
    s, v = eigh_fn(g)
    z = jnp.matmul(v.T, fty_fn(fj, yj).T, precision=_HI)
    yy = jnp.bincount(yj, length=k).astype(fj.dtype)
    n = f.shape[0]
    s = jnp.maximum(s, 0)
    w = jnp.square(z) / jnp.where(s > 0, s, 1.0)[:, None]
    iters_fn = jax.jit(lambda w, yy: maximize_profiles(s, w, yy - jnp.sum(w, axis=0), yy, n=n, tol=1e-3, max_iter=100))

    # The decompositions DESIGN section 2 names as alternatives to eigh (measured, not used: see the benchmarks guide)
    eigvalsh_fn = jax.jit(jnp.linalg.eigvalsh)
    tridiag_fn = jax.jit(lambda g: jax.lax.linalg.tridiagonal(g)[1:3])  # Householder reduction Q^T G Q = T
    diag, off = tridiag_fn(g)
    tri_eigvals_fn = jax.jit(lambda a, b: jax.scipy.linalg.eigh_tridiagonal(a, b, eigvals_only=True))

    def host():
        _checks.host_features(f)
        _checks.check_class_labels(y, n, k)

    return {
        "host_checks_s": time_call(host),
        "gram_s": time_call(lambda: gram_fn(fj).block_until_ready()),
        "half_gram_s": time_call(lambda: half_fn(fj).block_until_ready()),
        "eigh_s": time_call(lambda: eigh_fn(g)[0].block_until_ready()),
        "eigvalsh_s": time_call(lambda: eigvalsh_fn(g).block_until_ready()),
        "tridiagonal_s": time_call(lambda: tridiag_fn(g)[0].block_until_ready()),
        "eigh_tridiagonal_values_s": time_call(lambda: tri_eigvals_fn(diag, off).block_until_ready()),
        "fty_s": time_call(lambda: fty_fn(fj, yj).block_until_ready()),
        "iterations_s": time_call(lambda: iters_fn(w, yy).evidence.block_until_ready()),
    }


def _first_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_table(sizes) -> list[dict]:
    rows = []
    dev = jax.devices()[0].platform
    print(f"\njaxtransfer (optimized, float32, warm best of 3, {dev}) vs numpy float64 published algorithm:")
    print(
        f"{'n':>7}{'D':>6}{'K':>6}{'numpy':>8}{'ours':>7}{'ratio':>7}{'first':>7}{'n+1':>7}{'rel diff':>9}"
        f"{'host':>7}{'gram':>7}{'half':>7}{'eigh':>7}{'iters':>7}{'/old':>6}{'/new':>6}"
    )
    for n, d, k in sizes:
        f, y = planted_features(n, d, k)
        # first: the first call at this (D, K) in the process (compiles); n+1: then one more sample (no compile)
        first_s = _first_call(lambda f=f, y=y, k=k: logme(f[:-1], y[:-1], num_classes=k).block_until_ready())
        next_s = _first_call(lambda f=f, y=y, k=k: logme(f, y, num_classes=k).block_until_ready())
        ours_s = time_call(lambda f=f, y=y, k=k: logme(f, y, num_classes=k).block_until_ready())
        ours = float(logme(f, y, num_classes=k))
        start = time.perf_counter()
        ref = reference_logme(f, y)
        ref_s = time.perf_counter() - start
        parts = _breakdown(f, y, k)
        old_floor = parts["gram_s"] + parts["eigh_s"]
        new_floor = parts["half_gram_s"] + parts["eigh_s"]
        row = {"n": n, "D": d, "K": k, "numpy_s": ref_s, "ours_s": ours_s, "ratio": ref_s / ours_s}
        row.update(first_call_s=first_s, next_n_first_call_s=next_s)
        row.update(parts, ours=ours, numpy=ref, rel_diff=abs(ours - ref) / abs(ref))
        row.update(total_over_old_floor=ours_s / old_floor, total_over_new_floor=ours_s / new_floor)
        rows.append(row)
        print(
            f"{n:>7}{d:>6}{k:>6}{ref_s:>8.2f}{ours_s:>7.3f}{row['ratio']:>7.1f}{first_s:>7.2f}{next_s:>7.3f}"
            f"{row['rel_diff']:>9.1e}{parts['host_checks_s']:>7.3f}{parts['gram_s']:>7.3f}{parts['half_gram_s']:>7.3f}"
            f"{parts['eigh_s']:>7.3f}{parts['iterations_s']:>7.3f}{row['total_over_old_floor']:>6.2f}"
            f"{row['total_over_new_floor']:>6.2f}"
        )
    print(
        "first: first call at this (D, K), compiling; n+1: the next call with one more sample; host: input checks; "
        "gram / half: full F^T F / its upper triangle by panels; /old, /new: ours over (gram + eigh), (half + eigh)."
    )
    print("eigh alternatives (s):")
    for row in rows:
        print(
            f"  D={row['D']}: eigh {row['eigh_s']:.3f}, eigvalsh {row['eigvalsh_s']:.3f}, tridiagonal reduction "
            f"{row['tridiagonal_s']:.3f}, eigh_tridiagonal values {row['eigh_tridiagonal_values_s']:.3f}"
        )
    return rows


def many_vs_loop(n: int, d: int, k: int, models: int) -> dict:
    """``logme_many`` of ``models`` feature sets of one width against a Python loop of ``logme``: warm best of 3,
    and the first call (compiling) of each in a fresh process."""
    feats = [planted_features(n, d, k, seed=s)[0] for s in range(models)]
    y = planted_features(n, d, k)[1]
    cold = subprocess.run(
        [sys.executable, "-c", _MANY_COLD, str(n), str(d), str(k), str(models)], capture_output=True, text=True
    )
    cold_row = json.loads(cold.stdout.strip().splitlines()[-1])
    row = {
        "n": n,
        "D": d,
        "K": k,
        "models": models,
        "many_s": time_call(lambda: logme_many(feats, y, num_classes=k).block_until_ready()),
        "loop_s": time_call(lambda: [logme(f, y, num_classes=k).block_until_ready() for f in feats]),
        **cold_row,
    }
    row["loop_over_many"] = row["loop_s"] / row["many_s"]
    print(
        f"\nlogme_many of {models} models (n={n}, D={d}, K={k}) vs a loop of logme: warm {row['many_s']:.3f} s vs "
        f"{row['loop_s']:.3f} s (loop / many {row['loop_over_many']:.2f}); first calls in a fresh process "
        f"{row['many_first_s']:.2f} s vs {row['loop_first_s']:.2f} s"
    )
    return row


_MANY_COLD = textwrap.dedent(
    """
    import json, sys, time
    from bench._common import planted_features
    from jaxtransfer import logme, logme_many
    n, d, k, models = (int(a) for a in sys.argv[1:5])
    feats = [planted_features(n, d, k, seed=s)[0] for s in range(models)]
    y = planted_features(n, d, k)[1]
    t = time.perf_counter(); [logme(f, y, num_classes=k).block_until_ready() for f in feats]
    loop = time.perf_counter() - t
    # a different width, so that nothing compiled for the loop is reused
    feats = [f[:, :-1] for f in feats]
    t = time.perf_counter(); logme_many(feats, y, num_classes=k).block_until_ready()
    print(json.dumps({"loop_first_s": loop, "many_first_s": time.perf_counter() - t}))
    """
)


_STREAM = textwrap.dedent(
    """
    import json, resource, sys, time
    import jax, numpy as np
    from jaxtransfer import logme_stats, logme_from_stats
    n, d, k, chunk, ref64 = (int(a) for a in sys.argv[1:6])
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    def batches():
        for start in range(0, n, chunk):
            y = rng.integers(0, k, chunk).astype(np.int32)
            f = np.maximum(centres[y] + rng.normal(size=(chunk, d)).astype(np.float32) + 0.5, 0)
            yield f, y
    acc, acc64 = None, None
    t0 = time.perf_counter()
    for f, y in batches():
        s = logme_stats(f, y, num_classes=k)
        acc = s if acc is None else acc + s
        if ref64:
            with jax.enable_x64(True):
                s64 = logme_stats(f.astype(np.float64), y, num_classes=k)
                acc64 = s64 if acc64 is None else acc64 + s64
    score = float(logme_from_stats(acc))
    seconds = time.perf_counter() - t0
    out = {"n": n, "D": d, "K": k, "chunk": chunk, "float32": score, "seconds": seconds}
    if ref64:
        with jax.enable_x64(True):
            out["float64"] = float(logme_from_stats(acc64))
            out["rel_diff"] = abs(out["float32"] - out["float64"]) / abs(out["float64"])
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child would report its parent's peak.
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
    out["peak_rss_mib"] = (int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    print(json.dumps(out))
    """
)


def streaming(sizes) -> list[dict]:
    rows = []
    print("\nStreaming from a generator (chunks of 20,000 rows), float32 statistics; peak RSS of the process:")
    for n, d, k, ref64 in sizes:
        cmd = [sys.executable, "-c", _STREAM, str(n), str(d), str(k), str(min(20000, n)), str(int(ref64))]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        extra = f", float64 {row['float64']:.6f}, rel diff {row['rel_diff']:.1e}" if ref64 else ""
        print(
            f"n={n:>8} D={d} K={k}: LogME {row['float32']:.6f}{extra}; {row['seconds']:.1f} s; "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB"
        )
    return rows


_SHARDED = textwrap.dedent(
    """
    import json, sys, time
    import jax, numpy as np
    from jaxtransfer import logme, logme_sharded
    n, d, k = (int(a) for a in sys.argv[1:4])
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n).astype(np.int32)
    f = np.maximum(rng.normal(size=(k, d)).astype(np.float32)[y] + rng.normal(size=(n, d)).astype(np.float32), 0)
    def best(fn):
        fn(); t = []
        for _ in range(3):
            s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)
        return min(t)
    out = {"devices": jax.device_count(), "n": n, "D": d, "K": k,
           "sharded": float(logme_sharded(f, y, num_classes=k)), "single": float(logme(f, y, num_classes=k)),
           "sharded_s": best(lambda: logme_sharded(f, y, num_classes=k).block_until_ready()),
           "single_s": best(lambda: logme(f, y, num_classes=k).block_until_ready())}
    print(json.dumps(out))
    """
)


def sharded(n: int, d: int, k: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-c", _SHARDED, str(n), str(d), str(k)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    row = json.loads(res.stdout.strip().splitlines()[-1])
    print(
        f"\nSharded over {row['devices']} simulated CPU devices (n={n}, D={d}, K={k}): LogME {row['sharded']:.6f} "
        f"({row['sharded_s']:.3f} s) vs one device {row['single']:.6f} ({row['single_s']:.3f} s)"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        table = speed_table([(2000, 128, 10), (4000, 256, 20)])
        stream = streaming([(40000, 128, 10, True), (200000, 128, 10, False)])
        shard = sharded(8000, 64, 5)
        many = many_vs_loop(2000, 128, 10, 4)
    else:
        sizes = [(2000, 512, 10), (10000, 1024, 100), (10000, 2048, 100), (50000, 2048, 1000)]
        table = speed_table(sizes)
        stream = streaming([(100000, 1024, 10, False), (1000000, 1024, 10, True)])
        shard = sharded(80000, 512, 10)
        many = many_vs_loop(10000, 512, 100, 8)
    # The evidence of one realistic target through the public API, for the record of iterations used.
    f, y = planted_features(2000, 128, 10)
    iters = np.asarray(logme_evidence(f, y).num_iter).tolist()
    name = "logme_speed_quick" if args.quick else "logme_speed"
    payload = {"table": table, "streaming": stream, "sharded": shard, "many": many, "iterations_example": iters}
    path = save(name, payload)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
