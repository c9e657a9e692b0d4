"""The trainer against independent references: hand-written optax loops, numpy formulas, scikit-learn, and a run
interrupted in a subprocess."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    Rule,
    accuracy,
    apply_fn,
    evaluate,
    finetune,
    mean_average_precision,
    per_example_loss,
    predict,
    top_k_accuracy,
)
from jaxtransfer.models import MLP

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 6)).astype(np.float32)
Y = (np.argmax(X[:, :3], 1)).astype(np.int32)
KW = {"strategy": "full", "progress": False, "shuffle": False}


def _mlp(out=3, seed=0):
    return MLP(6, (8,), out, rngs=nnx.Rngs(seed))


def _params(model):
    return nnx.state(model, nnx.Param)


def _allclose(a, b, **kw):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


def _reference_run(model, batches, tx, loss=None):
    """A plain optax loop over ``batches`` (lists of unpadded (x, y)), the cross-entropy mean over each batch."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p, x, y):
        logits = nnx.merge(graphdef, p, rest, copy=True)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    state = tx.init(params)
    for x, y in batches:
        grads = jax.grad(loss_fn)(params, jnp.asarray(x), jnp.asarray(y))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_partial_last_batch_matches_an_unpadded_reference():
    """40 samples at batch 16: 16, 16 and a padded 8. Same weights as an optax loop on the unpadded batches."""
    tx = optax.sgd(0.1)
    got, _ = finetune(_mlp(), (X, Y), optimizer=tx, epochs=2, batch_size=16, **KW)
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in (0, 16, 32)] * 2
    ref = _reference_run(_mlp(), batches, tx)
    # measured max |diff| 6e-8 (float32 summation order); bar 1e-6
    _allclose(_params(got), ref, atol=1e-6)


def test_stream_equals_arrays_and_callable_stream_runs_several_epochs():
    tx = optax.sgd(0.1)
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in (0, 16, 32)]
    a, _ = finetune(_mlp(), (X, Y), optimizer=tx, epochs=2, batch_size=16, **KW)
    b, _ = finetune(_mlp(), batches, optimizer=tx, epochs=2, batch_size=16, **KW)
    c, hist = finetune(_mlp(), lambda: iter(batches), optimizer=tx, epochs=2, batch_size=16, **KW)
    _allclose(_params(a), _params(b), atol=0, rtol=0)
    _allclose(_params(a), _params(c), atol=0, rtol=0)
    assert [h["steps"] for h in hist] == [3, 3]
    with pytest.raises(ValueError, match="one-shot iterator"):
        finetune(_mlp(), iter(batches), optimizer=tx, epochs=2, batch_size=16, **KW)


def test_shuffling_is_seeded_per_epoch():
    a, _ = finetune(_mlp(), (X, Y), strategy="full", epochs=2, batch_size=8, seed=1, progress=False)
    b, _ = finetune(_mlp(), (X, Y), strategy="full", epochs=2, batch_size=8, seed=1, progress=False)
    c, _ = finetune(_mlp(), (X, Y), strategy="full", epochs=2, batch_size=8, seed=2, progress=False)
    _allclose(_params(a), _params(b), atol=0, rtol=0)
    assert not np.array_equal(np.asarray(a.head.kernel[...]), np.asarray(c.head.kernel[...]))


def test_transform_runs_once_per_batch_with_distinct_keys():
    seen = []

    def record(key_data):
        seen.append(np.asarray(key_data).tobytes())

    def transform(batch, key):
        jax.debug.callback(record, jax.random.key_data(key))
        x, y = batch
        return x + 0.01 * jax.random.normal(key, x.shape), y

    finetune(_mlp(), (X, Y), transform=transform, epochs=3, batch_size=16, **KW)
    assert len(seen) == 9 and len(set(seen)) == 9  # 3 batches x 3 epochs, each its own key


def test_no_recompilation_on_a_second_call(compiles):
    tx = optax.adam(1e-3)
    finetune(_mlp(), (X, Y), optimizer=tx, epochs=1, batch_size=16, eval_data=(X, Y), **KW)
    compiles.clear()
    finetune(_mlp(), (X, Y), optimizer=tx, epochs=1, batch_size=16, eval_data=(X, Y), **KW)
    assert compiles == []
    # the built-in optimiser is cached by recipe too
    finetune(_mlp(), (X, Y), learning_rate=1e-3, epochs=1, batch_size=16, **KW)
    compiles.clear()
    finetune(_mlp(), (X, Y), learning_rate=1e-3, epochs=1, batch_size=16, **KW)
    assert compiles == []


def test_rules_frozen_multiplier_and_weight_decay_equal_a_hand_built_optax():
    rules = [Rule("layers.*", frozen=True), Rule("head.bias", lr_scale=0.5, weight_decay=False)]
    got, _ = finetune(_mlp(), (X, Y), learning_rate=1e-2, weight_decay=0.1, param_rules=rules, epochs=2,
                      batch_size=16, **KW)  # fmt: skip
    model = _mlp()
    np.testing.assert_array_equal(np.asarray(got.layers[0].kernel[...]), np.asarray(model.layers[0].kernel[...]))
    np.testing.assert_array_equal(np.asarray(got.layers[0].bias[...]), np.asarray(model.layers[0].bias[...]))
    # reference: train the head only, with optax.multi_transform
    graphdef, head, rest = nnx.split(model, lambda path, _: path[0] == "head", ...)
    tx = optax.multi_transform(
        {"kernel": optax.adamw(1e-2, weight_decay=0.1), "bias": optax.chain(optax.adam(1e-2), optax.scale(0.5))},
        jax.tree_util.tree_map_with_path(lambda p, _: str(p[1].key), head),
    )

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p, rest, copy=True)(x), y).mean()

    state = tx.init(head)
    for _ in range(2):
        for i in (0, 16, 32):
            grads = jax.grad(loss_fn)(head, jnp.asarray(X[i : i + 16]), jnp.asarray(Y[i : i + 16]))
            updates, state = tx.update(grads, state, head)
            head = optax.apply_updates(head, updates)
    # measured max |diff| 1.5e-8; bar 1e-6
    _allclose(nnx.state(got.head, nnx.Param), head["head"], atol=1e-6)


def test_backbone_lr_scale_is_a_rule():
    tx = optax.sgd(0.05)
    a, _ = finetune(_mlp(), (X, Y), optimizer=tx, backbone_lr_scale=0.1, epochs=1, batch_size=40, **KW)
    start, step = _params(_mlp()), jax.tree.map(lambda a, b: a - b, _params(a), _params(_mlp()))
    plain, _ = finetune(_mlp(), (X, Y), optimizer=tx, epochs=1, batch_size=40, **KW)
    full_step = jax.tree.map(lambda a, b: a - b, _params(plain), start)
    # one SGD step from the same start: the backbone moved exactly a tenth (to float rounding), the head fully
    # (steps ~1e-4 taken as differences of weights ~0.5: float32 rounding 6e-8; bar 1e-7)
    _allclose(step["layers"], jax.tree.map(lambda s: 0.1 * s, full_step["layers"]), rtol=0, atol=1e-7)
    _allclose(step["head"], full_step["head"], rtol=0, atol=1e-7)


def test_gradient_accumulation_equals_the_large_batch():
    tx = optax.sgd(0.1)
    a, _ = finetune(_mlp(), (X[:32], Y[:32]), optimizer=tx, accumulate_steps=2, epochs=2, batch_size=16, **KW)
    b, _ = finetune(_mlp(), (X[:32], Y[:32]), optimizer=tx, epochs=2, batch_size=32, **KW)
    _allclose(_params(a), _params(b), atol=1e-6)


def test_clipping_equals_optax_chain():
    tx = optax.sgd(0.5)
    a, _ = finetune(_mlp(), (X, Y), optimizer=tx, clip_grad_norm=0.01, epochs=1, batch_size=16, **KW)
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in (0, 16, 32)]
    ref = _reference_run(_mlp(), batches, optax.chain(optax.clip_by_global_norm(0.01), optax.sgd(0.5)))
    _allclose(_params(a), ref, atol=1e-6)


def test_ema_of_one_step():
    tx = optax.sgd(0.5)
    a, _ = finetune(_mlp(), (X, Y), optimizer=tx, ema_decay=0.9, epochs=1, batch_size=40, **KW)
    b, _ = finetune(_mlp(), (X, Y), optimizer=tx, epochs=1, batch_size=40, **KW)
    expected = jax.tree.map(lambda p0, p1: 0.9 * p0 + 0.1 * p1, _params(_mlp()), _params(b))
    _allclose(_params(a), expected, atol=1e-7)


def test_best_epoch_selection_and_patience():
    tx = optax.sgd(2.0)  # large steps: the validation accuracy goes up and down
    xv, yv = X[:20], Y[:20]
    best, hist = finetune(_mlp(), (X, Y), optimizer=tx, epochs=6, batch_size=8, eval_data=(xv, yv),
                          select="best", seed=0, progress=False, strategy="full")  # fmt: skip
    accs = [h["eval_accuracy"] for h in hist]
    k = int(np.argmax(accs)) + 1
    assert [h["selected"] for h in hist].index(True) + 1 == k
    stopped_at_k, _ = finetune(_mlp(), (X, Y), optimizer=tx, epochs=k, batch_size=8, seed=0, progress=False,
                               strategy="full")  # fmt: skip
    _allclose(_params(best), _params(stopped_at_k), atol=0, rtol=0)
    _, short = finetune(_mlp(), (X, Y), optimizer=tx, epochs=30, batch_size=8, eval_data=(xv, yv), patience=2,
                        select_metric="eval_loss", seed=0, progress=False, strategy="full")  # fmt: skip
    assert len(short) < 30 and short[-1]["stopped_early"]
    losses = [h["eval_loss"] for h in short]
    assert min(losses[-2:]) >= min(losses[:-2])  # the last two epochs did not improve


def test_data_parallel_over_8_devices_equals_one_device():
    assert jax.device_count() >= 8
    mesh = jax.make_mesh((8,), ("data",))
    tx = optax.adam(1e-2)
    a, ha = finetune(_mlp(), (X, Y), optimizer=tx, epochs=3, batch_size=16, mesh=mesh, eval_data=(X[:20], Y[:20]),
                     **KW)  # fmt: skip
    b, hb = finetune(_mlp(), (X, Y), optimizer=tx, epochs=3, batch_size=16, eval_data=(X[:20], Y[:20]), **KW)
    assert ha[-1]["eval_loss"] == pytest.approx(hb[-1]["eval_loss"], rel=1e-5)
    # measured max |diff| 2e-7 (the gradient's all-reduce sums in another order); bar 1e-5
    _allclose(_params(a), _params(b), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the mesh"):
        finetune(_mlp(), (X, Y), optimizer=tx, epochs=1, batch_size=12, mesh=mesh, **KW)


_RUN = textwrap.dedent(
    """
    import os, sys
    import numpy as np, optax
    from flax import nnx
    from jaxtransfer.finetune import finetune
    from jaxtransfer.models import MLP

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    Y = np.argmax(X[:, :3], 1).astype(np.int32)
    directory, kill_at, out, every = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    yielded = []

    def data(epoch):  # called with the epoch: a reproducible stream
        order = np.random.default_rng(epoch).permutation(40)
        for i in (0, 16, 32):
            yielded.append(1)
            if len(yielded) == kill_at:
                os._exit(3)  # as a killed process: no cleanup, no exception handling
            yield X[order[i : i + 16]], Y[order[i : i + 16]]

    model, _ = finetune(MLP(6, (8,), 3, rngs=nnx.Rngs(0)), data, strategy="full", epochs=5, batch_size=16,
                        learning_rate=1e-2, transform=lambda b, k: b, checkpoint_dir=directory, progress=False,
                        keep_checkpoints=1, checkpoint_every_steps=every or None)
    np.save(out, np.asarray(model.head.kernel[...]))
    """
)


@pytest.mark.parametrize(
    ("kill_at", "every"),
    [(9, 0), (10, 2)],
    ids=["killed-between-epochs", "killed-inside-an-epoch"],
)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, kill_at, every):
    """Batches are counted from 1 (the first is read once before training): 9 = the second batch of epoch 3, with
    epoch checkpoints; 10 = its third batch, after a step checkpoint at step 8, inside the epoch."""
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(directory, kill, out):
        args = [sys.executable, str(script), str(tmp_path / directory), str(kill), str(tmp_path / out), str(every)]
        return subprocess.run(args, env=env, capture_output=True)

    killed = run("ck", kill_at, "a.npy")
    assert killed.returncode == 3, killed.stderr.decode()[-2000:]
    resumed = run("ck", 0, "a.npy")
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    whole = run("ck2", 0, "b.npy")
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    finetune(_mlp(), (X, Y), epochs=1, batch_size=16, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="another run"):
        finetune(_mlp(), (X, Y), epochs=1, batch_size=8, checkpoint_dir=tmp_path, **KW)


def test_bfloat16_and_float16_reach_float32_accuracy_on_digits():
    from jaxtransfer.data import digits

    ds = digits()
    (xt, yt), (xv, yv) = ds.part("train"), ds.part("test")
    accs = {}
    for precision in (None, "bfloat16", "float16"):
        model, _ = finetune(MLP(64, (64,), 10, rngs=nnx.Rngs(0)), (xt, yt), learning_rate=3e-3, epochs=8,
                            batch_size=64, precision=precision, strategy="full", progress=False)  # fmt: skip
        assert model.head.kernel[...].dtype == jnp.float32  # master weights stay float32
        accs[precision] = evaluate(model, (xv, yv))["accuracy"]
    # measured: float32 0.958, bfloat16 0.955, float16 0.958; margin 0.03
    assert accs[None] > 0.9
    assert abs(accs["bfloat16"] - accs[None]) < 0.03 and abs(accs["float16"] - accs[None]) < 0.03


def test_losses_against_numpy():
    logits = rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    s = 0.1
    soft = (1 - s) * np.eye(4)[labels] + s / 4
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    got = per_example_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), label_smoothing=s)
    np.testing.assert_allclose(np.asarray(got), -(soft * logp).sum(1), rtol=1e-5)
    multi = (rng.random((5, 4)) > 0.5).astype(np.float32)
    p = 1 / (1 + np.exp(-logits))
    bce = -(multi * np.log(p) + (1 - multi) * np.log(1 - p)).mean(1)
    got = per_example_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(multi), "multilabel")
    np.testing.assert_allclose(np.asarray(got), bce, rtol=1e-5)
    order = np.argsort(-logits, 1)
    for k in (1, 2, 3):
        expected = [labels[i] in order[i, :k] for i in range(5)]
        np.testing.assert_array_equal(np.asarray(top_k_accuracy(jnp.asarray(logits), jnp.asarray(labels), k)), expected)


def test_mean_average_precision_equals_scikit_learn():
    from sklearn.metrics import average_precision_score

    scores = np.round(rng.random((50, 6)), 1)  # rounded: ties
    labels = (rng.random((50, 6)) > 0.6).astype(int)
    expected = np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in range(6)])
    assert mean_average_precision(scores, labels) == pytest.approx(expected, rel=1e-12)


def test_multilabel_and_regression_tasks_train():
    multi = (X[:, :3] > 0).astype(np.float32)
    _, hist = finetune(_mlp(), (X, multi), task="multilabel", learning_rate=1e-2, epochs=30, batch_size=16,
                       eval_data=(X, multi), **KW)  # fmt: skip
    assert hist[-1]["eval_mean_average_precision"] > 0.9 and hist[-1]["loss"] < hist[0]["loss"]
    t = X[:, :2] @ np.array([[1.0], [-2.0]], np.float32)
    _, hist = finetune(_mlp(1), (X, t), task="regression", learning_rate=1e-2, epochs=30, batch_size=16, **KW)
    assert hist[-1]["train_neg_mse"] > hist[0]["train_neg_mse"]


def test_glue_predict_accuracy_and_apply_fn():
    model = _mlp()
    out = predict(model, X, batch_size=16)
    np.testing.assert_allclose(out, np.asarray(model(jnp.asarray(X))), atol=1e-6)
    assert accuracy(model, X, Y) == pytest.approx(np.mean(out.argmax(1) == Y))
    params, fn = apply_fn(model)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(params, X)), out, atol=1e-6)


def test_batch_norm_is_frozen_by_default_except_for_full():
    from jaxtransfer.finetune import inject_ssf
    from jaxtransfer.models import CNN

    model = CNN(1, 4, 1, 3, norm="batch", rngs=nnx.Rngs(0))
    x = rng.normal(2.0, 3.0, size=(32, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 32).astype(np.int32)
    stats = lambda m: jax.tree.leaves(nnx.state(m, nnx.BatchStat))  # noqa: E731
    ssf, _ = finetune(inject_ssf(model), (x, y), epochs=1, batch_size=16, progress=False)
    full, _ = finetune(model, (x, y), strategy="full", epochs=1, batch_size=16, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(stats(ssf), stats(model), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(stats(full), stats(model), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"select": "best"}, "need eval_data"),
        ({"precision": "int8"}, "precision must be"),
        ({"optimizer": optax.sgd(0.1), "weight_decay": 0.1}, "built-in optimiser"),
        ({"param_rules": [Rule("*", weight_decay=True)]}, "weight_decay=0"),
        ({"param_rules": [Rule("*", frozen=True)]}, "trains no parameter"),
        ({"lr_decay": "cosine", "warmup_steps": 100}, "total_steps"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"task": "ranking"}, "task must be"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        finetune(_mlp(), (X, Y), **{**KW, "epochs": 1, "batch_size": 16, **kwargs})


def test_rule_validation():
    with pytest.raises(ValueError, match="lr_scale"):
        Rule("*", lr_scale=0.0)
    with pytest.raises(ValueError, match="regular expression"):
        Rule("re:(")


def test_a_finished_run_restores_from_its_checkpoint_on_a_mesh(tmp_path):
    mesh = jax.make_mesh((8,), ("data",))
    a, ha = finetune(_mlp(), (X, Y), epochs=2, batch_size=16, mesh=mesh, checkpoint_dir=tmp_path, **KW)
    b, hb = finetune(_mlp(), (X, Y), epochs=2, batch_size=16, mesh=mesh, checkpoint_dir=tmp_path, **KW)
    _allclose(_params(a), _params(b), atol=0, rtol=0)  # nothing left to train: the saved weights come back
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


def test_top_k_rejects_a_k_outside_the_classes():
    logits, labels = jnp.zeros((2, 3)), jnp.array([0, 1])
    for k in (0, 4, True):
        with pytest.raises(ValueError, match="k must be an integer in"):
            top_k_accuracy(logits, labels, k)
