import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtransfer.finetune import evaluate, finetune, inject_ssf
from jaxtransfer.models import MLP

rng = np.random.default_rng(0)
X = rng.normal(size=(256, 6)).astype(np.float32)
W = rng.normal(size=(6, 3))
Y = np.argmax(X @ W, 1).astype(np.int32)


def _mlp(out=3):
    return MLP(6, (16,), out, rngs=nnx.Rngs(0))


def test_loss_falls_and_history_has_eval():
    opt = optax.adam(1e-2)
    _, hist = finetune(_mlp(), (X, Y), strategy="full", optimizer=opt, epochs=8, eval_data=(X, Y), progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["eval_accuracy"] > 0.8
    assert [h["epoch"] for h in hist] == list(range(1, 9))


def test_deterministic_given_the_seed():
    a = finetune(inject_ssf(_mlp()), (X, Y), epochs=2, progress=False, seed=3)[1]
    b = finetune(inject_ssf(_mlp()), (X, Y), epochs=2, progress=False, seed=3)[1]
    timing = {"seconds", "compile_seconds", "examples_per_second"}
    strip = (
        [{k: v for k, v in h.items() if k not in timing} for h in a],
        [{k: v for k, v in h.items() if k not in timing} for h in b],
    )
    assert strip[0] == strip[1]


def test_regression_head():
    t = (X @ W[:, :1]).astype(np.float32)[:, 0]
    opt = optax.adam(1e-2)
    model, hist = finetune(
        _mlp(1), (X, t), strategy="full", optimizer=opt, task="regression", epochs=20, progress=False
    )
    assert hist[-1]["train_neg_mse"] > hist[0]["train_neg_mse"]
    assert evaluate(model, (X, t), task="regression")["neg_mse"] > -0.5


def test_evaluate_checks_its_data():
    with pytest.raises(ValueError, match="data: 256 inputs but 10 targets"):
        evaluate(_mlp(), (X, Y[:10]))


def test_input_model_is_not_changed():
    model = _mlp()
    before = model(X[:4])
    finetune(model, (X, Y), strategy="full", epochs=1, progress=False)
    np.testing.assert_array_equal(np.asarray(model(X[:4])), np.asarray(before))


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        ((X, Y[:-1]), {}, "256 inputs but 255 targets"),
        ((X[:0], Y[:0]), {}, "empty"),
        ((np.full_like(X, np.nan), Y), {}, "NaN"),
        ((X, Y), {"batch_size": 1000}, "larger than the 256"),
        ((X, Y), {"task": "ranking"}, "task must be"),
        (X, {}, "must be a pair"),
    ],
)
def test_bad_input(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        finetune(_mlp(), data, strategy="full", progress=False, **kwargs)


@pytest.mark.parametrize("graph_mode", [True, False], ids=["graph-mode", "tree-mode"])
def test_inject_finetune_merge_in_both_nnx_modes(graph_mode):
    from jaxtransfer.finetune import merge_ssf
    from jaxtransfer.models import CNN

    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = (np.arange(64) % 3).astype(np.int32)
    with nnx.set_graph_mode(graph_mode):
        model = inject_ssf(CNN(1, 4, 1, 3, norm="batch", rngs=nnx.Rngs(0)))
        trained, hist = finetune(model, (x, y), epochs=2, batch_size=16, progress=False, eval_data=(x, y))
        merged = merge_ssf(trained)
        merged.eval()
        trained.eval()
        np.testing.assert_allclose(np.asarray(merged(x)), np.asarray(trained(x)), atol=1e-5)
        # the history's eval loss is the cross-entropy of the trained model on eval_data, recomputed in numpy
        logits = np.asarray(trained(x), np.float64)
        log_p = (
            logits
            - logits.max(1, keepdims=True)
            - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        )
        assert hist[-1]["eval_loss"] == pytest.approx(-log_p[np.arange(len(y)), y].mean(), rel=1e-5)


def test_backbone_learning_rate_scale():
    from flax import nnx as _nnx

    model = _mlp()
    start = _nnx.state(model, _nnx.Param)

    def moved(m, part):
        now = _nnx.state(m, _nnx.Param)
        return sum(
            float(np.sum(np.square(np.asarray(a) - np.asarray(b))))
            for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(now), jax.tree.leaves(start), strict=True)
            if (getattr(p[0], "key", None) == "head") == (part == "head")
        )

    kw = {"strategy": "full", "optimizer": optax.sgd(0.05), "epochs": 1, "progress": False}
    plain, _ = finetune(model, (X, Y), **kw)
    slow, _ = finetune(model, (X, Y), backbone_lr_scale=0.1, **kw)
    assert moved(slow, "backbone") < 0.2 * moved(plain, "backbone")
    assert moved(slow, "head") > 0
    with pytest.raises(ValueError, match="backbone_lr_scale must be > 0"):
        finetune(model, (X, Y), backbone_lr_scale=0.0, **kw)


def test_freeze_batch_norm_keeps_the_running_statistics():
    from jaxtransfer.models import CNN

    model = CNN(1, 4, 1, 3, norm="batch", rngs=nnx.Rngs(0))
    x = rng.normal(2.0, 3.0, size=(64, 6, 6, 1)).astype(np.float32)  # far from the initial statistics (0, 1)
    y = rng.integers(0, 3, 64).astype(np.int32)
    stats = lambda m: jax.tree.leaves(nnx.state(m, nnx.BatchStat))  # noqa: E731
    frozen, _ = finetune(model, (x, y), strategy="full", epochs=2, batch_size=16, progress=False,
                         freeze_batch_norm=True)  # fmt: skip
    moved, _ = finetune(model, (x, y), strategy="full", epochs=2, batch_size=16, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(stats(frozen), stats(model), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(stats(moved), stats(model), strict=True))
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), nnx.state(frozen, nnx.Param), nnx.state(model, nnx.Param)
    )
    assert all(jax.tree.leaves(changed))  # every parameter, BatchNorm scale and bias included, still trains
