"""Hypothesis strategies for what a score's behaviour depends on: sample count against dimension (n < D and
n > D), class imbalance, feature scale (1e-6 .. 1e6), conditioning (column scales spread over up to 4 decades) and
class separation. Shrinking then moves towards small, balanced, well-conditioned problems."""

import numpy as np
from hypothesis import strategies as st


@st.composite
def classification_problems(draw, *, max_classes: int = 4, min_per_class: int = 5, max_dim: int = 40):
    """(features (n, D) float64, labels (n,) int) with every class present."""
    # sizes from a few values, so that compiled code is reused across examples; together they cover n < D and n > D
    c = draw(st.integers(2, max_classes))
    sizes = [min_per_class, 2 * min_per_class, 6 * min_per_class]
    counts = draw(st.lists(st.sampled_from(sizes), min_size=c, max_size=c))  # imbalance up to 6:1
    d = draw(st.sampled_from([2, 7, max_dim]))
    log_scale = draw(st.integers(-6, 6))
    log_spread = draw(st.floats(0, 4))  # condition number of the column scales, in decades
    separation = draw(st.floats(0, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(c), counts)
    means = separation * rng.normal(size=(c, d))
    columns = 10.0 ** np.linspace(0, log_spread, d)
    features = (rng.normal(size=(len(labels), d)) + means[labels]) * columns * 10.0**log_scale
    return features, labels
