"""Filter normalisation of random directions for convolution kernels of any rank (it raised on 4-D kernels)."""

import jax
import numpy as np
import pytest

from jaxtransfer.landscape import random_directions


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6), (3, 3, 4, 8), (2, 3, 3, 4, 5)])
def test_filter_normalised_direction_matches_each_filter_norm(shape):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    d = np.asarray(
        random_directions({"kernel": w, "bias": np.ones(shape[-1], np.float32)}, jax.random.key(1))["kernel"]
    )
    axes = tuple(range(len(shape) - 1))
    want = np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=axes))
    got = np.sqrt(np.sum(d.astype(np.float64) ** 2, axis=axes))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(d, w)  # a random direction, not the weights themselves
