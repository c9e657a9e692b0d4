"""Helpers shared by the benchmark scripts: timing of jitted calls and the machine record saved with results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def time_call(fn, *, repeat: int = 3) -> float:
    """Best wall time of ``fn()`` (which must block until its result is ready) after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if best > 5.0:
            break  # slow configurations: one timed run is enough
    return best


def machine() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": f"{dev.platform}:{dev.device_kind}",
        "jax": jax.__version__,
        "numpy": np.__version__,
        "x64": bool(jax.config.jax_enable_x64),
    }


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def planted_features(n: int, d: int, k: int, *, seed: int = 0, dtype=np.float32):
    """Non-negative (ReLU) features with a class signal and a shared mean, like a backbone's penultimate layer."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)]).astype(np.int32)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    f = centres[labels] + rng.normal(size=(n, d)).astype(np.float32) + 0.5
    return np.maximum(f, 0).astype(dtype), labels
