"""TransTailor: the physically pruned model equals the masked one (residual CNN, transformer MLP, inverted and plain
bottlenecks), parameters and XLA-counted FLOPs fall as stated, importance against float64 finite differences,
folding is exact, the loop removes the stated share, only the scales train in the scale step, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.finetune import (
    Strategy,
    TailorScale,
    TailorScaled,
    count_params,
    filter_groups,
    finetune,
    fold_tailor_scales,
    inject_tailor_scales,
    per_example_loss,
    prune_filters,
    tailor_importance,
    transtailor,
)
from jaxtransfer.models import CNN, MLP, EfficientNetLite, LiteConfig, ResNet50Half, TinyViT

rng = np.random.default_rng(0)
X = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
Y = (np.arange(16) % 5).astype(np.int32)


@nnx.jit
def _run(model, x):
    return model(x)


def _flops(model, x) -> float:
    graphdef, state = nnx.split(model)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x).compile()
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _cnn():
    m = CNN(3, 8, 3, 5, norm="batch", rngs=nnx.Rngs(0))
    m.eval()
    return m


def _vit():
    return TinyViT(16, 3, 4, 16, 2, 2, 5, rngs=nnx.Rngs(0))


def _random_keep(model, seed=0):
    r = np.random.default_rng(seed)
    keep = {}
    for site in filter_groups(model):
        c = site_width(model, site)
        keep[site.name] = np.sort(r.choice(c, size=max(1, c // 2), replace=False))
    return keep


def site_width(model, group):
    m = model
    for k in group.consumer:
        m = m[k] if isinstance(k, int) else getattr(m, k)
    return (m.consumer if isinstance(m, TailorScaled) else m).kernel.shape[-2]


def _masked(scaled, keep):
    masked = nnx.clone(scaled)
    for path, site in nnx.iter_modules(masked):
        if isinstance(site, TailorScaled):
            name = ".".join(map(str, path))
            mask = np.zeros(site.alpha.shape[0], np.float32)
            mask[keep[name]] = 1.0
            site.alpha[...] = site.alpha[...] * mask
    return masked


@pytest.mark.parametrize("build", [_cnn, _vit], ids=["cnn_batchnorm", "tiny_vit_mlp"])
def test_pruned_equals_masked_and_counts_fall_as_stated(build):
    model = build()
    scaled = inject_tailor_scales(model)
    np.testing.assert_array_equal(np.asarray(_run(scaled, X)), np.asarray(_run(model, X)))  # alpha = 1
    for _, site in nnx.iter_modules(scaled):  # random scales: the folding has something to do
        if isinstance(site, TailorScaled):
            site.alpha[...] = jnp.asarray(rng.uniform(0.5, 1.5, site.alpha.shape), jnp.float32)
    keep = _random_keep(scaled)
    pruned = prune_filters(scaled, keep)
    np.testing.assert_allclose(np.asarray(_run(pruned, X)), np.asarray(_run(_masked(scaled, keep), X)), atol=2e-6)
    folded = fold_tailor_scales(pruned)
    assert not any(isinstance(m, TailorScaled) for _, m in nnx.iter_modules(folded))
    np.testing.assert_allclose(np.asarray(_run(folded, X)), np.asarray(_run(pruned, X)), atol=2e-6)
    # parameters: each removed channel takes its producer column (+ bias), per-channel parameters and consumer row
    removed = {g.name: site_width(model, g) - len(keep[g.name]) for g in filter_groups(model)}
    r = sum(removed.values())
    # conv1 3x3xCx1 + bias, BatchNorm scale + bias, conv2 3x3x1xC (C = 8); or fc1 column + bias, fc2 row (width 16)
    per_channel = 9 * 8 + 1 + 2 + 9 * 8 if build is _cnn else 16 + 1 + 16
    assert count_params(model) - count_params(folded) == per_channel * r
    # FLOPs (XLA's count): per removed channel and sample, the two convolutions' multiply-adds (2 x 8 channels x
    # the (3 x 16 - 2)^2 taps that fall inside the zero-padded 16 x 16 map) or the two matmuls' (2 x 17 tokens x
    # width 16) are the bulk of the saving; the rest is the channel's elementwise work (measured: 1.05x and 1.14x
    # the multiply-adds, the GELU's erf being the largest part of the rest)
    core = 16 * 2 * (2 * 8 * (3 * 16 - 2) ** 2 if build is _cnn else 2 * 17 * 16) * r
    saved = _flops(model, X) - _flops(folded, X)
    assert core <= saved <= 1.25 * core


def test_bottleneck_chains_and_inverted_bottlenecks_prune_exactly():
    x = X[:2] * 0.5
    lite = EfficientNetLite(LiteConfig(0.25, 0.3, 32), num_outputs=3, rngs=nnx.Rngs(0))  # the layout, small
    for model in (ResNet50Half(num_outputs=3, rngs=nnx.Rngs(0)), lite):
        model.eval()
        groups = filter_groups(model)
        assert len(groups) == (
            32 if isinstance(model, ResNet50Half) else 7
        )  # 16 bottlenecks x 2; 8 blocks, expand != 1
        scaled = inject_tailor_scales(model)
        keep = _random_keep(scaled, seed=1)
        pruned = fold_tailor_scales(prune_filters(scaled, keep))
        np.testing.assert_allclose(np.asarray(_run(pruned, x)), np.asarray(_run(_masked(scaled, keep), x)),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
        assert count_params(pruned) < 0.75 * count_params(model)


def test_importance_is_the_taylor_term_against_finite_differences(x64):
    model = _cnn()
    scaled = inject_tailor_scales(model)
    for _, site in nnx.iter_modules(scaled):
        if isinstance(site, TailorScaled):
            site.alpha[...] = jnp.asarray(rng.uniform(0.5, 1.5, site.alpha.shape), jnp.float32)
    theta = tailor_importance(scaled, X, Y, batch_size=6)  # three uneven batches, mean over the 16 samples
    # independent reference: central differences of the mean loss of a float64 copy, |dL/d alpha_c * alpha_c|
    m64 = nnx.clone(scaled)
    for _, var in nnx.iter_graph(m64):
        if isinstance(var, nnx.Variable) and jnp.issubdtype(var[...].dtype, jnp.floating):
            var.set_value(jnp.asarray(var[...], jnp.float64))
    x64_, site = jnp.asarray(X, jnp.float64), m64.blocks[1].conv2
    a0, h = np.asarray(site.alpha[...]), 1e-6

    def mean_loss(a):
        site.alpha.set_value(jnp.asarray(a))
        return float(jnp.mean(per_example_loss(m64(x64_), jnp.asarray(Y), "classification")))

    for c in (0, 3, 7):
        up, down = a0.copy(), a0.copy()
        up[c] += h
        down[c] -= h
        fd = (mean_loss(up) - mean_loss(down)) / (2 * h)
        np.testing.assert_allclose(theta["blocks.1.conv2"][c], abs(fd * a0[c]), rtol=1e-3, atol=1e-8)  # float32


def test_the_loop_removes_the_stated_share_and_only_scales_train_in_the_scale_step():
    model = _cnn()
    scaled = inject_tailor_scales(model)
    step = Strategy("scales", TailorScale)
    trained, _ = finetune(scaled, (X, Y), strategy=step, epochs=2, batch_size=8, learning_rate=1e-2, progress=False)
    before, after = nnx.state(scaled, nnx.Not(TailorScale)), nnx.state(trained, nnx.Not(TailorScale))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert jnp.array_equal(a, b)
    assert not jnp.array_equal(scaled.blocks[0].conv2.alpha[...], trained.blocks[0].conv2.alpha[...])
    pruned, history = transtailor(model, (X, Y), prune_ratio=0.5, iterations=2, scale_epochs=1, finetune_epochs=1,
                                  final_epochs=1, batch_size=8, min_keep=2, eval_data=(X, Y))  # fmt: skip
    assert [h["removed"] for h in history] == [6, 12]  # 24 filters, half removed in two equal steps
    assert all(c >= 2 for c in history[-1]["channels"].values())
    assert history[-1]["params"] == count_params(pruned) < count_params(model)
    assert "eval_accuracy" in history[-1]
    assert not any(isinstance(m, TailorScaled) for _, m in nnx.iter_modules(pruned))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no prunable filter group"):
        inject_tailor_scales(MLP(4, [8], 3, rngs=nnx.Rngs(0)))
    assert filter_groups(CNN(3, 8, 2, 5, norm="layer", rngs=nnx.Rngs(0))) == []  # LayerNorm mixes channels
    scaled = inject_tailor_scales(_cnn())
    with pytest.raises(ValueError, match=r"keep needs >= 1 channel index in \[0, 8\)"):
        prune_filters(scaled, {"blocks.0.conv2": [8]})
    with pytest.raises(ValueError, match=r"no scaled filter group 'blocks\.9\.conv2'"):
        prune_filters(scaled, {"blocks.9.conv2": [0]})
    with pytest.raises(ValueError, match="inject_tailor_scales"):
        tailor_importance(_cnn(), X, Y)
    with pytest.raises(ValueError, match="prune_ratio"):
        transtailor(_cnn(), (X, Y), prune_ratio=1.0)
