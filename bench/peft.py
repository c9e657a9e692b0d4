"""Linear probe, BitFit, SSF, LoRA and full fine-tuning of a pre-trained tiny ViT on a real transfer task.

Source task: scikit-learn digits 0-4 (the ViT is pre-trained on them here, full training). Target task: digits
5-9, half of them for training and half for testing, with a new head. For every strategy the table gives the
trainable parameters, the test accuracy, the time per training step (after compilation) and, for SSF, the
inference time before and after merging (the merged model has the base architecture: the same cost).

    python -m bench.peft            # ~2 minutes on 2 CPU cores
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench._common import save
from jaxtransfer.data import digits_transfer
from jaxtransfer.finetune import count_params, evaluate, finetune, inject_lora, inject_ssf, merge_ssf
from jaxtransfer.models import TinyViT

EPOCHS = 30
LEARNING_RATES = {"linear_probe": 1e-2, "bitfit": 1e-2, "ssf": 1e-2, "lora": 3e-3, "full": 1e-3}


def _vit(num_outputs: int, seed: int) -> TinyViT:
    return TinyViT(8, 1, 2, 48, 3, 4, num_outputs, rngs=nnx.Rngs(seed))


def _inference_seconds(model, x) -> float:
    @nnx.jit
    def forward(model, x):
        return model(x)

    forward(model, x).block_until_ready()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        forward(model, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    data = digits_transfer(seed=0)
    xs, ys = data["source"]
    print(f"pre-training a tiny ViT on digits 0-4 ({len(ys)} images), full training, {EPOCHS} epochs ...")
    pretrained, hist = finetune(
        _vit(5, 0), (xs, ys), strategy="full", optimizer=optax.adam(1e-3), epochs=EPOCHS, progress=False
    )
    print(f"  source train accuracy {hist[-1]['train_accuracy']:.4f}")
    # The target model: pre-trained backbone, a new head for the 5 target classes.
    base = nnx.clone(pretrained)
    base.head = nnx.Linear(base.head.kernel[...].shape[0], 5, rngs=nnx.Rngs(1))
    train, test = data["target_train"], data["target_test"]
    rows = []
    print(f"\ntarget: digits 5-9, {len(train[1])} train / {len(test[1])} test images, {EPOCHS} epochs each")
    print(f"{'strategy':<16}{'trainable':>10}{'% of all':>10}{'test acc':>10}{'ms/step':>9}")
    total = count_params(base)
    runs = [(s, s) for s in LEARNING_RATES] + [("full (random init)", "full")]
    for label, strategy in runs:
        model = base if label != "full (random init)" else _vit(5, 7)
        if strategy == "ssf":
            model = inject_ssf(model)
        if strategy == "lora":
            model = inject_lora(model, rank=4)
        trained, hist = finetune(
            model,
            train,
            strategy=strategy,
            optimizer=optax.adam(LEARNING_RATES[strategy]),
            epochs=EPOCHS,
            progress=False,
        )
        steps = len(train[1]) // 64
        step_ms = 1000 * statistics.median(h["seconds"] for h in hist[1:]) / steps
        acc = evaluate(trained, test)["accuracy"]
        n_train = count_params(model, strategy)
        rows.append({"strategy": label, "trainable": n_train, "accuracy": acc, "ms_per_step": step_ms})
        print(f"{label:<16}{n_train:>10}{100 * n_train / total:>9.2f}%{acc:>10.4f}{step_ms:>9.2f}")
        if strategy == "ssf":
            ssf_model = trained
    merged = merge_ssf(ssf_model)
    x = jnp.asarray(test[0][:512])
    diff = float(jnp.max(jnp.abs(merged(x) - ssf_model(x))))
    same_arch = nnx.graphdef(merged) == nnx.graphdef(base) and count_params(merged) == count_params(base)
    t_unmerged, t_merged, t_base = (_inference_seconds(m, x) for m in (ssf_model, merged, base))
    print(
        f"\nSSF inference on {x.shape[0]} images: unmerged {1000 * t_unmerged:.2f} ms, merged "
        f"{1000 * t_merged:.2f} ms, base architecture {1000 * t_base:.2f} ms; merged == base architecture: "
        f"{same_arch}; max |merged - unmerged| = {diff:.1e}; merged test accuracy "
        f"{evaluate(merged, test)['accuracy']:.4f}"
    )
    path = save(
        "peft",
        {
            "rows": rows,
            "total_params": total,
            "epochs": EPOCHS,
            "learning_rates": LEARNING_RATES,
            "ssf_inference_ms": {"unmerged": 1000 * t_unmerged, "merged": 1000 * t_merged, "base": 1000 * t_base},
            "merge_max_abs_diff": diff,
            "merged_is_base_architecture": bool(same_arch),
            "device": str(jax.devices()[0]),
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
