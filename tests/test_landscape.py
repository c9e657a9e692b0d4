import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from jaxtransfer.landscape import barrier, interpolate, linear_path, plane, random_directions

matplotlib.use("Agg")
rng = np.random.default_rng(0)


def _theta(seed):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(r.normal(size=4), jnp.float32),
            "count": jnp.asarray(seed, jnp.int32)}  # fmt: skip


def _quadratic(params, data):  # convex in the parameters
    return jnp.sum(jnp.square(params["w"] - data)) + jnp.sum(jnp.square(params["b"]))


def test_interpolation_endpoints_are_exact():
    a, b = _theta(1), _theta(2)
    for lam, ref in ((0.0, a), (1.0, b)):
        out = interpolate(a, b, lam)
        np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(ref["w"]))
    assert int(interpolate(a, b, 0.7)["count"]) == 1  # non-float leaves come from theta_a


def test_path_matches_a_loop_and_convex_barrier_is_zero():
    a, b = _theta(1), _theta(2)
    data = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    path = linear_path(_quadratic, a, b, data, num=11, chunk=4)
    loop = [float(_quadratic(interpolate(a, b, lam), data)) for lam in np.linspace(0, 1, 11)]
    np.testing.assert_allclose(path.losses, loop, rtol=1e-5)
    height, _ = barrier(path)
    assert height <= 1e-5  # a convex loss lies below the chord
    ax = path.plot(label="quadratic")
    assert ax.get_xlabel() == "interpolation coefficient"


def test_barrier_of_a_bump():
    from jaxtransfer.landscape import Path

    lams = np.linspace(0, 1, 5)
    height, where = barrier(Path(lams, np.array([1.0, 2.0, 4.0, 2.5, 3.0])))
    assert height == pytest.approx(4.0 - 2.0) and where == 0.5


def test_extrapolation_needs_to_be_asked_for():
    a, b = _theta(1), _theta(2)
    with pytest.raises(ValueError, match="extrapolate=True"):
        linear_path(_quadratic, a, b, jnp.zeros((3, 4)), lams=[-0.5, 0.0, 1.0, 1.5])
    path = linear_path(_quadratic, a, b, jnp.zeros((3, 4)), lams=[-0.5, 0.0, 1.0, 1.5], extrapolate=True)
    assert path.losses.shape == (4,)
    from jaxtransfer.landscape import Path

    with pytest.raises(ValueError, match="endpoints"):
        barrier(Path(np.array([0.2, 0.5]), np.array([1.0, 2.0])))


def test_mismatched_pytrees_are_rejected():
    a = _theta(1)
    b = {"w": jnp.zeros((3, 5)), "b": jnp.zeros(4), "count": jnp.asarray(0, jnp.int32)}
    with pytest.raises(ValueError, match=r"leaf \['w'\]: shape \(3, 5\)"):
        linear_path(_quadratic, a, b, jnp.zeros((3, 4)))


def test_filter_normalised_directions():
    theta = _theta(3)
    d = random_directions(theta, jax.random.key(0))
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(d["w"]), axis=0), np.linalg.norm(np.asarray(theta["w"]), axis=0), rtol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(d["b"]), 0.0)  # 1-D leaves are zeroed
    assert int(d["count"]) == 0
    with pytest.raises(ValueError, match="normalize must be"):
        random_directions(theta, jax.random.key(0), normalize="unit")


def test_plane_through_three_points_and_along_directions():
    t0, t1, t2 = _theta(1), _theta(2), _theta(3)
    data = jnp.zeros((3, 4))
    p = plane(_quadratic, t0, data, points=(t1, t2), grid=(5, 4), span=(-0.5, 1.5))
    assert p.losses.shape == (5, 4)
    i, j = int(np.argmin(np.abs(p.alphas - 1.0))), int(np.argmin(np.abs(p.betas - (-0.5))))
    expected = _quadratic(jax.tree.map(lambda a, b, c: a + 1.0 * (b - a) - 0.5 * (c - a), t0, t1, t2), data)
    assert p.losses[i, j] == pytest.approx(float(expected), rel=1e-5)
    d1, d2 = random_directions(t0, jax.random.key(1)), random_directions(t0, jax.random.key(2))
    q = plane(_quadratic, t0, data, directions=(d1, d2), grid=(3, 3))
    assert q.losses[1, 1] == pytest.approx(float(_quadratic(t0, data)), rel=1e-5)  # the centre is theta_0
    q.plot()
    with pytest.raises(ValueError, match="exactly one of"):
        plane(_quadratic, t0, data)
