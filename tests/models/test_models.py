import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxtransfer.models import CNN, MLP, TinyViT, restore_model, save_model

X = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))


def _models():
    return [
        MLP(64, (16, 8), 5, rngs=nnx.Rngs(0)),
        CNN(1, 8, 2, 5, rngs=nnx.Rngs(0)),
        CNN(1, 8, 1, 5, norm="batch", rngs=nnx.Rngs(0)),
        TinyViT(8, 1, 2, 16, 2, 2, 5, rngs=nnx.Rngs(0)),
    ]


@pytest.mark.parametrize("model", _models(), ids=["mlp", "cnn", "cnn-bn", "vit"])
def test_features_and_replaceable_head(model):
    model.eval()
    feats = model.features(X)
    assert feats.ndim == 2 and feats.shape[0] == 3
    assert model(X).shape == (3, 5)
    model.head = nnx.Linear(feats.shape[1], 7, rngs=nnx.Rngs(1))
    assert model(X).shape == (3, 7)
    assert jnp.array_equal(model.features(X), feats)


@pytest.mark.parametrize("model", _models(), ids=["mlp", "cnn", "cnn-bn", "vit"])
def test_orbax_round_trip_is_bit_exact(model, tmp_path):
    model.eval()
    save_model(model, tmp_path / "ckpt")
    # the same architecture with other values (every float parameter shifted by 1), so a restore that
    # did nothing, or restored only some leaves, fails below
    other = nnx.clone(model)
    nnx.update(
        other,
        jax.tree.map(lambda v: v + 1.0 if jnp.issubdtype(v.dtype, jnp.floating) else v, nnx.state(other, nnx.Param)),
    )
    assert not jnp.array_equal(other(X), model(X))
    restored = restore_model(other, tmp_path / "ckpt")
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(restored)), strict=True):
        assert jnp.array_equal(
            jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a,
            jax.random.key_data(b) if jnp.issubdtype(b.dtype, jax.dtypes.prng_key) else b,
        )
    restored.eval()
    assert jnp.array_equal(restored(X), model(X))


def test_checkpoint_is_not_overwritten_by_accident(tmp_path):
    model = MLP(4, (3,), 2, rngs=nnx.Rngs(0))
    save_model(model, tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="force=True"):
        save_model(model, tmp_path / "ckpt")
    save_model(model, tmp_path / "ckpt", force=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        restore_model(model, tmp_path / "nothing")


def test_vit_rejects_bad_patch():
    with pytest.raises(ValueError, match="multiple of patch"):
        TinyViT(8, 1, 3, 16, 1, 2, 5, rngs=nnx.Rngs(0))
