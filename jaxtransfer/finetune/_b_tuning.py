"""B-Tuning (You et al., "Ranking and Tuning Pre-trained Models", JMLR 2022): fine-tune one model with several
pre-trained teachers, each weighted by its LogME on the target data.

LogME fits a Bayesian linear model on each model's frozen features f_k(x) in R^{D_k}; its posterior mean weights
m_k (C, D_k) map features to the C one-hot target columns, and its score L_k ranks the models. With the teacher
weights pi = softmax(L / T) (T = 0.1 in the reference code) the student s, whose own LogME weights m_s are fitted once
on its pre-trained features and then kept fixed, is trained with

    loss = CE(head(f_s(x)), y) + lambda * mean_{i, c} (f_s(x_i) m_s^T - sum_k pi_k f_k(x_i) m_k^T)_{ic}^2

(lambda = 100, the reference code's trade-off; the teachers' term carries no gradient). The student's features are
pulled towards the posterior predictive that the better-ranked teachers give, in the student's own LogME
coordinates. :func:`b_tuning` fits everything from the target data and returns the ``finetune(regularizer=)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtransfer._checks import check_positive_int
from jaxtransfer.score import logme_evidence

__all__ = ["b_tuning", "b_tuning_penalty", "b_tuning_teacher_weights"]


def b_tuning_teacher_weights(scores, temperature: float = 0.1) -> jax.Array:
    """pi = softmax(scores / temperature) over the K teachers' LogME scores (K,).

    Example:
        >>> import jax.numpy as jnp
        >>> [f"{p:.3f}" for p in b_tuning_teacher_weights(jnp.array([0.5, 0.6, 0.2]))]
        ['0.265', '0.721', '0.013']
    """
    s = jnp.asarray(scores, jnp.float32)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be (K,) LogME scores of K >= 1 teachers; got shape {s.shape}.")
    if not bool(jnp.all(jnp.isfinite(s))):
        raise ValueError("scores contain NaN or Inf.")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    return jax.nn.softmax(s / temperature)


def b_tuning_penalty(
    student_features: jax.Array,
    student_weights: jax.Array,
    teacher_features: Sequence[jax.Array],
    teacher_weights: Sequence[jax.Array],
    pi: jax.Array,
    *,
    trade_off: float = 100.0,
) -> jax.Array:
    """lambda * mean_{i, c} (F_s m_s^T - sum_k pi_k F_k m_k^T)^2, no gradient through the teachers' term.

    Args:
        student_features: (n, D_s) the student's features on the batch.
        student_weights: (C, D_s) LogME posterior mean of the student's pre-trained features (fixed).
        teacher_features: K arrays (n, D_k) of the frozen teachers' features on the batch.
        teacher_weights: K arrays (C, D_k), their LogME posterior means.
        pi: (K,) teacher weights (:func:`b_tuning_teacher_weights`).
        trade_off: lambda (100 in the reference code).

    Example:
        >>> import jax.numpy as jnp
        >>> f, w = jnp.ones((2, 3)), jnp.ones((1, 3))  # student predicts 3 for every sample
        >>> float(b_tuning_penalty(f, w, [jnp.ones((2, 2))], [jnp.ones((1, 2))], jnp.ones(1), trade_off=1.0))
        1.0
    """
    fs, ws = jnp.asarray(student_features), jnp.asarray(student_weights)
    if fs.ndim != 2 or ws.ndim != 2 or ws.shape[1] != fs.shape[1]:
        raise ValueError(f"student features (n, D) and weights (C, D) disagree: {fs.shape} and {ws.shape}.")
    if len(teacher_features) != len(teacher_weights) or len(teacher_features) != np.shape(pi)[0]:
        raise ValueError(
            f"{len(teacher_features)} teacher feature arrays, {len(teacher_weights)} weight arrays and "
            f"{np.shape(pi)[0]} teacher weights: give one of each per teacher."
        )
    student = jnp.matmul(fs.astype(jnp.float32), ws.T.astype(jnp.float32), precision="highest")
    target = jnp.zeros_like(student)
    for k, (f, w) in enumerate(zip(teacher_features, teacher_weights, strict=True)):
        f, w = jnp.asarray(f, jnp.float32), jnp.asarray(w, jnp.float32)
        if f.ndim != 2 or f.shape[0] != fs.shape[0] or w.shape != (ws.shape[0], f.shape[1]):
            raise ValueError(
                f"teacher {k}: features {f.shape} and weights {w.shape} must be (n={fs.shape[0]}, D_k) and "
                f"(C={ws.shape[0]}, D_k)."
            )
        target = target + pi[k] * jnp.matmul(f, w.T, precision="highest")
    return trade_off * jnp.mean(jnp.square(student - jax.lax.stop_gradient(target)))


def _features_of(model) -> Callable:
    return model.features if hasattr(model, "features") else model


def b_tuning(
    student: nnx.Module,
    teachers: Sequence[nnx.Module | Callable],
    inputs,
    labels,
    *,
    temperature: float = 0.1,
    trade_off: float = 100.0,
    batch_size: int = 256,
) -> tuple[Callable, dict]:
    """Fits LogME for the student and every teacher on the target data and returns the B-Tuning regulariser.

    Args:
        student: the pre-trained model to fine-tune (with a new ``head``); its ``features(x)`` are scored.
        teachers: frozen pre-trained models (their ``features``) or functions ``x -> (n, D_k)``.
        inputs, labels: the target training set (n, ...) and its (n,) class ids.
        temperature, trade_off: T = 0.1 and lambda = 100, as in the reference code.
        batch_size: feature extraction batch size.

    Returns:
        ``(regularizer, info)``: ``regularizer(model, x, y)`` for ``finetune(regularizer=...)`` (the teachers run
        frozen on each batch, after the trainer's transform), and ``info`` with the LogME ``scores`` (K,), ``pi``
        (K,) and ``student_score``.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(40, 4)).astype(np.float32), np.arange(40) % 2
        >>> student = MLP(4, [8], 2, rngs=nnx.Rngs(0))
        >>> teachers = [MLP(4, [6], 2, rngs=nnx.Rngs(s)) for s in (1, 2)]
        >>> regularizer, info = b_tuning(student, teachers, x, y)
        >>> info["pi"].shape, float(regularizer(student, x[:8], y[:8])) >= 0
        ((2,), True)
    """
    if len(teachers) == 0:
        raise ValueError("B-Tuning needs at least one teacher.")
    if not (isinstance(trade_off, int | float) and np.isfinite(trade_off) and trade_off >= 0):
        raise ValueError(f"trade_off must be >= 0; got {trade_off!r}.")
    check_positive_int(batch_size, "batch_size")
    x = np.asarray(inputs)
    y = np.asarray(labels)

    def extract(fn):
        return np.concatenate(
            [np.asarray(fn(jnp.asarray(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
        )

    frozen = nnx.clone(student)
    frozen.eval()
    fits = [logme_evidence(extract(_features_of(frozen)), y)]
    fns = []
    for t in teachers:
        if isinstance(t, nnx.Module):
            t = nnx.clone(t)
            t.eval()
        fn = _features_of(t)
        fns.append(fn)
        fits.append(logme_evidence(extract(fn), y))
    scores = jnp.array([float(jnp.mean(f.evidence)) for f in fits[1:]])
    pi = b_tuning_teacher_weights(scores, temperature)
    student_weights = fits[0].weights
    teacher_weights = [f.weights for f in fits[1:]]

    def regularizer(model, xb, yb):
        teacher_features = [jax.lax.stop_gradient(fn(xb)) for fn in fns]
        return b_tuning_penalty(
            model.features(xb), student_weights, teacher_features, teacher_weights, pi, trade_off=trade_off
        )

    info = {"scores": scores, "pi": pi, "student_score": float(jnp.mean(fits[0].evidence))}
    return regularizer, info
