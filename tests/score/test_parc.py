import numpy as np
import pytest
import scipy.stats

from jaxtransfer.score import parc
from tests.score._data import classification


def parc_oracle(f, y):
    f = (f - f.mean(0)) / f.std(0)
    iu = np.triu_indices(len(y), 1)
    rdm_f = 1 - np.corrcoef(f)
    # Rounded: np.corrcoef leaves ~1e-16 noise on the tied entries, which would break the ties at random.
    rdm_y = np.round(1 - np.corrcoef(np.eye(y.max() + 1)[y]), 12)
    return 100 * scipy.stats.spearmanr(rdm_f[iu], rdm_y[iu])[0]


@pytest.mark.parametrize("seed", range(3))
def test_parc_matches_oracle(x64, seed):
    f, y = classification(seed, n=80, d=7, c=3)
    assert float(parc(f, y, pca_dim=None)) == pytest.approx(parc_oracle(f, y), rel=1e-9)


def test_float64_under_the_thread_local_x64_switch(x64):
    """At this size XLA runs the host ranking on a worker thread, where ``jax.enable_x64()`` (thread-local: the
    x64 fixture) is off; a float64 callback result came back as float32 there and raised."""
    f, y = classification(5, n=400, d=60, c=3)
    for _ in range(3):  # it failed on most calls, not all
        assert float(parc(f, y, pca_dim=None)) == pytest.approx(parc_oracle(f, y), rel=1e-9)


def test_parc_on_pca_features_matches_oracle(x64):
    f, y = classification(4, n=80, d=40, c=4)
    c = f - f.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    axes = vt[:6].T
    axes *= np.sign(axes[np.argmax(np.abs(axes), 0), np.arange(6)])  # largest loading positive
    assert float(parc(f, y, pca_dim=6)) == pytest.approx(parc_oracle(c @ axes, y), rel=1e-8)


def test_parc_rejects_one_dimension():
    f, y = classification(0)
    with pytest.raises(ValueError, match="pca_dim must be"):
        parc(f, y, pca_dim=1)
    with pytest.raises(ValueError, match="at least 2 feature dimensions"):
        parc(f[:, :1], y)


def test_exactly_tied_dissimilarities_are_ties_whatever_the_row_order(x64):
    """With 2-D features every sample correlation is +-1 exactly, so the feature dissimilarities take two values;
    rounding left them a few ulps apart in an order set by the rows, and PARC moved by 7 points under a row
    permutation. Values within 64 sqrt(D) eps of 0 or 2 are snapped, and tie as in scipy's spearmanr (the reference
    rounds the dissimilarities to 8 decimals, restoring the exact ties)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 5)
    f = rng.normal(size=(10, 2)) + np.array([[0.0, 0.0], [1.0, 1.0]])[y]
    z = (f - f.mean(0)) / f.std(0)
    rows, cols = np.triu_indices(10, 1)
    feature = np.round((1 - np.corrcoef(z))[rows, cols], 8)
    label = (y[rows] != y[cols]).astype(float)
    expected = 100 * spearmanr(feature, label).statistic
    perm = rng.permutation(10)
    assert float(parc(f, y)) == pytest.approx(expected, rel=1e-10)
    assert float(parc(f[perm], y[perm])) == pytest.approx(expected, rel=1e-10)
