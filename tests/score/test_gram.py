"""The half Gram matrix against numpy's float64 X^T X."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.score._gram import num_panels, symmetrize_upper, upper_gram


@given(
    x=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 9), st.integers(1, 13)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
    ),
    panels=st.integers(1, 6),
)
def test_upper_triangle_equals_numpy(x64, x, panels):
    want = x.T @ x
    got = np.asarray(upper_gram(jnp.asarray(x), panels=panels))
    iu = np.triu_indices(x.shape[1])
    scale = max(1.0, float(np.abs(x).max()) ** 2 * x.shape[0])
    np.testing.assert_allclose(got[iu], want[iu], rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(np.asarray(symmetrize_upper(jnp.asarray(got))), want, rtol=0, atol=1e-13 * scale)


def test_panels_under_jit_and_the_default_count():
    x = np.random.default_rng(0).normal(size=(64, 1030)).astype(np.float32)
    assert num_panels(1030) == 4 and num_panels(1023) == 1
    got = np.asarray(jax.jit(lambda a: symmetrize_upper(upper_gram(a)))(x))
    want = x.astype(np.float64).T @ x.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-4)  # float32 sums of 64 products of O(1) terms
