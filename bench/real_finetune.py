"""Fine-tuning the real pre-trained backbones with each strategy, on the bundled real data: test accuracy, trainable
parameters, training examples/s.

- EfficientNet-Lite0 (ImageNet weights) on real MNIST digits (``mnist_5k``, 50 per class: 300 train / 100 val / 100
  test), at 96 x 96 px so that a CPU run stays short; BatchNorm statistics frozen (the trainer's default for every
  strategy but full, which keeps them frozen here too). LoRA does not apply: Lite0 has no ``nnx.Linear`` outside the
  head.
- MiniLM-L6 (all-MiniLM-L6-v2) on BBC News (60 articles per topic: 180 train / 60 val / 60 test), 128 tokens.

Every run: a new head, Adam, ``select="best"`` on the validation split, the test accuracy of the selected epoch.

    python -m bench.real_finetune            # ~10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time

from bench._common import save
from jaxtransfer.data import bbc_news, mnist_5k
from jaxtransfer.finetune import count_params, evaluate, finetune, inject_lora, inject_ssf
from jaxtransfer.models import load, tokenize

_PREPARE = {"ssf": inject_ssf, "lora": inject_lora}


def _run(name, model, strategy, train, val, test, *, lr, epochs, batch) -> dict:
    model = _PREPARE.get(strategy, lambda m: m)(model)
    started = time.perf_counter()
    trained, hist = finetune(model, train, strategy=strategy, learning_rate=lr, epochs=epochs, batch_size=batch,
                             eval_data=val, select="best", progress=False, freeze_batch_norm=True)  # fmt: skip
    row = {
        "model": name,
        "strategy": strategy,
        "trainable": count_params(model, strategy),
        "lr": lr,
        "best_epoch": next(h["epoch"] for h in hist if h["selected"]),
        "val_accuracy": max(h["eval_accuracy"] for h in hist),
        "test_accuracy": evaluate(trained, test)["accuracy"],
        "examples_per_s": hist[-1]["examples_per_second"],
        "seconds": time.perf_counter() - started,
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    rows = []

    digits = mnist_5k(image_size=96, max_per_class=50)
    parts = [digits.part(p) for p in ("train", "val", "test")]
    lite0 = load("efficientnet-lite0", num_outputs=10)
    for strategy, lr in (("linear_probe", 3e-3), ("bitfit", 3e-3), ("ssf", 3e-3), ("full", 3e-4)):
        rows.append(_run("efficientnet-lite0", lite0, strategy, *parts, lr=lr, epochs=args.epochs, batch=32))

    news = bbc_news(max_per_class=60)
    parts = [(tokenize(list(x), max_length=128), y) for x, y in (news.part(p) for p in ("train", "val", "test"))]
    minilm = load("minilm-l6", num_outputs=news.num_classes)
    for strategy, lr in (("linear_probe", 3e-3), ("bitfit", 3e-3), ("ssf", 3e-3), ("lora", 1e-3), ("full", 1e-4)):
        rows.append(_run("minilm-l6", minilm, strategy, *parts, lr=lr, epochs=args.epochs, batch=16))

    print(f"\n{'model':20s} {'strategy':13s} {'trainable':>10s} {'val':>7s} {'test':>7s} {'ex/s':>7s} {'s':>6s}")
    for r in rows:
        print(f"{r['model']:20s} {r['strategy']:13s} {r['trainable']:10d} {r['val_accuracy']:7.3f} "
              f"{r['test_accuracy']:7.3f} {r['examples_per_s']:7.1f} {r['seconds']:6.0f}")  # fmt: skip
    print(f"saved {save('real_finetune', {'rows': rows, 'epochs': args.epochs})}")


if __name__ == "__main__":
    main()
