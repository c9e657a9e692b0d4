"""Hybrid teacher-student forward: teacher = student gives three equal paths, a hybrid path equals the network built
by hand from the chosen blocks, the regulariser against a numpy cross-entropy with the dynamic weights, what trains
(the teacher bitwise frozen), the merge, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    FrozenParam,
    HybridTeacherStudent,
    finetune,
    hybrid_regularizer,
    inject_hybrid,
    merge_hybrid,
)
from jaxtransfer.models import CNN, TinyViT

rng = np.random.default_rng(0)
X = rng.normal(size=(12, 16, 16, 3)).astype(np.float32)
Y = (np.arange(12) % 5).astype(np.int32)


@nnx.jit(static_argnums=2)
def _path(model, x, pattern_id):
    return model.path(x, model.patterns[pattern_id]) if pattern_id < 2 else model(x)


def _cnn():
    m = CNN(3, 8, 3, 5, norm="batch", rngs=nnx.Rngs(0))
    m.eval()
    return m


def _vit():
    return TinyViT(16, 3, 4, 16, 3, 2, 5, rngs=nnx.Rngs(0))


def _perturb_student(model: HybridTeacherStudent, seed=1):
    key = jax.random.key(seed)
    for _, var in nnx.iter_graph(model.model):
        if isinstance(var, nnx.Param):
            key, sub = jax.random.split(key)
            var[...] = var[...] + 0.2 * jax.random.normal(sub, var.shape)


@pytest.mark.parametrize("build", [_cnn, _vit], ids=["cnn", "tiny_vit"])
def test_teacher_equal_to_student_gives_three_equal_paths(build):
    model = inject_hybrid(build())
    model.eval()
    outs = [np.asarray(_path(model, X, k)) for k in range(3)]
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[2])
    np.testing.assert_allclose(outs[2], np.asarray(build()(X)), atol=1e-6)


def test_a_hybrid_path_is_the_network_built_from_the_chosen_blocks():
    base = _cnn()
    model = inject_hybrid(base)
    _perturb_student(model)
    model.eval()
    # pattern a = (1, 0, 1): student blocks 0 and 2, the pre-trained block 1, student stem and head
    manual = merge_hybrid(model)
    manual.blocks[1] = nnx.clone(base.blocks[1])
    manual.eval()
    np.testing.assert_allclose(np.asarray(_path(model, X, 0)), np.asarray(manual(X)), atol=1e-5)
    assert not np.allclose(np.asarray(_path(model, X, 0)), np.asarray(_path(model, X, 2)), atol=1e-3)
    # the merge is the student path, in the plain architecture
    merged = merge_hybrid(model)
    assert jax.tree.map(jnp.shape, nnx.state(merged, nnx.Param)) == jax.tree.map(jnp.shape, nnx.state(base, nnx.Param))
    np.testing.assert_allclose(np.asarray(merged(X)), np.asarray(_path(model, X, 2)), atol=1e-5)


def _ce(logits, y):
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("dynamic", [True, False])
def test_regularizer_is_the_weighted_cross_entropy_of_the_hybrid_paths(dynamic):
    model = inject_hybrid(_cnn())
    _perturb_student(model)
    model.eval()
    reg = hybrid_regularizer(0.7, dynamic=dynamic)
    ours = float(reg(model, jnp.asarray(X), jnp.asarray(Y)))
    l_s = _ce(_path(model, X, 2), Y)
    losses = [_ce(_path(model, X, k), Y) for k in range(2)]
    weights = [min(1.0, l_s / lk) if dynamic else 1.0 for lk in losses]
    np.testing.assert_allclose(ours, 0.7 * sum(w * lk for w, lk in zip(weights, losses, strict=True)), rtol=1e-5)


def test_only_the_student_trains():
    model = inject_hybrid(_cnn())
    teacher_before = nnx.state(model, FrozenParam)
    trained, _ = finetune(model, (X, Y), strategy="full", regularizer=hybrid_regularizer(), epochs=2, batch_size=6,
                          progress=False)  # fmt: skip
    for a, b in zip(jax.tree.leaves(teacher_before), jax.tree.leaves(nnx.state(trained, FrozenParam)), strict=True):
        assert jnp.array_equal(a, b)
    assert not jnp.array_equal(
        trained.model.blocks[1].tuned.conv1.kernel[...], model.model.blocks[1].tuned.conv1.kernel[...]
    )


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=">= 2 routed blocks"):
        inject_hybrid(CNN(3, 8, 1, 5, rngs=nnx.Rngs(0)))
    model = inject_hybrid(_cnn())
    with pytest.raises(ValueError, match="3 zeros"):
        model.path(X, (1, 0))
    with pytest.raises(ValueError, match="HybridTeacherStudent"):
        hybrid_regularizer()(_cnn(), X, Y)
    with pytest.raises(ValueError, match="weight"):
        hybrid_regularizer(-1.0)
    with pytest.raises(ValueError, match="merge_hybrid takes"):
        merge_hybrid(_cnn())
