"""Regularisers against float64 numpy references and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    bss_penalty,
    co_tuning_loss,
    co_tuning_relationship,
    delta_channel_weights,
    delta_penalty,
    finetune,
    l2_sp,
    l2_sp_penalty,
)
from jaxtransfer.models import MLP

rng = np.random.default_rng(0)


def _params(seed):
    r = np.random.default_rng(seed)
    return {"body": {"kernel": jnp.asarray(r.normal(size=(3, 2)))}, "head": {"kernel": jnp.asarray(r.normal(size=2))}}


def test_l2_sp_penalty_matches_oracle(x64):
    p, a = _params(1), _params(2)
    expected = 0.5 * 0.3 * np.sum((np.asarray(p["body"]["kernel"]) - np.asarray(a["body"]["kernel"])) ** 2)
    expected += 0.5 * 0.7 * np.sum(np.asarray(p["head"]["kernel"]) ** 2)
    assert float(l2_sp_penalty(p, a, alpha=0.3, beta=0.7)) == pytest.approx(expected, rel=1e-12)


def test_l2_sp_transform_is_the_gradient_of_the_penalty(x64):
    p, a = _params(1), _params(2)
    tx = l2_sp(a, alpha=0.3, beta=0.7)
    zero = jax.tree.map(jnp.zeros_like, p)
    updates, _ = tx.update(zero, tx.init(p), p)
    grads = jax.grad(lambda q: l2_sp_penalty(q, a, alpha=0.3, beta=0.7))(p)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(g), rtol=1e-12)


def test_l2_sp_pulls_towards_the_anchor_closed_form(x64):
    """Loss 1/2 ||w - c||^2 + alpha/2 ||w - w0||^2 is minimised at (c + alpha w0) / (1 + alpha)."""
    c, w0 = _params(3), _params(4)
    alpha, beta = 0.5, 0.25
    tx = optax.chain(l2_sp(w0, alpha=alpha, beta=beta), optax.sgd(0.2))
    w = _params(5)
    state = tx.init(w)
    for _ in range(300):
        grads = jax.tree.map(lambda x, y: x - y, w, c)
        updates, state = tx.update(grads, state, w)
        w = optax.apply_updates(w, updates)
    body = (np.asarray(c["body"]["kernel"]) + alpha * np.asarray(w0["body"]["kernel"])) / (1 + alpha)
    head = np.asarray(c["head"]["kernel"]) / (1 + beta)  # new leaves: plain weight decay towards 0
    np.testing.assert_allclose(np.asarray(w["body"]["kernel"]), body, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(w["head"]["kernel"]), head, rtol=1e-8)
    # composes with adamw: with a zero loss gradient, Adam's first step sees g = the L2-SP gradient, so the update is
    # -lr (g / (|g| + eps)) - lr wd w (bias-corrected moments m = g, v = g^2), by hand in numpy
    lr, wd, eps = 1e-2, 1e-4, 1e-8
    tx2 = optax.chain(l2_sp(w0, alpha=alpha, beta=beta), optax.adamw(lr, eps=eps, weight_decay=wd))
    updates, _ = tx2.update(jax.tree.map(jnp.zeros_like, w), tx2.init(w), w)
    g_body = alpha * (np.asarray(w["body"]["kernel"]) - np.asarray(w0["body"]["kernel"]))
    g_head = beta * np.asarray(w["head"]["kernel"])
    for got, g, leaf in (
        (updates["body"]["kernel"], g_body, w["body"]["kernel"]),
        (updates["head"]["kernel"], g_head, w["head"]["kernel"]),
    ):
        expected = -lr * g / (np.abs(g) + eps) - lr * wd * np.asarray(leaf)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-7)


def test_l2_sp_errors():
    p = _params(1)
    with pytest.raises(ValueError, match="tree structure"):
        l2_sp_penalty(p, {"body": p["body"]})
    bad = _params(2)
    bad["body"]["kernel"] = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"anchor leaf \['body'\]\['kernel'\] has shape"):
        l2_sp(bad).init(p)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        l2_sp(p, alpha=-1.0)
    with pytest.raises(ValueError, match="needs the parameters"):
        tx = l2_sp(p)
        tx.update(p, tx.init(p))


def test_delta_with_uniform_weights_is_the_plain_distance(x64):
    s, t = rng.normal(size=(4, 3, 5, 6)), rng.normal(size=(4, 3, 5, 6))
    expected = np.mean(np.sum((s - t) ** 2, axis=(1, 2, 3)) / 15)
    assert float(delta_penalty(s, t)) == pytest.approx(expected, rel=1e-12)
    w = rng.random(6)
    weighted = np.mean(np.sum(np.mean((s - t) ** 2, axis=(1, 2)) * w, axis=1))
    assert float(delta_penalty(s, t, w)) == pytest.approx(weighted, rel=1e-12)
    assert float(delta_penalty([s, s], [t, t])) == pytest.approx(2 * expected, rel=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        delta_penalty(s, t[:, :2])
    with pytest.raises(ValueError, match=r"channel_weights must have shape \(6,\)"):
        delta_penalty(s, t, np.ones(5))


def test_delta_channel_weights_favour_the_channel_the_loss_needs(x64):
    f = rng.normal(size=(20, 4, 4, 5))

    def head_loss(x):  # only channel 2 matters: removing it raises the loss
        return jnp.mean(jnp.square(x[..., 2] - f[..., 2]))

    # Zeroing channel 2 raises the loss by a > 0, the others by 0: d = (0, 0, a, 0, 0), standardised
    # (-1/2, -1/2, 2, -1/2, -1/2) whatever a is, and w = softmax(d_std / temperature): closed form per temperature.
    d_std = np.array([-0.5, -0.5, 2.0, -0.5, -0.5])
    for temperature in (5.0, 1.0, 0.2):
        w = np.asarray(delta_channel_weights(head_loss, f, temperature=temperature))
        expected = np.exp(d_std / temperature) / np.exp(d_std / temperature).sum()
        np.testing.assert_allclose(w, expected, rtol=1e-12)
    assert delta_channel_weights(head_loss, f)[2] == pytest.approx(np.exp(0.4) / (np.exp(0.4) + 4 * np.exp(-0.1)))


def test_bss_matches_numpy_and_its_gradient_touches_only_the_smallest_direction(x64):
    f = rng.normal(size=(8, 5))
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    assert float(bss_penalty(f)) == pytest.approx(s[-1] ** 2, rel=1e-10)
    assert float(bss_penalty(f, k=2)) == pytest.approx(s[-1] ** 2 + s[-2] ** 2, rel=1e-10)
    grad = np.asarray(jax.grad(bss_penalty)(jnp.asarray(f)))
    np.testing.assert_allclose(grad, 2 * s[-1] * np.outer(u[:, -1], vt[-1]), atol=1e-10)
    with pytest.raises(ValueError, match="k must be an integer"):
        bss_penalty(f, k=6)


def test_co_tuning(x64):
    labels = np.array([0, 0, 1, 2, 2, 2])
    p = rng.dirichlet(np.ones(4), size=6)
    rel = np.asarray(co_tuning_relationship(p, jnp.asarray(labels), 3))
    for k in range(3):
        np.testing.assert_allclose(rel[k], p[labels == k].mean(0), rtol=1e-12)
    logits = rng.normal(size=(6, 4))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean(np.sum(rel[labels] * logp, axis=1))
    assert float(co_tuning_loss(logits, jnp.asarray(labels), rel)) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="must agree on C_s"):
        co_tuning_loss(logits[:, :3], jnp.asarray(labels), rel)
    with pytest.raises(ValueError, match="have no samples"):
        co_tuning_relationship(p, jnp.asarray(labels), 4)


def test_trainer_regularizer_hook_keeps_weights_near_the_start():
    x = rng.normal(size=(128, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = MLP(6, (8,), 2, rngs=nnx.Rngs(0))
    start = nnx.state(model, nnx.Param)

    def drift(m):
        now = nnx.state(m, nnx.Param)
        return sum(
            float(jnp.sum(jnp.square(a - b))) for a, b in zip(jax.tree.leaves(now), jax.tree.leaves(start), strict=True)
        )

    kw = {"strategy": "full", "optimizer": optax.adam(1e-2), "epochs": 5, "progress": False}
    free, _ = finetune(model, (x, y), **kw)
    anchored, _ = finetune(model, (x, y), regularizer=lambda m, xb, yb: 10.0 * l2_sp_penalty(
        nnx.state(m, nnx.Param), start, alpha=1.0, beta=1.0), **kw)  # fmt: skip
    assert drift(anchored) < drift(free)
