import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from jaxtransfer.criticality import dotted_path, module_criticality

matplotlib.use("Agg")


def test_criticality_of_a_quadratic_loss_is_the_closed_form_grid_minimum():
    """Least squares at its minimum w*: L(w) = L* + (w - w*)^T H (w - w*), H = X^T X / n, exactly. Reverting a
    module m by (1 - alpha) delta_m and adding N(0, sigma^2 I) noise on it gives, in expectation,
    L* + (1 - alpha)^2 delta_m^T H_mm delta_m + sigma^2 tr(H_mm): the feasible set of each grid point and so the
    criticality min alpha^2 ||delta_m||^2 / sigma^2 follow in closed form. The grid is chosen so that no point lies
    within a factor 4 of the boundary (checked below), far beyond the Monte Carlo error of the noise average."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    y = x @ rng.normal(size=5) + 0.5 * rng.normal(size=400)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    l_star = np.mean((x @ w_star - y) ** 2)
    h = x.T @ x / len(y)
    w0 = w_star + np.array([0.01, -0.008, 0.006, 1.5, -2.0])  # "lower" barely moved, "upper" moved far

    def loss(params, data):
        xx, yy = data
        w = jnp.concatenate([params["lower"]["w"], params["upper"]["w"]])
        return jnp.mean(jnp.square(xx @ w - yy))

    def tree(w):
        return {"lower": {"w": jnp.asarray(w[:3], jnp.float32)}, "upper": {"w": jnp.asarray(w[3:], jnp.float32)}}

    eps, alphas, sigmas = 0.05, np.array([0.0, 0.5, 0.9, 0.99, 1.0]), np.logspace(-6, 0, 4)
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    crit = module_criticality(loss, tree(w0), tree(w_star), data, {"lower": "lower", "upper": "upper"},
                              eps=eps, alphas=alphas, sigmas=sigmas, num_samples=64)  # fmt: skip
    for name, idx in (("lower", slice(0, 3)), ("upper", slice(3, 5))):
        delta, hm = (w0 - w_star)[idx], h[idx, idx]
        a, s = np.meshgrid(alphas, sigmas, indexing="ij")
        excess = (1 - a) ** 2 * (delta @ hm @ delta) + s**2 * np.trace(hm)  # expected rise of the loss
        ratio = excess / (eps * l_star)
        assert not ((ratio > 0.25) & (ratio < 4)).any()  # the grid stays clear of the boundary
        expected = np.where(ratio <= 1, a**2 * (delta @ delta) / s**2, np.inf).min()
        assert crit.to_dict()[name] == pytest.approx(expected, rel=1e-5)
    assert crit.to_dict()["upper"] > 0 == crit.to_dict()["lower"]  # the barely moved module can be reverted
    assert str(crit).splitlines()[1:] == [
        f"lower   {crit.to_dict()['lower']:.4g}",
        f"upper   {crit.to_dict()['upper']:.4g}",
    ]
    ax = crit.plot()
    assert [b.get_height() for b in ax.patches] == list(crit.values)
    assert ax.get_yscale() == "symlog"  # 0 and values decades apart on one axis


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
