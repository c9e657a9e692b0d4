"""Hessian eigenvalues by Lanczos against numpy's eigvalsh of a known Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtransfer.landscape import hessian_eigenvalue_plane, hessian_extreme_eigenvalues, hessian_top_eigenvalues


def _quadratic_problem(seed, n, spectrum):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    h = (q * spectrum[None, :]) @ q.T
    h = 0.5 * (h + h.T)
    hj = jnp.asarray(h, jnp.float32)

    def loss(params, data):  # 0.5 x^T H x + b^T x with x the two leaves, flattened in leaf order
        x = jnp.concatenate([params["a"].reshape(-1), params["b"]])
        return 0.5 * x @ hj @ x + data @ x

    params = {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=n - 6),
              jnp.float32), "step": jnp.asarray(3, jnp.int32)}  # fmt: skip
    return loss, params, jnp.asarray(rng.normal(size=n), jnp.float32), np.linalg.eigvalsh(h)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_top_eigenvalues_of_a_known_hessian(seed, scale):
    n = 40
    spectrum = scale * np.concatenate([[10.0, 7.0, 5.0], np.random.default_rng(seed).uniform(-1, 1, n - 3)])
    loss, params, data, exact = _quadratic_problem(seed, n, spectrum)
    top = hessian_top_eigenvalues(loss, params, data, k=3, num_iterations=25)
    # separated extremes converge in few steps; float32 Hessian-vector products: measured 9.5e-7 relative over 18
    # drawn cases, bound 5x
    np.testing.assert_allclose(top, exact[::-1][:3], rtol=5e-6)
    low, high = hessian_extreme_eigenvalues(loss, params, data, num_iterations=25)
    assert high == pytest.approx(exact[-1], rel=5e-6)
    # the bottom sits in a dense cluster and converges slowly: Ritz values interlace (never below lambda_min), and in
    # 25 steps it came within 4e-4 of the spectral width at worst over ~25 draws; bound 1% of the width
    width = exact[-1] - exact[0]
    assert exact[0] - 1e-6 * width <= low <= exact[0] + 0.01 * width


def test_full_krylov_space_gives_the_whole_spectrum_without_spurious_zeros():
    n = 12
    spectrum = np.array([4.0, 4.0, 4.0, 3.0, -2.0, -2.0, 1.0, 1.0, 1.0, 1.0, 0.5, -7.0])  # repeated eigenvalues
    loss, params, data, exact = _quadratic_problem(0, n, spectrum)
    got = hessian_top_eigenvalues(loss, params, data, k=n, num_iterations=n)
    # Krylov breakdown after 6 distinct values: fresh orthogonal vectors keep the Ritz values eigenvalues
    np.testing.assert_allclose(got, exact[::-1], atol=2e-5)
    jitted = jax.jit(lambda p: loss(p, data))
    assert np.isfinite(float(jitted(params)))


def test_eigenvalue_plane_matches_the_analytic_curvature():
    def loss(p, data):  # Hessian diag(2, 12 w1^2 - 4)
        return p["w"][0] ** 2 + p["w"][1] ** 4 - 2 * p["w"][1] ** 2

    axes = ({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])})
    grid = hessian_eigenvalue_plane(loss, {"w": jnp.zeros(2)}, directions=axes, grid=(3, 5), span=(-1.0, 1.0))
    w1 = grid.betas.astype(np.float64)
    curv = 12 * w1**2 - 4
    low = np.minimum(curv, 2.0)[None, :].repeat(3, 0)
    high = np.maximum(curv, 2.0)[None, :].repeat(3, 0)
    np.testing.assert_allclose(grid.metrics["min_eigenvalue"], low, atol=1e-5)
    np.testing.assert_allclose(grid.metrics["max_eigenvalue"], high, atol=1e-5)
    np.testing.assert_allclose(grid.metrics["ratio"], np.abs(low) / np.abs(high), atol=1e-6)
    a = grid.alphas.astype(np.float64)[:, None]
    np.testing.assert_allclose(grid.losses, a**2 + w1[None, :] ** 4 - 2 * w1[None, :] ** 2, atol=1e-6)


def test_hessian_inputs_are_checked():
    def loss(p, data):
        return jnp.sum(p["w"] ** 2)

    with pytest.raises(ValueError, match="k = 3 eigenvalues asked of a Hessian of size 2"):
        hessian_top_eigenvalues(loss, {"w": jnp.ones(2)}, k=3)
    with pytest.raises(ValueError, match="NaN"):
        hessian_top_eigenvalues(loss, {"w": jnp.array([1.0, jnp.nan])})
    with pytest.raises(ValueError, match="no floating-point leaves"):
        hessian_extreme_eigenvalues(loss, {"w": jnp.ones(2, jnp.int32)})
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        hessian_top_eigenvalues(lambda p, d: jnp.sum(jnp.sqrt(p["w"] - 2.0)), {"w": jnp.ones(2)})
