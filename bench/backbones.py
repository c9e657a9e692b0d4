"""Feature-extraction throughput of the real backbones: images/s and sentences/s, jit against eager.

For every backbone: inputs/s of ``model.features`` on one batch, compiled with ``jax.jit`` and run eagerly (op by
op, the way un-jitted NNX code runs), on random inputs of the published size (EfficientNet-Lite: 224 / 240 / 260
px; MiniLM: token ids of length 128 and 32 — a news paragraph and a tweet). Plus the end-to-end time to extract
the features of real MNIST digits (resize + normalise + forward) with ``extract_features``.

    python -m bench.backbones            # ~3 minutes on 2 CPU cores
    python -m bench.backbones --quick    # smaller batches, results/backbones_quick.json

With the ``device`` tool (a GPU lent to the session) the same script gives the GPU rows.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench._common import save, time_call
from jaxtransfer.data import efficientnet_preprocess, extract_features, mnist_5k
from jaxtransfer.models import load


def _throughput(model, x, *, eager_repeat: int) -> dict:
    model.eval()
    graphdef, state = nnx.split(model)

    def features(state, x):
        return nnx.merge(graphdef, state).features(x)

    jitted = jax.jit(features)
    started = time.perf_counter()
    jitted(state, x).block_until_ready()
    compile_s = time.perf_counter() - started
    jit_s = time_call(lambda: jitted(state, x).block_until_ready())
    eager_s = time_call(lambda: features(state, x).block_until_ready(), repeat=eager_repeat)
    n = x.shape[0]
    return {
        "batch": n,
        "first_call_s": compile_s,
        "jit_per_s": n / jit_s,
        "eager_per_s": n / eager_s,
        "jit_speedup": eager_s / jit_s,
    }


def _torch_reference(batch: int, rng) -> list[dict]:
    """images/s of the PyTorch reference EfficientNet-Lite (``features`` = pooled head conv), if installed."""
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return []
    from jaxtransfer.models import source_weights

    rows = []
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        ref = EfficientNet.from_pretrained(name, weights_path=str(source_weights(name)))
        ref.eval()
        size = EfficientNet.get_image_size(name)
        x = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
        with torch.no_grad():
            seconds = time_call(lambda ref=ref, x=x: ref.extract_features(x).mean((2, 3)))
        rows.append({"model": name, "batch": batch, "per_s": batch / seconds, "threads": torch.get_num_threads()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch = 8 if args.quick else 32
    rows = []
    rng = np.random.default_rng(0)
    for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        model = load(name)
        size = model.config.image_size
        x = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
        rows.append({"model": name, "input": f"{size}x{size}x3", **_throughput(model, x, eager_repeat=1)})
    torch_rows = _torch_reference(batch, rng)
    text = load("minilm-l6")
    for length in (128, 32):
        tokens = rng.integers(1000, 30000, (batch * 2, length)).astype(np.int32)
        tokens[:, 0], tokens[:, -1] = 101, 102
        rows.append(
            {
                "model": "minilm-l6",
                "input": f"{length} tokens",
                **_throughput(text, jnp.asarray(tokens), eager_repeat=1),
            }
        )
    head = ("model", "input", "batch", "jit /s", "eager /s", "jit/eager", "1st call s")
    print("{:20s} {:12s} {:>5s} {:>9s} {:>9s} {:>9s} {:>10s}".format(*head))
    for r in rows:
        print(
            f"{r['model']:20s} {r['input']:12s} {r['batch']:5d} {r['jit_per_s']:9.1f} {r['eager_per_s']:9.1f} "
            f"{r['jit_speedup']:8.1f}x {r['first_call_s']:10.2f}"
        )

    for r in torch_rows:
        print(f"PyTorch reference {r['model']} (CPU, eager, same batch): {r['per_s']:.1f} images/s")

    # End to end on real data: resize 28x28 digits to 224, normalise, EfficientNet-Lite0 features.
    n = 100 if args.quick else 500
    ds = mnist_5k(max_per_class=n // 10)
    lite0 = load("efficientnet-lite0")
    started = time.perf_counter()
    feats = extract_features(lite0, ds.x, transform=lambda b: efficientnet_preprocess(b, 224), batch_size=batch)
    e2e = time.perf_counter() - started
    print(f"MNIST end to end (resize + Lite0 features, n={len(feats)}): {e2e:.1f} s = {len(feats) / e2e:.1f} images/s")
    e2e_row = {"n": len(feats), "seconds": e2e, "per_s": len(feats) / e2e}
    payload = {"rows": rows, "pytorch_reference": torch_rows, "mnist_end_to_end": e2e_row}
    path = save("backbones_quick" if args.quick else "backbones", {**payload, "batch": batch})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
