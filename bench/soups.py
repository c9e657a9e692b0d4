"""Model soups vs the best single fine-tuned model vs a logit ensemble, on a real transfer task.

A tiny ViT is pre-trained on scikit-learn digits 0-4 and fully fine-tuned on digits 5-9 with 8 hyper-parameter
settings (learning rate x shuffling seed), all from the same pre-trained weights and the same new head. Held-out
split: selects the best single model, drives the greedy soup and trains the learned soup. Test split: reported.

    python -m bench.soups          # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench._common import save
from jaxtransfer.data import digits_transfer
from jaxtransfer.finetune import finetune
from jaxtransfer.models import TinyViT
from jaxtransfer.soup import ensemble, evaluate_many, greedy_soup, learned_soup, uniform_soup

SETTINGS = [(lr, seed) for lr in (3e-4, 1e-3, 2e-3, 4e-3) for seed in (0, 1)]


def run(epochs: int = 15, pretrain_epochs: int = 30, settings=SETTINGS) -> dict:
    data = digits_transfer(seed=0)
    x_rest, y_rest = data["target_test"]
    half = len(y_rest) // 2
    held_out, test = (x_rest[:half], y_rest[:half]), (x_rest[half:], y_rest[half:])
    pretrained, _ = finetune(
        TinyViT(8, 1, 2, 48, 3, 4, 5, rngs=nnx.Rngs(0)),
        data["source"],
        strategy="full",
        optimizer=optax.adam(1e-3),
        epochs=pretrain_epochs,
        progress=False,
    )
    start_model = nnx.clone(pretrained)
    start_model.head = nnx.Linear(48, 5, rngs=nnx.Rngs(1))  # one shared new head: all runs start from here
    models = [
        finetune(start_model, data["target_train"], strategy="full", optimizer=optax.adam(lr), epochs=epochs,
                 seed=seed, progress=False)[0]
        for lr, seed in settings
    ]  # fmt: skip
    graphdef, _, rest = nnx.split(models[0], nnx.Param, ...)
    ingredients = [nnx.state(m, nnx.Param) for m in models]

    def apply_fn(params, x):
        return nnx.merge(graphdef, params, rest, copy=True)(x)

    forward = jax.jit(apply_fn)

    def accuracy(params, split):
        return float(jnp.mean(jnp.argmax(forward(params, jnp.asarray(split[0])), -1) == split[1]))

    def ce(params, split):
        logits = apply_fn(params, split[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, split[1]).mean()

    held = [accuracy(p, held_out) for p in ingredients]
    best = int(np.argmax(held))
    greedy = greedy_soup(ingredients, lambda p: accuracy(p, held_out), held_out_scores=held)
    learned, _ = learned_soup(
        ingredients, ce, (jnp.asarray(held_out[0]), jnp.asarray(held_out[1])), per_layer=True, steps=100
    )
    uniform = uniform_soup(ingredients)
    predict = ensemble(apply_fn, ingredients)

    def timed(fn, x):
        fn(x).block_until_ready()
        t = []
        for _ in range(10):
            s = time.perf_counter()
            fn(x).block_until_ready()
            t.append(time.perf_counter() - s)
        return 1000 * min(t)

    xt = jnp.asarray(test[0])
    single_ms = timed(lambda x: forward(ingredients[best], x), xt)
    rows = [
        {"method": "best single", "held_out": held[best], "test": accuracy(ingredients[best], test), "passes": 1,
         "ms": single_ms},
        {"method": "uniform soup", "held_out": accuracy(uniform, held_out), "test": accuracy(uniform, test),
         "passes": 1, "ms": single_ms},
        {"method": f"greedy soup ({len(greedy.chosen)} of {len(ingredients)})", "held_out": greedy.trace[-1],
         "test": accuracy(greedy.soup, test), "passes": 1, "ms": single_ms},
        {"method": "learned soup (per layer)", "held_out": accuracy(learned, held_out),
         "test": accuracy(learned, test), "passes": 1, "ms": single_ms},
        {"method": "logit ensemble", "held_out": float(jnp.mean(jnp.argmax(predict(held_out[0]), -1) == held_out[1])),
         "test": float(jnp.mean(jnp.argmax(predict(xt), -1) == test[1])), "passes": len(ingredients),
         "ms": timed(predict, xt)},
    ]  # fmt: skip
    individual_test = [accuracy(p, test) for p in ingredients]
    outputs = evaluate_many(apply_fn, ingredients, xt)  # one vmap over all 8 models
    assert outputs.shape[0] == len(ingredients)
    return {"rows": rows, "individual_held_out": held, "individual_test": individual_test, "settings": settings}


def main() -> None:
    result = run()
    print(f"{'method':<28}{'held-out acc':>13}{'test acc':>10}{'passes':>8}{'ms (224 imgs)':>15}")
    for r in result["rows"]:
        print(f"{r['method']:<28}{r['held_out']:>13.4f}{r['test']:>10.4f}{r['passes']:>8}{r['ms']:>15.2f}")
    print("individual test accuracies:", np.round(result["individual_test"], 4).tolist())
    print(f"saved {save('soups', result)}")


if __name__ == "__main__":
    main()
