import numpy as np
import pytest
from flax import nnx

from jaxtransfer.data import caffe_preprocess, efficientnet_preprocess, imagenet_preprocess
from jaxtransfer.models import (
    CNN,
    EfficientNetLite,
    LayerModel,
    LiteConfig,
    ResNet50Half,
    ViTSmall,
    preprocess_for,
    tokenize,
)

RAW = np.random.default_rng(0).uniform(size=(3, 20, 20)).astype(np.float32)  # grey images in [0, 1]


@pytest.mark.parametrize(
    ("name", "reference", "size"),
    [
        ("efficientnet-lite0", efficientnet_preprocess, 224),
        ("efficientnet-lite2", efficientnet_preprocess, 260),
        ("vit-s14-saliency", imagenet_preprocess, 224),
        ("resnet50-1by2-nsfw", caffe_preprocess, 224),
    ],
)
def test_each_backbone_gets_its_published_normalisation_and_resolution(name, reference, size):
    out = preprocess_for(name)(RAW)
    np.testing.assert_array_equal(out, reference(RAW[..., None], size))
    assert out.shape == (3, size, size, 3)
    np.testing.assert_array_equal(preprocess_for(name, image_size=28)(RAW[..., None]), reference(RAW[..., None], 28))


def test_models_and_layer_cuts_are_recognised_and_texts_are_tokenised():
    lite = nnx.eval_shape(lambda: EfficientNetLite(LiteConfig(0.25, 0.3, 32), rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(preprocess_for(lite, image_size=32)(RAW), efficientnet_preprocess(RAW[..., None], 32))
    assert preprocess_for(lite)(RAW).shape == (3, 32, 32, 3)  # the model's own resolution (its config's)
    cut = LayerModel(lite, "stage2")
    np.testing.assert_array_equal(preprocess_for(cut, image_size=32)(RAW), efficientnet_preprocess(RAW[..., None], 32))
    vit = nnx.eval_shape(lambda: ViTSmall(rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(preprocess_for(vit, image_size=28)(RAW), imagenet_preprocess(RAW[..., None], 28))
    texts = ["transfer learning", "in jax"]
    np.testing.assert_array_equal(preprocess_for("minilm-l6", max_length=8)(texts), tokenize(texts, max_length=8))


def test_bad_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"divide uint8 images by 255"):
        preprocess_for("efficientnet-lite0")((RAW * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"divide uint8 images by 255"):
        preprocess_for("efficientnet-lite0")(RAW * 255)
    with pytest.raises(ValueError, match=r"images must be \(n, H, W\)"):
        preprocess_for("efficientnet-lite0")(RAW[..., None].repeat(2, -1))
    with pytest.raises(ValueError, match="no preprocessing known for a CNN"):
        preprocess_for(CNN(1, 4, 1, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no preprocessing known for 'resnet-9000'"):
        preprocess_for("resnet-9000")
    with pytest.raises(TypeError, match="a list of texts, not one string"):
        preprocess_for("minilm-l6")("one text")
    with pytest.raises(ValueError, match="image_size applies to image backbones"):
        preprocess_for("minilm-l6", image_size=32)


def test_a_backbone_given_raw_grey_images_points_to_preprocess_for():
    lite = EfficientNetLite(LiteConfig(0.25, 0.3, 32), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"got shape \(3, 20, 20, 1\) \(raw or grey images: .*preprocess_for"):
        lite.features(RAW[..., None])
    assert lite.features(preprocess_for(lite, image_size=32)(RAW)).shape == (3, 1280)


@pytest.mark.parametrize("backbone", [ResNet50Half, ViTSmall])
def test_every_image_backbone_points_to_preprocess_for(backbone):
    model = nnx.eval_shape(lambda: backbone(rngs=nnx.Rngs(0)))  # shapes only: the check runs before any compute
    with pytest.raises(ValueError, match=r"got shape \(3, 28, 28, 1\) \(raw or grey images: .*preprocess_for"):
        model.features(np.zeros((3, 28, 28, 1), np.float32))
