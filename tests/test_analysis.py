"""Shared and disjoint mistakes against Python set arithmetic."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.analysis import mistake_overlap


@given(seed=st.integers(0, 2**16), n=st.integers(1, 60), models=st.integers(1, 4))
def test_counts_and_examples_match_set_arithmetic(seed, n, models):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    preds = {f"m{i}": rng.integers(0, 3, n) for i in range(models)}
    preds["scores"] = rng.normal(size=(n, 3))  # logits: the arg-max is the prediction
    out = mistake_overlap(preds, labels, examples=4)
    classes = {k: (v.argmax(1) if v.ndim == 2 else v) for k, v in preds.items()}
    err = {k: {i for i in range(n) if c[i] != labels[i]} for k, c in classes.items()}
    assert out.errors == {k: len(e) for k, e in err.items()}
    names = list(preds)
    assert list(out.pairs) == [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for (a, b), c in out.pairs.items():
        ea, eb = err[a], err[b]
        assert c["both_wrong"] == len(ea & eb) and c["only_a"] == len(ea - eb) and c["only_b"] == len(eb - ea)
        assert c["both_right"] == n - len(ea | eb)
        assert c["jaccard"] == (pytest.approx(len(ea & eb) / len(ea | eb)) if ea | eb else 1.0)
        assert out.examples[(a, b)]["both_wrong"] == sorted(ea & eb)[:4]
        assert out.examples[(a, b)]["only_b"] == sorted(eb - ea)[:4]
    assert "jaccard" in out.table()


def test_bad_inputs():
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        mistake_overlap({"a": np.array([0, 1])}, y)
    with pytest.raises(TypeError, match="class indices"):
        mistake_overlap({"a": np.array([0.0, 1.0, 2.0])}, y)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mistake_overlap({"a": np.array([[0.0, np.nan]] * 3)}, y)
    with pytest.raises(ValueError, match=">= 0"):
        mistake_overlap({"a": y}, np.array([0, -1, 2]))
    with pytest.raises(TypeError, match="integers"):
        mistake_overlap({"a": y}, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="non-empty dict"):
        mistake_overlap({}, y)
