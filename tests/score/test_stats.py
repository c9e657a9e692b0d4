"""LogME from sufficient statistics: merging is associative, chunked == in-memory, streaming == in-memory.

Tolerances: statistics computed from different chunkings differ only by the order of float64 sums (~1e-15
relative), so merged-vs-whole agreement is checked at 1e-9 (the issue's bar is 1e-6).
"""

import itertools

import hypothesis.extra.numpy as hnp
import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer.score import LogMEStats, logme, logme_from_stats, logme_stats, logme_streaming


def _data(seed, n=300, d=12, c=4):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    return rng.normal(size=(c, d))[labels] + rng.normal(size=(n, d)), labels


def _splits(n, cuts):
    edges = [0, *sorted(set(cuts)), n]
    return [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]


# Cuts on a grid of 25 samples keep the number of distinct chunk shapes (one compilation each) small.
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(1, 11).map(lambda i: 25 * i), max_size=6))
def test_merged_chunks_equal_the_whole(x64, seed, cuts):
    f, y = _data(seed)
    parts = [logme_stats(f[s], y[s], num_classes=4) for s in _splits(len(y), cuts)]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    assert float(logme_from_stats(total)) == pytest.approx(float(logme(f, y)), rel=1e-9)


@given(seed=st.integers(0, 2**16))
def test_merge_is_associative_and_commutative(x64, seed):
    f, y = _data(seed)
    a, b, c = (logme_stats(f[s], y[s], num_classes=4) for s in (slice(0, 50), slice(50, 170), slice(170, 300)))
    left, right, swapped = (a + b) + c, a + (b + c), c + (a + b)
    for x, z in [(left, right), (left, swapped)]:
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(z), strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-12, atol=1e-12)


def test_stats_of_classification_are_centred_class_sums_and_counts(x64):
    f, y = _data(1, n=40, d=3, c=3)
    s = logme_stats(f, y)
    scale = 2.0 ** int(s.log2_scale)  # the statistics are those of f / 2^e, max |f| / 2^e in [0.5, 1)
    assert 0.5 <= np.abs(f).max() / scale < 1
    c = f - f.mean(0)
    np.testing.assert_allclose(np.asarray(s.mean) * scale, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s.gram) * scale**2, c.T @ c, rtol=1e-12)
    cross = np.stack([c[y == k].sum(0) for k in range(3)], 1)
    np.testing.assert_allclose(np.asarray(s.cross) * scale, cross, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(s.sq_norms), np.bincount(y))
    np.testing.assert_array_equal(np.asarray(s.target_sums), np.bincount(y))
    np.testing.assert_allclose(np.asarray(s.target_m2), np.bincount(y) - np.bincount(y) ** 2 / 40, rtol=1e-12)
    assert float(s.count) == 40


def test_merged_moments_equal_the_moments_of_the_union(x64):
    # Chan's pairwise update against the moments of the concatenated data, computed directly in float64.
    f, y = _data(3, n=90, d=4, c=3)
    f = f + 50.0  # a large shared mean, as pooled activations have
    a, b = logme_stats(f[:20] * 8, y[:20], num_classes=3), logme_stats(f[20:], y[20:], num_classes=3)
    m = a + b
    whole = logme_stats(np.r_[f[:20] * 8, f[20:]], y, num_classes=3)
    for name in ("gram", "cross", "mean", "sq_norms", "target_sums", "target_m2", "count", "log2_scale"):
        np.testing.assert_allclose(np.asarray(getattr(m, name)), np.asarray(getattr(whole, name)), rtol=1e-10,
                                   atol=1e-9, err_msg=name)  # fmt: skip


@given(
    targets=hnp.arrays(
        np.float64, (120, 2), elements=st.floats(-10, 10, allow_nan=False, allow_subnormal=False)
    ).filter(lambda t: (np.abs(t).sum(0) > 1).all()),
    cut=st.sampled_from([1, 30, 119]),
)
def test_regression_stats_equal_the_whole(x64, targets, cut):
    f = np.random.default_rng(0).normal(size=(120, 5))
    s = logme_stats(f[:cut], targets[:cut], regression=True) + logme_stats(f[cut:], targets[cut:], regression=True)
    expected = float(logme(f, targets, regression=True))
    assert float(logme_from_stats(s)) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_streaming_equals_in_memory(x64):
    f, y = _data(2, n=1000, d=16, c=5)

    def chunks():
        for start in range(0, 1000, 128):
            yield f[start : start + 128], y[start : start + 128]

    got = float(logme_streaming(chunks(), num_classes=5, progress=False))
    assert got == pytest.approx(float(logme(f, y)), rel=1e-9)


def test_streaming_regression_with_progress_bar(x64, capsys):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(500, 8))
    t = f @ rng.normal(size=(8, 3)) + rng.normal(size=(500, 3))
    got = float(logme_streaming(((f[i : i + 100], t[i : i + 100]) for i in range(0, 500, 100)), regression=True))
    assert got == pytest.approx(float(logme(f, t, regression=True)), rel=1e-9)


def test_float32_stats_close_to_float64():
    f, y = _data(4, n=5000, d=64, c=10)
    s32 = sum(
        (logme_stats(f[i : i + 500].astype(np.float32), y[i : i + 500], num_classes=10) for i in range(500, 5000, 500)),
        logme_stats(f[:500].astype(np.float32), y[:500], num_classes=10),
    )
    with jax.enable_x64(True):
        ref = float(logme(f, y))
    assert float(logme_from_stats(s32)) == pytest.approx(ref, rel=1e-4)


# --- bad input ---------------------------------------------------------------------------------------


def test_merge_rejects_mismatched_shapes():
    f, y = _data(5)
    with pytest.raises(ValueError, match=r"cannot merge statistics of \(D, K\)"):
        logme_stats(f, y) + logme_stats(f[:, :5], y)
    with pytest.raises(ValueError, match="pass num_classes"):
        logme_stats(f, y) + logme_stats(f, y, num_classes=6)
    with pytest.raises(TypeError, match="can only merge LogMEStats"):
        logme_stats(f, y) + 1


def test_from_stats_rejects_empty_classes_and_too_few_samples():
    f, y = _data(6)
    only_first_classes = logme_stats(f[y < 2], y[y < 2], num_classes=4)
    with pytest.raises(ValueError, match=r"class\(es\) \[2, 3\] have no samples"):
        logme_from_stats(only_first_classes)
    with pytest.raises(ValueError, match="at least 2"):
        logme_from_stats(logme_stats(f[:1], y[:1], num_classes=4))
    with pytest.raises(TypeError, match="LogMEStats"):
        logme_from_stats((f.T @ f, f.T, 3))


def test_streaming_rejects_bad_streams():
    f, y = _data(7)
    with pytest.raises(ValueError, match="num_classes is required"):
        logme_streaming([(f, y)])
    with pytest.raises(ValueError, match="yielded no chunk"):
        logme_streaming([], num_classes=4, progress=False)
    with pytest.raises(ValueError, match="chunk 1: features contains 1 NaN"):
        bad = f[100:].copy()
        bad[0, 0] = np.nan
        logme_streaming([(f[:100], y[:100]), (bad, y[100:])], num_classes=4, progress=False)
    with pytest.raises(ValueError, match="chunk 0 must be a"):
        logme_streaming([f], num_classes=4, progress=False)
    with pytest.raises(ValueError, match="chunk 1: cannot merge"):
        logme_streaming([(f, y), (f[:, :3], y)], num_classes=4, progress=False)


def test_stats_is_a_pytree_through_jit():
    f, y = _data(8)
    s = logme_stats(f, y)
    doubled = jax.jit(lambda a: a + a)(s)
    assert isinstance(doubled, LogMEStats)
    np.testing.assert_allclose(np.asarray(doubled.count), 2 * len(y))
