import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtransfer.finetune import compose, cutmix, mixup, random_flip, random_resized_crop, token_dropout

rng = np.random.default_rng(0)
IMAGES = jnp.asarray(rng.random((6, 12, 12, 3)), jnp.float32)
LABELS = jnp.array([0, 1, 2, 0, 1, 2])


def test_full_crop_is_a_plain_resize():
    """scale = ratio = 1 on a square image: the box is the whole image, so the crop is jax.image.resize."""
    x, _ = random_resized_crop(6, scale=(1.0, 1.0), ratio=(1.0, 1.0))((IMAGES, LABELS), jax.random.key(0))
    expected = jax.image.resize(IMAGES, (6, 6, 6, 3), "linear", antialias=True)
    # measured max |diff| 1e-7; bar 1e-5
    np.testing.assert_allclose(np.asarray(x), np.asarray(expected), atol=1e-5)


def test_crops_stay_within_the_image_values_and_differ_per_image():
    x, _ = random_resized_crop(8)((IMAGES, LABELS), jax.random.key(1))
    assert x.shape == (6, 8, 8, 3)
    assert float(x.min()) >= -1e-6 and float(x.max()) <= 1 + 1e-6
    same = jnp.broadcast_to(IMAGES[:1], IMAGES.shape)
    y, _ = random_resized_crop(8)((same, LABELS), jax.random.key(1))
    assert not np.allclose(np.asarray(y[0]), np.asarray(y[1]))  # each image its own box


def test_flip_is_exact_and_about_half_the_time():
    x, _ = random_flip()((jnp.tile(IMAGES[:1], (400, 1, 1, 1)), jnp.zeros(400)), jax.random.key(2))
    flipped = np.all(np.asarray(x) == np.asarray(IMAGES[0, :, ::-1])[None], axis=(1, 2, 3))
    kept = np.all(np.asarray(x) == np.asarray(IMAGES[0])[None], axis=(1, 2, 3))
    assert np.all(flipped | kept) and 150 < flipped.sum() < 250


def test_mixup_mixes_inputs_and_labels_with_one_weight():
    x, y = mixup(0.5, num_classes=3)((IMAGES, LABELS), jax.random.key(3))
    onehot = np.eye(3)[np.asarray(LABELS)]
    # x_i = l x_i + (1 - l) x_perm(i): find l from the labels of a row whose pair has another class
    np.testing.assert_allclose(np.asarray(y).sum(1), 1.0, atol=1e-6)
    lam = float(np.max(np.asarray(y) * onehot, axis=1).min())
    assert 0 <= lam <= 1
    assert x.shape == IMAGES.shape


def test_cutmix_and_token_dropout_and_compose():
    _, y = cutmix(num_classes=3)((IMAGES, LABELS), jax.random.key(4))
    np.testing.assert_allclose(np.asarray(y).sum(1), 1.0, atol=1e-6)
    tokens = jnp.array([[101, 5, 6, 7, 102, 0, 0]] * 50)
    kept, _ = token_dropout(0.0)((tokens, jnp.zeros(50)), jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(tokens))
    dropped, _ = token_dropout(0.5)((tokens, jnp.zeros(50)), jax.random.key(5))
    d = np.asarray(dropped)
    assert np.all(d[:, 0] == 101) and np.all(d[:, 5:] == 0) and 0.3 < np.mean(d[:, 1:5] == 0) < 0.7
    both = compose(random_flip(1.0), random_flip(1.0))((IMAGES, LABELS), jax.random.key(6))[0]
    np.testing.assert_array_equal(np.asarray(both), np.asarray(IMAGES))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: random_flip(1.5), "prob must be a number in"),
        (lambda: random_resized_crop(0), "size must be a positive integer"),
        (lambda: random_resized_crop(8, scale=(0.5, 0.1)), "scale"),
        (lambda: random_resized_crop(8, scale=(0.0, 1.0)), r"scale\[0\]"),
        (lambda: mixup(0.0, num_classes=3), "alpha"),
        (lambda: mixup(0.2, num_classes=1), "num_classes"),
        (lambda: cutmix(float("nan"), num_classes=3), "alpha"),
        (lambda: token_dropout(-0.1), "rate must be a number in"),
    ],
)
def test_bad_settings_raise_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()
