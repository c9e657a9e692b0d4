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
