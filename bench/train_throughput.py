"""Training throughput of the real backbones with ``jaxtransfer.finetune.finetune``: examples/s, compile apart.

EfficientNet-Lite0 at 224 px (SSF and full fine-tuning) and MiniLM-L6 on 128 tokens (SSF, LoRA rank 8 and full), on
random inputs of the published size, a new head, Adam. Our figures come from the trainer's own history (epoch 2:
compiled, no compile time in it). The PyTorch rows train the same architectures in PyTorch on the same batch
(EfficientNet-Lite0 of ``efficientnet_lite_pytorch``; MiniLM as ``torch.nn.TransformerEncoder`` with
all-MiniLM-L6-v2's sizes, post-norm, GELU) with ``torch.optim.Adam`` - full fine-tuning only (PyTorch has no SSF).

    python -m bench.train_throughput            # ~6 minutes on 2 CPU cores
    python -m bench.train_throughput --quick    # smaller batches, results/train_throughput_quick.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import optax

from bench._common import save
from jaxtransfer.finetune import count_params, finetune, inject_lora, inject_ssf
from jaxtransfer.models import load


def _ours(model, x, y, strategy: str, batch: int, steps: int) -> dict:
    tx = optax.adam(1e-4)
    _, hist = finetune(model, (x, y), strategy=strategy, optimizer=tx, epochs=2, batch_size=batch, shuffle=False,
                       progress=False)  # fmt: skip
    return {
        "strategy": strategy,
        "trainable": count_params(model, strategy),
        "examples_per_s": hist[1]["examples_per_second"],
        "compile_s": hist[0]["compile_seconds"],
        "steps": steps,
    }


def _torch_steps(model, x, y, steps: int) -> float:
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.shape[0] / (time.perf_counter() - started)


def _torch_lite0(batch: int, steps: int, rng) -> dict | None:
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    from jaxtransfer.models import source_weights

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(source_weights("efficientnet-lite0")))
    model._fc = torch.nn.Linear(model._fc.in_features, 10)
    model.train()
    x = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    return {"strategy": "full", "examples_per_s": _torch_steps(model, x, y, steps), "threads": torch.get_num_threads()}


def _torch_minilm(batch: int, length: int, steps: int, rng) -> dict | None:
    try:
        import torch
    except ImportError:
        return None

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(30522, 384)
            self.pos = torch.nn.Embedding(512, 384)
            self.norm = torch.nn.LayerNorm(384, eps=1e-12)
            layer = torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu", batch_first=True,
                                                     layer_norm_eps=1e-12)  # fmt: skip
            self.layers = torch.nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
            self.head = torch.nn.Linear(384, 5)

        def forward(self, tokens):
            mask = tokens == 0
            h = self.norm(self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))[None])
            h = self.layers(h, src_key_padding_mask=mask)
            keep = (~mask).float()[..., None]
            return self.head((h * keep).sum(1) / keep.sum(1))

    tokens = rng.integers(1000, 30000, (batch, length))
    tokens[:, 0], tokens[:, -1] = 101, 102
    x, y = torch.from_numpy(tokens), torch.from_numpy(rng.integers(0, 5, batch))
    return {
        "strategy": "full",
        "examples_per_s": _torch_steps(Encoder(), x, y, steps),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batch, steps = (8, 2) if args.quick else (16, 4)
    rows = []

    images = rng.uniform(-1, 1, (batch * steps, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, 10, batch * steps).astype(np.int32)
    lite0 = load("efficientnet-lite0", num_outputs=10)
    for strategy, model in (("ssf", inject_ssf(lite0)), ("full", lite0)):
        rows.append({"model": "efficientnet-lite0", "input": "224x224x3", "batch": batch,
                     **_ours(model, images, labels, strategy, batch, steps)})  # fmt: skip
        print(rows[-1])
    length = 128
    tokens = rng.integers(1000, 30000, (batch * 2 * steps, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 101, 102
    classes = rng.integers(0, 5, len(tokens)).astype(np.int32)
    minilm = load("minilm-l6", num_outputs=5)
    for strategy, model in (("ssf", inject_ssf(minilm)), ("lora", inject_lora(minilm)), ("full", minilm)):
        rows.append({"model": "minilm-l6", "input": f"{length} tokens", "batch": batch * 2,
                     **_ours(model, tokens, classes, strategy, batch * 2, steps)})  # fmt: skip
        print(rows[-1])

    torch_rows = []
    for name, row in (
        ("efficientnet-lite0", _torch_lite0(batch, steps, rng)),
        ("minilm-l6", _torch_minilm(batch * 2, length, steps, rng)),
    ):
        if row is not None:
            torch_rows.append({"model": name, **row})
            print("PyTorch", torch_rows[-1])

    print(f"\n{'model':20s} {'strategy':8s} {'batch':>5s} {'trainable':>10s} {'ex/s':>8s} {'vs torch':>9s} "
          f"{'compile s':>10s}")  # fmt: skip
    torch_rate = {r["model"]: r["examples_per_s"] for r in torch_rows}
    for r in rows:
        ratio = r["examples_per_s"] / torch_rate[r["model"]] if r["model"] in torch_rate else float("nan")
        r["vs_torch_full"] = ratio
        print(f"{r['model']:20s} {r['strategy']:8s} {r['batch']:5d} {r['trainable']:10d} {r['examples_per_s']:8.1f} "
              f"{ratio:8.2f}x {r['compile_s']:10.1f}")  # fmt: skip
    for r in torch_rows:
        rate, threads = r["examples_per_s"], r["threads"]
        print(f"{r['model']:20s} {'torch':8s} {'':5s} {'':10s} {rate:8.1f}   (full, {threads} threads)")
    path = save("train_throughput_quick" if args.quick else "train_throughput", {"rows": rows, "pytorch": torch_rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
