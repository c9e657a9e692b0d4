import sys

import numpy as np
import pytest

import jaxtransfer as jt


def test_a_plot_without_matplotlib_says_how_to_install_it(monkeypatch):
    labels = np.arange(30) % 3
    ranking = jt.rank({"a": np.eye(3)[labels] + 0.1 * np.random.default_rng(0).normal(size=(30, 3))}, labels)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match=r"plots need matplotlib: pip install matplotlib"):
        ranking.plot()
