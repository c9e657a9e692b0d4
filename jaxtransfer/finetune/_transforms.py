"""Ready per-batch transforms for the trainer: ``transform(batch, key) -> batch`` with ``batch = (x, y)``.

They run inside the compiled training step, on the device, with a key of their own for every step (the trainer
derives it from its seed and the step number, so a resumed run draws the same keys). Compose them with
:func:`compose`. Image transforms take (n, H, W, C) images; mixup and cutmix turn class ids into probability rows
(the classification loss accepts both).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["compose", "cutmix", "mixup", "random_flip", "random_resized_crop", "token_dropout"]

Batch = tuple[jax.Array, jax.Array]
Transform = Callable[[Batch, jax.Array], Batch]


def _check_fraction(value, name: str, *, open_low: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (value > 0 if open_low else value >= 0)
    if not (ok and value <= 1):
        raise ValueError(f"{name} must be a number in {'(0' if open_low else '[0'}, 1]; got {value!r}.")


def _check_alpha(alpha) -> None:
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and 0 < alpha < float("inf")):
        raise ValueError(f"alpha (of the Beta(alpha, alpha) mixing weight) must be a finite number > 0; got {alpha!r}.")


def _check_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}.")


def compose(*transforms: Transform) -> Transform:
    """Applies ``transforms`` in order, each with its own key split from the step's key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> t = compose(random_flip(), mixup(0.2, num_classes=3))
        >>> x, y = t((jnp.ones((4, 8, 8, 3)), jnp.array([0, 1, 2, 0])), jax.random.key(0))
        >>> x.shape, y.shape
        ((4, 8, 8, 3), (4, 3))
    """

    def apply(batch: Batch, key: jax.Array) -> Batch:
        for t, k in zip(transforms, jax.random.split(key, len(transforms)), strict=True):
            batch = t(batch, k)
        return batch

    return apply


def random_flip(prob: float = 0.5) -> Transform:
    """Flips each image left-right with probability ``prob``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.arange(3.0).reshape(1, 1, 3, 1)
        >>> random_flip(prob=1.0)((x, jnp.zeros(1)), jax.random.key(0))[0].ravel().tolist()
        [2.0, 1.0, 0.0]
    """
    _check_fraction(prob, "prob")

    def apply(batch: Batch, key: jax.Array) -> Batch:
        x, y = batch
        flip = jax.random.bernoulli(key, prob, (x.shape[0],))
        return jnp.where(flip[:, None, None, None], x[:, :, ::-1], x), y

    return apply


def random_resized_crop(
    size: int, *, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> Transform:
    """Inception-style crop: a random box of ``scale`` of the area and aspect ratio in ``ratio`` (log-uniform),
    resized (bilinear) to ``size`` x ``size``. Boxes that would not fit are clipped to the image.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, _ = random_resized_crop(16)((jnp.ones((2, 32, 32, 3)), jnp.zeros(2)), jax.random.key(0))
        >>> x.shape, round(float(x.min()), 5), round(float(x.max()), 5)  # a constant image stays constant
        ((2, 16, 16, 3), 1.0, 1.0)
    """
    if isinstance(size, bool) or not (isinstance(size, int) and size > 0):
        raise ValueError(f"size must be a positive integer (pixels); got {size!r}.")
    lo, hi = scale
    _check_fraction(lo, "scale[0]", open_low=True)
    _check_fraction(hi, "scale[1]", open_low=True)
    if not (lo <= hi and 0 < ratio[0] <= ratio[1] < float("inf")):
        raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]; got {scale}, {ratio}.")

    def crop(image, key):
        h, w = image.shape[0], image.shape[1]
        k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
        area = jax.random.uniform(k_area, minval=scale[0], maxval=scale[1]) * h * w
        log_r = jax.random.uniform(k_ratio, minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
        r = jnp.exp(log_r)
        ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
        cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
        y0 = jax.random.uniform(k_y) * (h - ch)
        x0 = jax.random.uniform(k_x) * (w - cw)
        sy, sx = size / ch, size / cw
        return jax.image.scale_and_translate(
            image, (size, size, image.shape[2]), (0, 1), jnp.stack([sy, sx]), jnp.stack([-y0 * sy, -x0 * sx]),
            method="linear", antialias=True,
        )  # fmt: skip

    def apply(batch: Batch, key: jax.Array) -> Batch:
        x, y = batch
        out = jax.vmap(crop)(x, jax.random.split(key, x.shape[0]))
        return out.astype(x.dtype), y

    return apply


def _soft(y: jax.Array, num_classes: int) -> jax.Array:
    return y.astype(jnp.float32) if y.ndim == 2 else jax.nn.one_hot(y, num_classes, dtype=jnp.float32)


def mixup(alpha: float = 0.2, *, num_classes: int) -> Transform:
    """Mixup (Zhang et al., ICLR 2018): x <- l x + (1 - l) x[perm], y <- l y + (1 - l) y[perm], l ~ Beta(alpha, alpha)
    once per batch, perm a random permutation of the batch.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> _, y = mixup(0.4, num_classes=2)((jnp.ones((4, 3)), jnp.array([0, 1, 0, 1])), jax.random.key(0))
        >>> bool(jnp.allclose(y.sum(1), 1.0))
        True
    """
    _check_alpha(alpha)
    _check_classes(num_classes)

    def apply(batch: Batch, key: jax.Array) -> Batch:
        x, y = batch
        k_lam, k_perm = jax.random.split(key)
        lam = jax.random.beta(k_lam, alpha, alpha)
        perm = jax.random.permutation(k_perm, x.shape[0])
        soft = _soft(y, num_classes)
        mixed = (lam * x.astype(jnp.float32) + (1 - lam) * x[perm].astype(jnp.float32)).astype(x.dtype)
        return mixed, lam * soft + (1 - lam) * soft[perm]

    return apply


def cutmix(alpha: float = 1.0, *, num_classes: int) -> Transform:
    """CutMix (Yun et al., ICCV 2019): a box of area fraction 1 - l (l ~ Beta(alpha, alpha)) is pasted from
    x[perm]; the labels mix by the box's actual area.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.concatenate([jnp.zeros((1, 8, 8, 1)), jnp.ones((1, 8, 8, 1))])
        >>> xm, y = cutmix(num_classes=2)((x, jnp.array([0, 1])), jax.random.key(3))
        >>> bool(jnp.allclose(y[:, 1], xm.mean(axis=(1, 2, 3))))  # label weight = pasted area
        True
    """
    _check_alpha(alpha)
    _check_classes(num_classes)

    def apply(batch: Batch, key: jax.Array) -> Batch:
        x, y = batch
        n, h, w = x.shape[:3]
        k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
        lam = jax.random.beta(k_lam, alpha, alpha)
        perm = jax.random.permutation(k_perm, n)
        cut = jnp.sqrt(1.0 - lam)
        ch, cw = jnp.round(cut * h), jnp.round(cut * w)
        cy = jax.random.uniform(k_y) * h
        cx = jax.random.uniform(k_x) * w
        y0, y1 = jnp.clip(cy - ch / 2, 0, h), jnp.clip(cy + ch / 2, 0, h)
        x0, x1 = jnp.clip(cx - cw / 2, 0, w), jnp.clip(cx + cw / 2, 0, w)
        rows = jnp.arange(h)[:, None] + 0.5
        cols = jnp.arange(w)[None, :] + 0.5
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (H, W)
        pasted = jnp.mean(inside.astype(jnp.float32))
        mixed = jnp.where(inside[None, :, :, None], x[perm], x)
        soft = _soft(y, num_classes)
        return mixed, (1 - pasted) * soft + pasted * soft[perm]

    return apply


def token_dropout(rate: float = 0.1, *, pad_id: int = 0, keep_first: bool = True) -> Transform:
    """Replaces each non-padding token by ``pad_id`` with probability ``rate`` (the model then ignores it, as it
    ignores padding); the first token ([CLS]) is kept when ``keep_first``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> tokens = jnp.array([[101, 7, 8, 9, 102, 0]])
        >>> token_dropout(1.0)((tokens, jnp.zeros(1)), jax.random.key(0))[0].tolist()
        [[101, 0, 0, 0, 0, 0]]
    """
    _check_fraction(rate, "rate")

    def apply(batch: Batch, key: jax.Array) -> Batch:
        tokens, y = batch
        drop = jax.random.bernoulli(key, rate, tokens.shape) & (tokens != pad_id)
        if keep_first:
            drop = drop.at[:, 0].set(False)
        return jnp.where(drop, jnp.asarray(pad_id, tokens.dtype), tokens), y

    return apply
