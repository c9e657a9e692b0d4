import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import SSF, SSFParam, count_params, inject_ssf, merge_ssf, ssf_sites
from jaxtransfer.models import CNN, MLP, TinyViT

X = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
MODELS = {
    "mlp": lambda: MLP(64, (32, 16), 5, rngs=nnx.Rngs(0)),
    "cnn": lambda: CNN(1, 8, 2, 5, rngs=nnx.Rngs(0)),
    "cnn-bn": lambda: CNN(1, 8, 1, 5, norm="batch", rngs=nnx.Rngs(0)),
    "vit": lambda: TinyViT(8, 1, 2, 16, 2, 2, 5, rngs=nnx.Rngs(0)),
}


def _perturb(model, seed=1):
    """Moves gamma and beta far from their initial values, as training would."""
    keys = iter(jax.random.split(jax.random.key(seed), 1000))
    for _, v in nnx.iter_graph(model):
        if isinstance(v, SSFParam):
            v[...] = v[...] + 0.3 * jax.random.normal(next(keys), v[...].shape)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_ssf_at_identity_init_leaves_outputs_unchanged(name):
    base = MODELS[name]()
    base.eval()
    ssf = inject_ssf(base, init_std=0.0)
    ssf.eval()
    np.testing.assert_allclose(np.asarray(ssf(X)), np.asarray(base(X)), atol=1e-6)
    near = inject_ssf(base)  # the paper's N(1, 0.02), N(0, 0.02): close, not equal
    near.eval()
    assert 0 < float(jnp.max(jnp.abs(near(X) - base(X)))) < 0.5


@pytest.mark.parametrize("name", MODELS)
def test_merge_is_exact_and_restores_the_architecture(name):
    base = MODELS[name]()
    base.eval()
    adapted = _perturb(inject_ssf(base))
    adapted.eval()
    merged = merge_ssf(adapted)
    merged.eval()
    np.testing.assert_allclose(np.asarray(merged(X)), np.asarray(adapted(X)), atol=1e-5, rtol=1e-5)
    assert ssf_sites(merged) == []
    assert count_params(merged) == count_params(base)
    assert jax.tree.structure(nnx.state(merged)) == jax.tree.structure(nnx.state(base))
    assert nnx.graphdef(merged) == nnx.graphdef(base)


def test_inject_does_not_touch_the_input_model():
    base = MODELS["vit"]()
    before = jax.tree.map(jnp.copy, nnx.state(base, nnx.Param))
    adapted = inject_ssf(base)
    merge_ssf(_perturb(adapted))
    assert ssf_sites(base) == []
    after = nnx.state(base, nnx.Param)
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))


def test_default_sites_cover_attention_projections_but_not_the_head():
    sites = ssf_sites(inject_ssf(MODELS["vit"]()))
    assert "blocks.0.attn.query" in sites and "blocks.1.attn.out" in sites
    assert "patch_embed" in sites and "norm" in sites and "blocks.0.fc1" in sites
    assert not any(s.startswith("head") for s in sites)


def test_where_patterns_and_predicates():
    vit = MODELS["vit"]()
    assert ssf_sites(inject_ssf(vit, where="blocks.*.fc1")) == ["blocks.0.fc1", "blocks.1.fc1"]
    only_norms = inject_ssf(vit, where=lambda path, m: isinstance(m, nnx.LayerNorm))
    assert all("norm" in s for s in ssf_sites(only_norms))
    with pytest.raises(ValueError, match="selects no Linear"):
        inject_ssf(vit, where="nothing.*")


def test_errors_for_double_injection_and_merging_without_ssf():
    adapted = inject_ssf(MODELS["mlp"]())
    with pytest.raises(ValueError, match="already has SSF"):
        inject_ssf(adapted)
    with pytest.raises(ValueError, match="no SSF to merge"):
        merge_ssf(MODELS["mlp"]())


def test_unfoldable_sites_are_reported_never_dropped():
    class NoBias(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(4, 3, use_bias=False, rngs=nnx.Rngs(0))
            self.head = nnx.Linear(3, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.head(self.lin(x))

    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match="selects no"):  # the default skips a bias-free op: it could not fold
        inject_ssf(NoBias())
    adapted = _perturb(inject_ssf(NoBias(), "lin"))  # asked for by name, it is adapted and reported at merge
    with pytest.raises(ValueError, match=r"lin.*no bias"):
        merge_ssf(adapted)
    with pytest.warns(UserWarning, match="SSF kept"):
        kept = merge_ssf(adapted, strict=False)
    assert ssf_sites(kept) == ["lin"]
    np.testing.assert_allclose(np.asarray(kept(x)), np.asarray(adapted(x)), atol=1e-6)


def test_ssf_module_over_trailing_axes():
    ssf = SSF((2, 3), init_std=0.0, rngs=nnx.Rngs(0))
    ssf.gamma[...] = jnp.full((2, 3), 2.0)
    ssf.beta[...] = jnp.ones((2, 3))
    np.testing.assert_array_equal(np.asarray(ssf(jnp.ones((5, 2, 3)))), 3.0)
