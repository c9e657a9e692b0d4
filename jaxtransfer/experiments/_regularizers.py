"""Plain fine-tuning vs L2-SP, DELTA, BSS and Co-Tuning with little target data, over several seeds.

A tiny ViT is pre-trained on scikit-learn digits 0-4; the target task is digits 5-9 with only ``PER_CLASS``
labelled images per class (the rest of the target images are the test set). Every method fully fine-tunes the same
pre-trained weights with a new head (Adam 1e-3, 40 epochs); the seed changes the labelled subset and the shuffling.

    python -m bench.regularizers            # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer.data import load_digits
from jaxtransfer.finetune import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    evaluate,
    finetune,
    l2_sp,
)
from jaxtransfer.models import TinyViT

PER_CLASS = 10
SEEDS = (0, 1, 2)
EPOCHS = 40
DIM = 32


def _probe_head_loss(features, labels):
    """Fits a linear softmax probe on frozen features; returns the loss of the probe as a function of features."""
    w = jnp.zeros((features.shape[1], 5))
    tx = optax.adam(0.05)
    state = tx.init(w)

    def loss(w, f):
        return optax.softmax_cross_entropy_with_integer_labels(f @ w, labels).mean()

    for _ in range(200):
        g = jax.grad(loss)(w, features)
        u, state = tx.update(g, state)
        w = optax.apply_updates(w, u)
    return lambda f: loss(w, f)


def regularizer_study(seeds=SEEDS, epochs: int = EPOCHS, per_class: int = PER_CLASS, pretrain_epochs: int = 30) -> dict:
    """Runs the comparison of the module docstring; returns ``{"summary": {method: {"mean", "std", "runs"}}, ...}``
    with the test accuracy of every method and seed.

    Example (a whole study, minutes at the default sizes; ``notebooks/regularizers.ipynb`` runs one seed in CI):
        >>> report = regularizer_study(seeds=(0,), epochs=1, per_class=3, pretrain_epochs=1)  # doctest: +SKIP
        >>> sorted(report["summary"])  # doctest: +SKIP
        ['BSS', 'Co-Tuning', 'DELTA', 'L2-SP', 'plain']
        >>> PER_CLASS, SEEDS, EPOCHS  # the published comparison's sizes
        (10, (0, 1, 2), 40)
    """
    images, labels = load_digits()
    x = images[..., None]
    source = labels < 5
    pretrained, _ = finetune(
        TinyViT(8, 1, 2, DIM, 2, 4, 5, rngs=nnx.Rngs(0)),
        (x[source], labels[source]),
        strategy="full",
        optimizer=optax.adam(1e-3),
        epochs=pretrain_epochs,
        progress=False,
    )
    xt, yt = x[~source], labels[~source] - 5
    results = {m: [] for m in ("plain", "L2-SP", "DELTA", "BSS", "Co-Tuning")}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        train_idx = np.concatenate([rng.choice(np.flatnonzero(yt == k), per_class, replace=False) for k in range(5)])
        test_idx = np.setdiff1d(np.arange(len(yt)), train_idx)
        train, test = (xt[train_idx], yt[train_idx]), (xt[test_idx], yt[test_idx])
        start = nnx.clone(pretrained)
        start.head = nnx.Linear(DIM, 5, rngs=nnx.Rngs(100 + seed))
        anchor = jax.tree.map(jnp.copy, nnx.state(start, nnx.Param))
        teacher_features = pretrained.features(jnp.asarray(train[0]))
        channel_w = delta_channel_weights(_probe_head_loss(teacher_features, jnp.asarray(train[1])), teacher_features)
        source_probs = jax.nn.softmax(pretrained(jnp.asarray(train[0])), axis=-1)
        relationship = co_tuning_relationship(source_probs, jnp.asarray(train[1]), 5)
        with_source = nnx.clone(start)
        with_source.source_head = nnx.clone(pretrained.head)  # the pre-trained source head, trained alongside
        frozen = nnx.clone(pretrained)

        def delta(m, xb, yb, frozen=frozen, channel_w=channel_w):
            return 0.01 * delta_penalty(m.features(xb), jax.lax.stop_gradient(frozen.features(xb)), channel_w)

        def bss(m, xb, yb):
            return 0.001 * bss_penalty(m.features(xb), k=1)

        def cotune(m, xb, yb, relationship=relationship):
            return 2.3 * co_tuning_loss(m.source_head(m.features(xb)), yb, relationship)

        configs = {
            "plain": (start, optax.adam(1e-3), None),
            "L2-SP": (start, optax.chain(l2_sp(anchor, alpha=0.01, beta=0.01), optax.adam(1e-3)), None),
            "DELTA": (start, optax.adam(1e-3), delta),
            "BSS": (start, optax.adam(1e-3), bss),
            "Co-Tuning": (with_source, optax.adam(1e-3), cotune),
        }
        for name, (model, tx, reg) in configs.items():
            trained, _ = finetune(
                model, train, strategy="full", optimizer=tx, epochs=epochs, batch_size=10, seed=seed,
                regularizer=reg, progress=False,
            )  # fmt: skip
            results[name].append(evaluate(trained, test)["accuracy"])
    summary = {
        m: {"mean": statistics.mean(a), "std": statistics.stdev(a) if len(a) > 1 else 0.0, "runs": a}
        for m, a in results.items()
    }
    return {"summary": summary, "per_class": per_class, "seeds": list(seeds), "epochs": epochs}
