import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from jaxtransfer.criticality import dotted_path, module_criticality

matplotlib.use("Agg")


def _loss(params, data):
    x, y = data
    h = jnp.tanh(x @ params["lower"]["w"])
    return jnp.mean(jnp.square(h @ params["upper"]["w"] - y))


def test_untouched_module_has_zero_criticality_and_a_trained_one_more():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
    init = {"lower": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}, "upper": {"w": jnp.zeros((4, 1))}}
    final = {"lower": init["lower"], "upper": {"w": jnp.asarray(rng.normal(size=(4, 1)), jnp.float32)}}
    y = jnp.tanh(x @ final["lower"]["w"]) @ final["upper"]["w"] + 0.1 * jnp.asarray(rng.normal(size=(64, 1)))
    crit = module_criticality(_loss, init, final, (x, y), {"lower": "lower", "upper": "upper"}, num_samples=4)
    assert crit.to_dict()["lower"] == 0.0  # never moved: alpha = 0 keeps the loss
    assert crit.to_dict()["upper"] > 0.0  # reverting the trained layer raises the loss
    assert "upper" in str(crit)
    crit.plot()


def test_errors_and_paths():
    init = {"a": {"w": jnp.zeros(2)}}
    with pytest.raises(ValueError, match="selects no floating-point leaf"):
        module_criticality(lambda p, d: 1 + jnp.sum(p["a"]["w"]), init, init, None, {"m": "b"})
    with pytest.raises(ValueError, match="needs a positive loss"):
        module_criticality(lambda p, d: 0.0 * jnp.sum(p["a"]["w"]), init, init, None, {"m": "a"})
    with pytest.raises(ValueError, match="eps must be"):
        module_criticality(lambda p, d: jnp.sum(p["a"]["w"]), init, init, None, {"m": "a"}, eps=-1.0)
    import jax

    assert [dotted_path(p) for p, _ in jax.tree_util.tree_leaves_with_path({"x": [jnp.ones(1)]})] == ["x.0"]
