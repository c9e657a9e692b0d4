"""The seed "What is being transferred in transfer learning?" (Neyshabur, Sedghi and Zhang, NeurIPS 2020) at small
scale on real data: two fine-tunings from a pre-trained model (P-T) vs two from a random init (RI-T).

Source: scikit-learn digits 0-4 (a tiny ViT pre-trained here). Target: digits 5-9. A P-T pair starts both runs from
the pre-trained weights; an RI-T pair from two different random inits (the same new head). For each pair: the loss
barrier on
the straight line between the two fine-tuned models, the linear CKA of their features, the relative distance of the
weights from their start; module criticality of a P-T model; and the block-shuffle experiment (the target images cut
into blocks that are shuffled by one fixed permutation: less visual structure for pre-training to help with).

    python -m bench.what_is_transferred          # ~2 minutes on 2 CPU cores
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer.criticality import module_criticality
from jaxtransfer.data import digits_transfer
from jaxtransfer.data.variants import block_shuffle
from jaxtransfer.finetune import evaluate, finetune
from jaxtransfer.landscape import barrier, linear_path
from jaxtransfer.models import TinyViT
from jaxtransfer.similarity import cka, param_distance

DIM = 32


def _vit(seed: int) -> TinyViT:
    return TinyViT(8, 1, 2, DIM, 2, 4, 5, rngs=nnx.Rngs(seed))


def what_is_transferred(
    epochs: int = 15, pretrain_epochs: int = 20, grid: int = 11, noise_samples: int = 10, blocks=(8, 4, 2, 1)
) -> dict:
    """Runs the experiment of the module docstring; returns ``{"pairs", "criticality", "block_shuffle"}``.

    Example (minutes at the default sizes; ``notebooks/what_is_transferred.ipynb`` runs it in CI):
        >>> report = what_is_transferred(epochs=1, pretrain_epochs=1, grid=3, blocks=(1,))  # doctest: +SKIP
        >>> sorted(report)  # doctest: +SKIP
        ['block_shuffle', 'criticality', 'pairs']
        >>> DIM  # the tiny ViT's width
        32
    """
    data = digits_transfer(seed=0)
    train, test = data["target_train"], data["target_test"]
    pretrained, _ = finetune(
        _vit(0), data["source"], strategy="full", optimizer=optax.adam(1e-3), epochs=pretrain_epochs, progress=False
    )

    def with_head(model):
        m = nnx.clone(model)
        m.head = nnx.Linear(DIM, 5, rngs=nnx.Rngs(1))
        return m

    starts = {"P-T": with_head(pretrained), "RI-T": with_head(_vit(7))}
    # The second run of a pair: the same start for P-T (the pre-trained weights), another random init for RI-T.
    second = {"P-T": starts["P-T"], "RI-T": with_head(_vit(8))}
    kw = {"strategy": "full", "optimizer": optax.adam(1e-3), "epochs": epochs, "progress": False}
    graphdef, _, rest = nnx.split(starts["P-T"], nnx.Param, ...)
    xt, yt = jnp.asarray(test[0]), jnp.asarray(test[1])

    def loss_fn(params, d):
        logits = nnx.merge(graphdef, params, rest, copy=True)(d[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, d[1]).mean()

    out = {"pairs": {}}
    for name, start in starts.items():
        m1, _ = finetune(start, train, seed=0, **kw)
        m2, _ = finetune(second[name], train, seed=1, **kw)
        p0, p1, p2 = (nnx.state(m, nnx.Param) for m in (start, m1, m2))
        path = linear_path(loss_fn, p1, p2, (xt, yt), num=11)
        height, where = barrier(path)
        out["pairs"][name] = {
            "test_accuracy": [evaluate(m1, test)["accuracy"], evaluate(m2, test)["accuracy"]],
            "barrier": height,
            "barrier_at": where,
            "path": path.losses.tolist(),
            "cka": float(cka(m1.features(xt), m2.features(xt))),
            "relative_distance_from_start": param_distance(p0, p1, per_leaf=False)["relative"],
            "distance_between_pair": param_distance(p1, p2, per_leaf=False)["total"],
        }
        if name == "P-T":
            modules = {"patch_embed": "patch_embed", "blocks.0": "blocks.0", "blocks.1": "blocks.1", "head": "head"}
            crit = module_criticality(
                loss_fn, p0, p1, (xt, yt), modules, alphas=np.linspace(0, 1, grid),
                sigmas=np.logspace(-16, 0, grid), num_samples=noise_samples,
            )  # fmt: skip
            out["criticality"] = crit.to_dict()
    shuffle = []
    for b in blocks:
        shuffled_train = (block_shuffle(train[0], train[0].shape[1] // b), train[1])  # tiles of b x b pixels
        shuffled_test = (block_shuffle(test[0], test[0].shape[1] // b), test[1])
        accs = {
            n: evaluate(finetune(s, shuffled_train, seed=0, **kw)[0], shuffled_test)["accuracy"]
            for n, s in starts.items()
        }
        shuffle.append({"block": b, **accs, "gap": accs["P-T"] - accs["RI-T"]})
    out["block_shuffle"] = shuffle
    return out
