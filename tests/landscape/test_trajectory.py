"""PCA directions of a trajectory against numpy's SVD; projections against least squares by hand."""

import numpy as np
import pytest

from jaxtransfer.landscape import pca_directions, project_trajectory


def _trajectory(seed, n=8):
    rng = np.random.default_rng(seed)
    return [{"k": rng.normal(size=(4, 3)).astype(np.float32) * (i + 1), "b": rng.normal(size=3).astype(np.float32),
             "step": np.int32(i)} for i in range(n)]  # fmt: skip


def _flat(t):
    return np.concatenate([np.asarray(t["b"], np.float64).ravel(), np.asarray(t["k"], np.float64).ravel()])


def test_pca_directions_match_numpy_svd():
    path = _trajectory(0)
    (d1, d2), ratio = pca_directions(path)
    m = np.stack([_flat(t) - _flat(path[-1]) for t in path[:-1]])
    m = m - m.mean(0)
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    for d, ref in zip((d1, d2), vt[:2], strict=True):
        got = _flat(d)
        assert abs(abs(got @ ref) - 1.0) < 1e-6  # the same unit direction up to sign (stored as float32: 2e-8)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s**2), rtol=1e-9)
    assert d1["k"].dtype == np.float32 and int(d1["step"]) == 0


def test_projection_recovers_coordinates_in_the_plane():
    rng = np.random.default_rng(1)
    u = {"k": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    v = {"k": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    origin = {"k": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    coords = rng.normal(size=(5, 2))
    points = [{k: origin[k] + a * u[k] + b * v[k] for k in u} for a, b in coords] + [origin]
    got = project_trajectory(points, (u, v))
    np.testing.assert_allclose(got[:-1], coords, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[-1], 0.0, atol=1e-12)


def test_trajectory_errors():
    with pytest.raises(ValueError, match="at least 4"):
        pca_directions(_trajectory(0, 3))
    line = [{"w": np.array([t, 2 * t])} for t in np.linspace(0, 1, 5)]
    with pytest.raises(ValueError, match="fewer than two directions"):
        pca_directions(line)
    with pytest.raises(ValueError, match="parallel"):
        project_trajectory(line, ({"w": np.array([1.0, 1.0])}, {"w": np.array([2.0, 2.0])}))
