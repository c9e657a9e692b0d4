"""The early-checkpoint experiment: wiring checked against the trainer's own evaluation on the real digits."""

import numpy as np
import optax
import pytest
from flax import nnx

from jaxtransfer.data import digits_transfer
from jaxtransfer.experiments import pretraining_checkpoints, transfer_from_checkpoints
from jaxtransfer.finetune import evaluate, finetune, merged_model
from jaxtransfer.landscape import interpolate
from jaxtransfer.models import MLP


def _flat(x):
    return x.reshape(len(x), -1).astype(np.float32)


def test_checkpoints_then_transfer_rows_match_the_trainer():
    data = digits_transfer(seed=0)
    source = (_flat(data["source"][0]), data["source"][1])
    train = (_flat(data["target_train"][0])[:200], data["target_train"][1][:200])
    test = (_flat(data["target_test"][0])[:100], data["target_test"][1][:100])
    kw = {"optimizer": optax.sgd(0.05), "batch_size": 32, "progress": False}
    ckpts = pretraining_checkpoints(MLP(64, [16], 5, rngs=nnx.Rngs(0)), source, epochs=(1, 3), **kw)
    assert sorted(ckpts) == [1, 3]
    again, _ = finetune(ckpts[1], source, strategy="full", epochs=2, **kw)  # the segment after epoch 1, by hand
    for a, b in zip(nnx.state(again, nnx.Param).values(), nnx.state(ckpts[3], nnx.Param).values(), strict=False):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def head(model):
        model.head = nnx.Linear(16, 5, rngs=nnx.Rngs(9))
        return model

    rows = transfer_from_checkpoints(ckpts, train, test, new_head=head, num=5, epochs=2, **kw)
    assert [r["checkpoint"] for r in rows] == [1, 3]
    for row, ckpt in zip(rows, ckpts.values(), strict=True):
        start = head(nnx.clone(ckpt))
        runs = [finetune(start, train, strategy="full", epochs=2, seed=s, **kw)[0] for s in (0, 1)]
        assert row["test_accuracy"] == [evaluate(m, test)["accuracy"] for m in runs]
        p1, p2 = (nnx.state(m, nnx.Param) for m in runs)
        # the barrier from the trainer's evaluation of 5 interpolated models (its own loss code)
        losses = [evaluate(merged_model(runs[0], interpolate(p1, p2, t)), test)["loss"] for t in np.linspace(0, 1, 5)]
        chord = [(1 - t) * losses[0] + t * losses[-1] for t in np.linspace(0, 1, 5)]
        assert row["barrier"] == pytest.approx(max(np.subtract(losses, chord)), abs=1e-5)
        assert row["mean_accuracy"] == pytest.approx(np.mean(row["test_accuracy"]))
        assert all(d > 0 for d in row["relative_distance_from_start"]) and row["distance_between_runs"] > 0
    with pytest.raises(ValueError, match="increasing"):
        pretraining_checkpoints(MLP(64, [16], 5, rngs=nnx.Rngs(0)), source, epochs=(2, 1))
    with pytest.raises(ValueError, match="two different seeds"):
        transfer_from_checkpoints(ckpts, train, test, seeds=(0, 0))
