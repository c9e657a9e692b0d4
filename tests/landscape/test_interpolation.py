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
    # Along theta(lam) = (1 - lam) a + lam b the quadratic is a parabola, by hand in float64 numpy
    wa, wb, ba, bb, x = (np.asarray(v, np.float64) for v in (a["w"], b["w"], a["b"], b["b"], data))
    lams = np.linspace(0, 1, 11)
    closed = [np.sum(((1 - t) * wa + t * wb - x) ** 2) + np.sum(((1 - t) * ba + t * bb) ** 2) for t in lams]
    np.testing.assert_allclose(path.lams, lams, rtol=1e-7)
    np.testing.assert_allclose(path.losses, closed, rtol=1e-6)  # float32: measured 1.1e-7, bound ~10x
    height, _where = barrier(path)
    # a convex loss lies below its chord: the largest excess over the chord is 0, up to float32 rounding
    chord = (1 - lams) * closed[0] + lams * closed[-1]
    assert height == pytest.approx(max(np.max(np.asarray(closed) - chord), 0.0), abs=1e-4)
    ax = path.plot(label="quadratic")
    assert ax.get_xlabel().startswith("interpolation coefficient")
    assert len(ax.lines) == 3  # the path, the chord, the barrier's drop to the chord
    np.testing.assert_allclose(ax.lines[1].get_ydata(), chord, rtol=1e-6)
    assert ax.texts[0].get_text().startswith("barrier")


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
    np.testing.assert_allclose(p.alphas, np.linspace(-0.5, 1.5, 5), rtol=1e-7)
    np.testing.assert_allclose(p.betas, np.linspace(-0.5, 1.5, 4), rtol=1e-7)

    def by_hand(t, u, v, alphas, betas):  # loss(t + alpha u + beta v) on the whole grid, float64 numpy
        w, b = (np.asarray(t[k], np.float64) for k in ("w", "b"))
        uw, ub, vw, vb = (np.asarray(d[k], np.float64) for d in (u, v) for k in ("w", "b"))
        return np.array([[np.sum((w + a * uw + c * vw) ** 2) + np.sum((b + a * ub + c * vb) ** 2) for c in betas]
                         for a in alphas])  # fmt: skip

    def diff(x, y):
        return {k: jnp.asarray(x[k], jnp.float32) - jnp.asarray(y[k], jnp.float32) for k in ("w", "b")}

    expected = by_hand(t0, diff(t1, t0), diff(t2, t0), p.alphas, p.betas)
    np.testing.assert_allclose(p.losses, expected, rtol=1e-6)  # float32: measured 1.2e-7
    d1, d2 = random_directions(t0, jax.random.key(1)), random_directions(t0, jax.random.key(2))
    q = plane(_quadratic, t0, data, directions=(d1, d2), grid=(3, 3))
    np.testing.assert_allclose(q.losses, by_hand(t0, d1, d2, q.alphas, q.betas), rtol=1e-6)
    assert q.losses[1, 1] == pytest.approx(float(_quadratic(t0, data)), rel=1e-6)  # the centre is theta_0
    ax = q.plot()
    assert ax.get_xlabel().startswith("alpha") and ax.get_ylabel().startswith("beta")
    assert ax.get_title() == "loss over a 3 x 3 grid" and [t.get_text() for t in ax.texts] == ["theta_0"]
    with pytest.raises(ValueError, match="exactly one of"):
        plane(_quadratic, t0, data)


def test_a_second_path_or_plane_with_the_same_loss_does_not_compile_again():
    traces = []

    def loss(params, data):
        traces.append(1)  # runs once per trace (compilation), not per evaluation
        return _quadratic(params, data)

    a, b, c = _theta(1), _theta(2), _theta(3)
    data = jnp.zeros((3, 4))
    linear_path(loss, a, b, data, num=9, chunk=4)  # 3 chunks, the last padded: one compiled shape
    first = len(traces)
    assert first == 1
    linear_path(loss, b, c, data, num=5, chunk=4)
    assert len(traces) == first
    plane(loss, a, data, points=(b, c), grid=(3, 3))
    plane(loss, b, data, points=(a, c), grid=(4, 2))
    assert len(traces) == first + 1  # one more compilation for the plane map


def test_metrics_in_one_pass_and_minibatches_weighted_by_size():
    a, b = _theta(1), _theta(2)
    rng_ = np.random.default_rng(4)
    x = rng_.normal(size=(10, 3)).astype(np.float32)
    y = rng_.normal(size=(10, 4)).astype(np.float32)

    def metrics(params, batch):
        pred = batch[0] @ params["w"] + params["b"][None, :]
        err = jnp.mean(jnp.square(pred - batch[1]), axis=1)
        return {"loss": jnp.mean(err), "max_error": jnp.max(err), "hit": jnp.mean((err < 1.0).astype(jnp.float32))}

    full = linear_path(metrics, a, b, (x, y), num=5)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # unequal sizes: the mean must be weighted by 4 and 6
    parts = linear_path(metrics, a, b, num=5, batches=batches)
    np.testing.assert_allclose(parts.losses, full.losses, rtol=2e-6)
    np.testing.assert_allclose(parts.metrics["hit"], full.metrics["hit"], rtol=2e-6)
    # by hand in float64 at lam = 0.25
    w = 0.75 * np.asarray(a["w"], np.float64) + 0.25 * np.asarray(b["w"], np.float64)
    bias = 0.75 * np.asarray(a["b"], np.float64) + 0.25 * np.asarray(b["b"], np.float64)
    err = np.mean((x @ w + bias - y) ** 2, axis=1)
    assert full.metrics["max_error"][1] == pytest.approx(err.max(), rel=1e-5)
    assert full.losses[1] == pytest.approx(err.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="'loss' entry"):
        linear_path(lambda p, d: {"acc": _quadratic(p, d)}, a, b, jnp.zeros((3, 4)), num=3)
    with pytest.raises(ValueError, match="not both"):
        linear_path(metrics, a, b, (x, y), num=3, batches=batches)


def test_a_plane_resumes_from_its_checkpoint(tmp_path):
    t0, t1, t2 = _theta(1), _theta(2), _theta(3)
    data = jnp.zeros((3, 4))
    calls = {"n": 0}

    class Interrupted(Exception):
        pass

    def flaky(params, d):
        return _quadratic(params, d)

    file = tmp_path / "plane.npz"
    whole = plane(flaky, t0, data, points=(t1, t2), grid=(5, 5), chunk=4)
    from jaxtransfer.landscape import _interpolation

    real = _interpolation._save_partial

    def save_then_stop(path, fingerprint, metrics):
        real(path, fingerprint, metrics)
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted  # killed after 3 of 7 chunks

    _interpolation._save_partial = save_then_stop
    try:
        with pytest.raises(Interrupted):
            plane(flaky, t0, data, points=(t1, t2), grid=(5, 5), chunk=4, checkpoint=file)
    finally:
        _interpolation._save_partial = real
    with np.load(file) as saved:
        assert int(np.sum(~np.isnan(saved["metric:loss"]))) == 12  # three chunks of 4 were kept
    evaluated = []

    def counting(params, d):
        evaluated.append(1)
        return _quadratic(params, d)

    resumed = plane(counting, t0, data, points=(t1, t2), grid=(5, 5), chunk=4, checkpoint=file)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    with pytest.raises(ValueError, match="another path or plane"):
        plane(flaky, t0, data, points=(t1, t2), grid=(4, 4), chunk=4, checkpoint=file)
    with pytest.raises(ValueError, match="another path or plane"):  # the same grid through other models
        plane(flaky, t1, data, points=(t0, t2), grid=(5, 5), chunk=4, checkpoint=file)


def test_the_compiled_evaluator_cache_does_not_keep_a_loss_alive():
    import gc
    import weakref

    def loss(params, data):
        return _quadratic(params, data)

    linear_path(loss, _theta(1), _theta(2), jnp.zeros((3, 4)), num=3)
    ref = weakref.ref(loss)
    del loss
    gc.collect()
    assert ref() is None
