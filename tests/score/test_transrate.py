import jax
import numpy as np
import pytest
from scipy import linalg

from jaxtransfer.score import transrate
from tests.score._data import classification


def transrate_oracle(f, y, eps=1e-4):
    """TransRate = R(Z) - sum_k (n_k / n) R(Z_k), R(Z) = 1/2 log det(I_d + Z^T Z / (n eps)) on the centred features
    (Huang et al., 2022), from the definition: scipy's LU log-determinant of the d x d matrix (the library takes the
    singular values of Z from a QR factor instead)."""
    z = f - f.mean(0)
    n, d = z.shape

    def rate(zz, count):
        lu, _ = linalg.lu_factor(np.eye(d) + zz.T @ zz / (count * eps))
        return 0.5 * np.sum(np.log(np.abs(np.diag(lu))))

    conditional = sum(np.sum(y == k) / n * rate(z[y == k], np.sum(y == k)) for k in range(y.max() + 1))
    return rate(z, n) - conditional


@pytest.mark.parametrize(("seed", "n", "d", "eps"), [(0, 150, 6, 1e-4), (1, 40, 30, 1e-2), (2, 300, 2, 1.0)])
def test_transrate_matches_oracle(x64, seed, n, d, eps):
    f, y = classification(seed, n=n, d=d, c=3)
    assert float(transrate(f, y, eps=eps)) == pytest.approx(transrate_oracle(f, y, eps), rel=1e-9)


def test_transrate_rejects_bad_eps():
    f, y = classification(0)
    with pytest.raises(ValueError, match="eps must be positive"):
        transrate(f, y, eps=0.0)


def test_transrate_imbalanced_and_traced_labels_match_oracle(x64):
    """Class blocks of the largest class size (eager) and of n rows (traced labels) give the oracle's value."""
    rng = np.random.default_rng(7)
    y = np.concatenate([np.zeros(1, int), np.ones(5, int), np.full(90, 2), np.full(17, 3)])[rng.permutation(113)]
    f = rng.normal(size=(113, 7)) + 0.5 * np.eye(4, 7)[y]
    expected = transrate_oracle(f, y)
    assert float(transrate(f, y)) == pytest.approx(expected, rel=1e-9)
    traced = jax.jit(lambda a, b: transrate(a, b, num_classes=4))(f, y)
    assert float(traced) == pytest.approx(expected, rel=1e-9)
