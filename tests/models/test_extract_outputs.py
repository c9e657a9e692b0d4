"""extract_outputs: the arrays it returns are the backbone's own outputs on the preprocessed split (features, the
head's softmax, an intermediate layer's pooled features), and each bad argument is refused with what to do."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtransfer.data import load_dataset
from jaxtransfer.models import CNN, EfficientNetLite, LiteConfig, extract_outputs, preprocess_for


@pytest.fixture(scope="module")
def lite():
    return EfficientNetLite(LiteConfig(0.25, 0.3, 32), rngs=nnx.Rngs(0))  # a small Lite with a 1000-way head


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_per_class=3)


@nnx.jit
def _reference(model, x):
    """The backbone's own outputs, in one compiled call: (features, logits, pooled features of every layer)."""
    return model.features(x), model(x), model.layer_features(x)


def test_outputs_are_the_backbones_own_on_the_preprocessed_split(lite, digits):
    x, y = digits.part("test")
    features, logits, layers = _reference(lite, preprocess_for(lite, image_size=32)(x))
    out = extract_outputs(lite, digits, part="test", image_size=32, batch_size=4, progress=False)
    assert sorted(out) == ["features", "labels", "probs"]
    np.testing.assert_array_equal(out["labels"], y)
    np.testing.assert_allclose(out["features"], np.asarray(features), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["probs"], np.asarray(jax.nn.softmax(logits, axis=-1)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)
    layer = lite.layer_names[1]  # an intermediate layer: its pooled features, and no head
    out = extract_outputs(lite, digits, layer=layer, part="test", image_size=32, progress=False)
    assert sorted(out) == ["features", "labels"]
    np.testing.assert_allclose(out["features"], np.asarray(layers[layer]), rtol=1e-5, atol=1e-6)
    assert len(extract_outputs(lite, digits, layer=layer, part="all", image_size=32, progress=False)["labels"]) == 30


def test_bad_arguments_are_refused(lite, digits):
    with pytest.raises(ValueError, match="max_per_class subsamples a dataset loaded by name"):
        extract_outputs(lite, digits, max_per_class=2, image_size=32)
    with pytest.raises(ValueError, match="part must be 'train', 'val', 'test' or 'all'; got 'dev'"):
        extract_outputs(lite, digits, part="dev", image_size=32)
    with pytest.raises(ValueError, match=r"EfficientNetLite has no layer 'block9'; its layers: \["):
        extract_outputs(lite, digits, layer="block9", image_size=32)
    with pytest.raises(ValueError, match="no preprocessing known for a CNN"):
        extract_outputs(CNN(1, 4, 1, 3, rngs=nnx.Rngs(0)), digits)
    with pytest.raises(ValueError, match="unknown dataset 'no-such-dataset'; available: "):
        extract_outputs(lite, "no-such-dataset", image_size=32)
