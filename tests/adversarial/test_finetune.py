"""Bad inputs to fine-tuning: checked once before training; weights checked after every epoch."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    co_tuning_relationship,
    evaluate,
    finetune,
    inject_lora,
    inject_ssf,
    l2_sp,
    l2_sp_penalty,
    trainable_filter,
)
from jaxtransfer.models import MLP

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype(np.float32)
Y = (np.arange(64) % 3).astype(np.int32)


def _mlp(out=3):
    return MLP(6, (8,), out, rngs=nnx.Rngs(0))


def _run(**kw):
    data = kw.pop("data", (X, Y))
    model = kw.pop("model", None) or _mlp()
    kw.setdefault("strategy", "full")
    kw.setdefault("epochs", 1)
    kw.setdefault("batch_size", 16)
    return finetune(model, data, progress=False, **kw)


BAD = [
    ("negative label", dict(data=(X, np.where(Y == 0, -1, Y))), ValueError, r"class ids in \[0, 3\).*target 0 is -1"),
    ("label = outputs", dict(data=(X, np.where(Y == 2, 3, Y))), ValueError, r"the model has 3 outputs.*is 3"),
    ("label far out", dict(data=(X, np.where(Y == 2, 2**40, Y.astype(np.int64)))), ValueError, "is 1099511627776"),
    ("float labels", dict(data=(X, Y.astype(np.float32))), ValueError, "must be integer class ids; got dtype float32"),
    ("2-D labels", dict(data=(X, Y[:, None])), ValueError, r"must be \(n,\) class ids"),
    ("eval labels", dict(eval_data=(X, Y + 3)), ValueError, "eval_data targets must be class ids"),
    ("epochs=-1", dict(epochs=-1), ValueError, "epochs must be a positive integer; got -1"),
    ("epochs=0", dict(epochs=0), ValueError, "epochs must be a positive integer"),
    ("epochs=1.5", dict(epochs=1.5), ValueError, "epochs must be a positive integer"),
    ("batch_size=0", dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    ("batch_size > n", dict(batch_size=65), ValueError, "batch_size=65 is larger than the 64"),
    ("NaN inputs", dict(data=(np.where(np.eye(64, 6) > 0, np.nan, X), Y)), ValueError, "inputs contain NaN"),
    ("rows", dict(data=(X, Y[:-1])), ValueError, "64 inputs but 63 targets"),
    ("empty", dict(data=(X[:0], Y[:0])), ValueError, "train_data is empty"),
    ("not a pair", dict(data=X), ValueError, r"train_data must be a pair \(inputs, targets\)"),
    ("task", dict(task="ranking"), ValueError,
     r"task must be one of \('classification', 'multilabel', 'regression'\) or a callable"),
    ("strategy", dict(strategy="prompt"), ValueError, "unknown strategy 'prompt'"),
    ("ssf without inject", dict(strategy="ssf"), ValueError, "call inject_ssf"),
    ("lora without inject", dict(strategy="lora"), ValueError, "call inject_lora"),
    ("regression NaN target", dict(task="regression", data=(X, np.r_[np.nan, np.ones(63)].astype(np.float32)),
     model=MLP(6, (8,), 1, rngs=nnx.Rngs(0))), ValueError, "targets must be finite real numbers"),
    ("regularizer not callable", dict(regularizer=3.0), TypeError, "regularizer must be a callable"),
    ("backbone_lr_scale 0", dict(backbone_lr_scale=0.0), ValueError, "backbone_lr_scale must be > 0"),
    # The penalty's value is 0 (the loss stays finite) but its gradient is NaN: only the weight check sees it.
    ("NaN regularizer gradient", dict(regularizer=lambda m, x, y: jnp.where(jnp.array(False), jnp.sqrt(
     -jnp.sum(jnp.abs(m.head.kernel[...]))), 0.0)), FloatingPointError, "the trained parameter .* became NaN"),
    ("diverging lr", dict(optimizer=optax.sgd(1e30)), FloatingPointError, "became"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kwargs", "error", "match"), BAD, ids=[c[0] for c in BAD])
def test_bad_training_inputs_raise_before_or_during_training(case, kwargs, error, match):
    with pytest.raises(error, match=match):
        _run(**kwargs)


def test_the_input_model_is_not_changed():
    model = _mlp()
    before = nnx.state(model, nnx.Param)
    before = {k: np.array(v) for k, v in nnx.to_flat_state(before)}
    trained, hist = _run(model=model, epochs=2)
    after = {k: np.array(v) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert len(hist) == 2 and trained is not model


EVAL_BAD = [
    ("labels out of range", (X, Y + 3), ValueError, "data targets must be class ids in"),
    ("NaN inputs", (np.full_like(X, np.nan), Y), ValueError, "data inputs contain NaN"),
    ("batch_size 0", None, ValueError, "batch_size must be a positive integer"),
]


@pytest.mark.parametrize(("case", "data", "error", "match"), EVAL_BAD, ids=[c[0] for c in EVAL_BAD])
def test_evaluate_checks_its_data(case, data, error, match):
    kwargs = {"batch_size": 0} if data is None else {}
    with pytest.raises(error, match=match):
        evaluate(_mlp(), data if data is not None else (X, Y), **kwargs)


def test_evaluate_accuracy_is_the_fraction_correct():
    model = _mlp()
    model.eval()
    pred = np.argmax(np.asarray(model(jnp.asarray(X))), 1)
    assert evaluate(model, (X, Y))["accuracy"] == pytest.approx(float(np.mean(pred == Y)), abs=1e-7)


P = np.full((64, 4), 0.25)
REG_BAD = [
    ("co_tuning label range", lambda: co_tuning_relationship(P, Y + 1, 3), ValueError, "labels must be < num_classes"),
    ("co_tuning negative", lambda: co_tuning_relationship(P, Y - 1, 3), ValueError, "labels must be >= 0"),
    ("co_tuning rows", lambda: co_tuning_relationship(P * 2, Y, 3), ValueError, "the rows of source_probs must sum"),
    ("co_tuning negative probs", lambda: co_tuning_relationship(P - 0.5, Y, 3), ValueError, "negative entries"),
    ("co_tuning NaN", lambda: co_tuning_relationship(np.where(np.eye(64, 4) > 0, np.nan, P), Y, 3), ValueError,
     "source_probs contains 4 NaN"),
    ("co_tuning 1-D", lambda: co_tuning_relationship(P[:, 0], Y, 3), ValueError, "source_probs must be a 2-D"),
    ("co_tuning lengths", lambda: co_tuning_relationship(P[:-1], Y, 3), ValueError, "labels has 64 entries"),
    ("co_tuning float labels", lambda: co_tuning_relationship(P, Y.astype(float), 3), TypeError, "integer class ids"),
    ("co_tuning missing class", lambda: co_tuning_relationship(P, Y % 2, 3), ValueError, "have no samples"),
    ("l2_sp NaN anchor", lambda: l2_sp_penalty({"w": jnp.ones(2)}, {"w": jnp.array([1.0, jnp.nan])}), ValueError,
     r"anchor, leaf \['w'\] contains NaN"),
    ("l2_sp anchor shape", lambda: l2_sp_penalty({"w": jnp.ones(2)}, {"w": jnp.ones(3)}), ValueError,
     r"anchor leaf \['w'\] has shape \(3,\)"),
    ("l2_sp structure", lambda: l2_sp_penalty({"w": jnp.ones(2)}, {"v": jnp.ones(2)}), ValueError,
     "anchor must have the tree structure"),
    ("l2_sp alpha NaN", lambda: l2_sp_penalty({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, alpha=float("nan")), ValueError,
     "alpha must be >= 0"),
    ("l2_sp beta negative", lambda: l2_sp({"w": jnp.ones(2)}, beta=-1.0), ValueError, "beta must be >= 0"),
    ("l2_sp optax NaN anchor", lambda: l2_sp({"w": jnp.array([jnp.nan, 1.0])}).init({"w": jnp.ones(2)}), ValueError,
     "anchor, leaf"),
    ("lora twice", lambda: inject_lora(inject_lora(_mlp(), 2), 2), ValueError, "already has LoRA"),
    ("lora rank 0", lambda: inject_lora(_mlp(), 0), ValueError, "rank must be a positive integer"),
    ("lora rank bool", lambda: inject_lora(_mlp(), True), ValueError, "rank must be a positive integer"),
    ("lora nothing selected", lambda: inject_lora(_mlp(), 2, where="nothing*"), ValueError, "selects no Linear"),
    ("ssf twice", lambda: inject_ssf(inject_ssf(_mlp())), ValueError, "already has SSF"),
    ("unknown strategy", lambda: trainable_filter("everything"), ValueError, "unknown strategy 'everything'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), REG_BAD, ids=[c[0] for c in REG_BAD])
def test_regularisers_and_peft_validate(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_co_tuning_relationship_is_the_class_mean_of_the_source_outputs():
    p = np.abs(RNG.normal(size=(64, 4)))
    p /= p.sum(1, keepdims=True)
    rel = np.asarray(co_tuning_relationship(p, Y, 3))
    np.testing.assert_allclose(rel, np.stack([p[np.equal(Y, k)].mean(0) for k in range(3)]), rtol=1e-6)
