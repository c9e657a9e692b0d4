"""LEEP and NCE against float64 loops written from the papers' definitions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.score import leep, nce
from tests.score._data import classification, source_probs


def leep_oracle(p, y):
    n, cs = p.shape
    c = y.max() + 1
    joint = np.zeros((c, cs))
    for i in range(n):
        joint[y[i]] += p[i] / n
    cond = joint / joint.sum(0, keepdims=True)
    return np.mean([np.log(sum(cond[y[i], z] * p[i, z] for z in range(cs))) for i in range(n)])


def nce_oracle(z, y):
    n = len(y)
    total = 0.0
    for a in set(y.tolist()):
        for b in set(z.tolist()):
            pab = np.sum((y == a) & (z == b)) / n
            if pab > 0:
                total += pab * np.log(pab / (np.sum(z == b) / n))
    return total


@pytest.mark.parametrize("seed", range(4))
def test_leep_matches_oracle(x64, seed):
    _, y = classification(seed, n=90, c=4)
    p = source_probs(seed, y, cs=6)
    assert float(leep(p, y)) == pytest.approx(leep_oracle(p, y), rel=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_nce_matches_oracle(x64, seed):
    _, y = classification(seed, n=90, c=4)
    z = np.argmax(source_probs(seed, y, cs=6), 1)
    assert float(nce(z, y)) == pytest.approx(nce_oracle(z, y), rel=1e-10, abs=1e-12)


def test_perfect_source_gives_zero():
    y = np.arange(30) % 3
    assert float(nce(y + 2, y)) == pytest.approx(0.0, abs=1e-7)
    assert float(leep(np.eye(5)[y + 2], y)) == pytest.approx(0.0, abs=1e-6)


@given(seed=st.integers(0, 2**16))
def test_invariant_to_permuting_samples_and_relabelling(x64, seed):
    _, y = classification(seed, n=60, c=3)
    p = source_probs(seed, y)
    perm = np.random.default_rng(seed).permutation(60)
    relabel = np.array([2, 0, 1])
    ref_leep, ref_nce = float(leep(p, y)), float(nce(p.argmax(1), y))
    assert float(leep(p[perm], relabel[y][perm])) == pytest.approx(ref_leep, rel=1e-10)
    assert float(nce(p.argmax(1)[perm], relabel[y][perm])) == pytest.approx(ref_nce, rel=1e-10, abs=1e-12)
    # Permuting the source classes (columns) changes nothing either.
    cols = np.random.default_rng(seed + 1).permutation(p.shape[1])
    assert float(leep(p[:, cols], y)) == pytest.approx(ref_leep, rel=1e-10)


def test_sharper_source_scores_higher():
    _, y = classification(0, n=400, c=4)
    scores = [float(leep(source_probs(1, y, sharpness=s), y)) for s in (0.0, 1.0, 3.0, 10.0)]
    assert scores == sorted(scores), scores
    hard = [float(nce(source_probs(1, y, sharpness=s).argmax(1), y)) for s in (0.0, 1.0, 10.0)]
    assert hard == sorted(hard), hard


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (-np.ones((4, 2)) / 2, np.array([0, 1, 0, 1]), "negative entries"),
        (np.ones((4, 2)), np.array([0, 1, 0, 1]), "must sum to 1"),
        (np.full((4, 2), 0.5), np.array([0, 1, 0]), "4 rows but labels has 3"),
        (np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "NaN"),
        (np.full((4,), 0.5), np.array([0, 1, 0, 1]), "2-D"),
    ],
)
def test_leep_rejects_bad_input(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        leep(probs, labels)


def test_nce_rejects_bad_input():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(TypeError, match="source_labels must be integer class ids"):
        nce(np.array([0.0, 1, 0, 1]), y)
    with pytest.raises(ValueError, match="source_labels has 3 entries but labels has 4"):
        nce(np.array([0, 1, 0]), y)
    with pytest.raises(ValueError, match="source_labels must be >= 0"):
        nce(np.array([0, -1, 0, 1]), y)
    with pytest.raises(ValueError, match="source_labels must be < num_classes=2; got 2"):
        nce(np.array([0, 2, 0, 1]), y, num_source_classes=2)
