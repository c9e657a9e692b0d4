"""B-Tuning: the penalty against a float64 numpy re-derivation of the reference code's loss, teacher weights,
a dominant teacher, no gradient into the teachers, the LogME fits, training through finetune, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.finetune import b_tuning, b_tuning_penalty, b_tuning_teacher_weights, finetune
from jaxtransfer.models import MLP
from jaxtransfer.score import logme, logme_evidence


def _reference(fs, ws, fts, wts, scores, temperature, trade_off):
    """The published loss: softmax(LogME / T) teacher weights, nn.MSELoss (mean over all entries) times trade-off."""
    s = np.asarray(scores, np.float64) / temperature
    pi = np.exp(s - s.max())
    pi /= pi.sum()
    target = sum(
        p * np.asarray(f, np.float64) @ np.asarray(w, np.float64).T for p, f, w in zip(pi, fts, wts, strict=True)
    )
    return trade_off * np.mean((np.asarray(fs, np.float64) @ np.asarray(ws, np.float64).T - target) ** 2)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    dims=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    classes=st.integers(1, 5),
    scale=st.sampled_from([1e-2, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.05, 0.1, 1.0]),
)
def test_penalty_equals_the_reference_loss(n, dims, classes, scale, seed, temperature):
    r = np.random.default_rng(seed)
    fs = scale * r.normal(size=(n, dims[0]))
    ws = r.normal(size=(classes, dims[0]))
    fts = [scale * r.normal(size=(n, d)) for d in dims[1:]]
    wts = [r.normal(size=(classes, d)) for d in dims[1:]]
    scores = r.normal(size=len(fts))
    pi = b_tuning_teacher_weights(jnp.asarray(scores), temperature)
    ours = float(b_tuning_penalty(jnp.asarray(fs, jnp.float32), ws, [jnp.asarray(f, jnp.float32) for f in fts], wts,
                                  pi, trade_off=100.0))  # fmt: skip
    ref = _reference(fs, ws, fts, wts, scores, temperature, 100.0)
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-9 * scale**2)  # float32 inputs: measured <= 3e-6


def test_teacher_weights_and_a_dominant_teacher():
    pi = b_tuning_teacher_weights(jnp.array([0.2, 3.0, 0.1]))
    np.testing.assert_allclose(np.asarray(pi).sum(), 1.0, rtol=1e-6)
    assert float(pi[1]) > 1 - 1e-9  # 28 / T apart: the best teacher takes all the weight
    r = np.random.default_rng(0)
    fs, ws = r.normal(size=(6, 4)), r.normal(size=(3, 4))
    fts, wts = [r.normal(size=(6, d)) for d in (2, 5, 3)], [r.normal(size=(3, d)) for d in (2, 5, 3)]
    alone = b_tuning_penalty(fs, ws, [fts[1]], [wts[1]], jnp.ones(1))
    np.testing.assert_allclose(float(b_tuning_penalty(fs, ws, fts, wts, pi)), float(alone), rtol=1e-6)


def test_no_gradient_reaches_the_teachers_and_jit_agrees():
    r = np.random.default_rng(1)
    fs, ws, ft, wt = (jnp.asarray(r.normal(size=s), jnp.float32) for s in ((5, 3), (2, 3), (5, 4), (2, 4)))
    g_teacher = jax.grad(lambda t: b_tuning_penalty(fs, ws, [t], [wt], jnp.ones(1)))(ft)
    assert jnp.array_equal(g_teacher, jnp.zeros_like(ft))
    g_student = jax.grad(lambda s: b_tuning_penalty(s, ws, [ft], [wt], jnp.ones(1), trade_off=1.0))(fs)
    resid = np.asarray(fs, np.float64) @ np.asarray(ws, np.float64).T - np.asarray(ft) @ np.asarray(wt).T
    np.testing.assert_allclose(np.asarray(g_student), 2 * resid @ np.asarray(ws) / resid.size, atol=1e-5)
    eager = b_tuning_penalty(fs, ws, [ft], [wt], jnp.ones(1))
    jitted = jax.jit(lambda a, b: b_tuning_penalty(a, ws, [b], [wt], jnp.ones(1)))(fs, ft)
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)


rng = np.random.default_rng(0)
X = rng.normal(size=(60, 6)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0).astype(np.int32)


def test_b_tuning_fits_logme_and_training_lowers_the_penalty():
    student = MLP(6, [16], 3, rngs=nnx.Rngs(0))
    noise = lambda x: jnp.sin(50.0 * x[:, 3:])  # noqa: E731  (features unrelated to the labels)
    teachers = [MLP(6, [12], 3, rngs=nnx.Rngs(1)), lambda x: x[:, :2] * 3.0, noise]  # modules and plain functions
    regularizer, info = b_tuning(student, teachers, X, Y)
    # the scores are LogME of each teacher's features; pi their softmax at T = 0.1
    student.eval()
    np.testing.assert_allclose(float(info["scores"][1]), float(logme(X[:, :2] * 3.0, Y)), rtol=1e-5)
    np.testing.assert_allclose(info["student_score"], float(logme(np.asarray(student.features(X)), Y)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(info["pi"]), np.asarray(b_tuning_teacher_weights(info["scores"], 0.1)))
    assert float(info["pi"][1]) > float(info["pi"][2])  # the informative features outrank the noise
    # the penalty of the untrained student equals the formula with the fitted weights
    w_s = logme_evidence(np.asarray(student.features(X)), Y).weights
    w_t = [logme_evidence(np.asarray(teachers[0].features(X)), Y).weights, logme_evidence(X[:, :2] * 3.0, Y).weights]
    w_t.append(logme_evidence(np.asarray(noise(X)), Y).weights)
    feats = [teachers[0].features(X), X[:, :2] * 3.0, noise(X)]
    direct = b_tuning_penalty(student.features(X), w_s, feats, w_t, info["pi"])
    np.testing.assert_allclose(float(regularizer(student, X, Y)), float(direct), rtol=1e-5)
    trained, _ = finetune(student, (X, Y), strategy="full", regularizer=regularizer, epochs=10, batch_size=30,
                          learning_rate=1e-2, progress=False)  # fmt: skip
    plain, _ = finetune(student, (X, Y), strategy="full", epochs=10, batch_size=30, learning_rate=1e-2,
                        progress=False)  # fmt: skip
    assert float(regularizer(trained, X, Y)) < 0.5 * float(regularizer(plain, X, Y))


def test_bad_input_is_refused():
    student = MLP(6, [8], 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least one teacher"):
        b_tuning(student, [], X, Y)
    with pytest.raises(ValueError, match="trade_off"):
        b_tuning(student, [student], X, Y, trade_off=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        b_tuning_teacher_weights(jnp.ones(2), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        b_tuning_teacher_weights(jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="one of each per teacher"):
        b_tuning_penalty(jnp.ones((2, 3)), jnp.ones((1, 3)), [jnp.ones((2, 2))], [], jnp.ones(1))
    with pytest.raises(ValueError, match="teacher 0"):
        b_tuning_penalty(jnp.ones((2, 3)), jnp.ones((1, 3)), [jnp.ones((3, 2))], [jnp.ones((1, 2))], jnp.ones(1))
    with pytest.raises(ValueError, match="disagree"):
        b_tuning_penalty(jnp.ones((2, 3)), jnp.ones((1, 4)), [jnp.ones((2, 2))], [jnp.ones((1, 2))], jnp.ones(1))
    with pytest.raises(ValueError, match="NaN"):  # LogME refuses bad labels / features with its own errors
        b_tuning(student, [lambda x: x * jnp.nan], X, Y)
