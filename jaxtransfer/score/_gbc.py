"""GBC: Gaussian Bhattacharyya coefficient (Pándy, Agostinelli, Uijlings, Ferrari and Mensink, CVPR 2022)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtransfer import _checks
from jaxtransfer.score._linalg import class_means, pca
from jaxtransfer.score._registry import register_score

__all__ = ["gbc"]


@functools.partial(jax.jit, static_argnames=("num_classes", "pca_dim", "spherical"))
def _gbc(f, labels, *, num_classes, pca_dim, spherical):
    if pca_dim is not None and f.shape[1] > pca_dim:
        f = pca(f, pca_dim)
    mu = class_means(f, labels, num_classes)  # (C, d)
    var = class_means(jnp.square(f - mu[labels]), labels, num_classes)  # centred: no cancellation
    var = jnp.maximum(var, 1e-4)  # constant features: the published floor
    if spherical:
        var = jnp.broadcast_to(jnp.mean(var, axis=1, keepdims=True), var.shape)
    avg = 0.5 * (var[:, None, :] + var[None, :, :])  # (C, C, d)
    dist = jnp.sum(jnp.square(mu[:, None, :] - mu[None, :, :]) / avg, axis=-1) / 8
    logv = jnp.sum(jnp.log(var), axis=1)
    dist = dist + 0.5 * (jnp.sum(jnp.log(avg), axis=-1) - 0.5 * (logv[:, None] + logv[None, :]))
    coeff = jnp.exp(-dist) * (1 - jnp.eye(num_classes, dtype=f.dtype))
    return -jnp.sum(coeff)


@register_score(reference="Pandy et al., CVPR 2022", units="minus the summed class-pair Bhattacharyya coefficients")
def gbc(
    features, labels, *, pca_dim: int | None = 64, gaussian: str = "diagonal", num_classes: int | None = None
) -> jax.Array:
    """GBC = -sum_{i != j} BC(c_i, c_j): minus the overlap of every ordered pair of per-class Gaussians.

    Each class c is modelled by N(mu_c, diag(s_c)) (per-dimension mean and biased variance, variances floored
    at 1e-4); with s = (s_i + s_j) / 2 the Bhattacharyya distance and coefficient are

        D_B = 1/8 sum (mu_i - mu_j)^2 / s + 1/2 (sum log s - 1/2 sum log s_i - 1/2 sum log s_j),
        BC = exp(-D_B).

    Args:
        features: (n, D); labels: (n,) class ids in [0, C).
        pca_dim: project the features on their top ``pca_dim`` principal axes first (None: use them as they
            are); 64 by default.
        gaussian: ``"diagonal"`` (default) or ``"spherical"`` (one variance per class, the mean of the diagonal).
        num_classes: C, if not max + 1.

    Returns:
        Scalar in [-C (C - 1), 0], higher (closer to 0: better separated classes) = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.gbc(features, labels)), 3)
        -1.546
    """
    if gaussian not in ("diagonal", "spherical"):
        raise ValueError(f"gaussian must be 'diagonal' or 'spherical'; got {gaussian!r}.")
    if pca_dim is not None and (not isinstance(pca_dim, int) or pca_dim < 1):
        raise ValueError(f"pca_dim must be a positive integer or None; got {pca_dim!r}.")
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, centre=True)
    return _checks.finite_result(_gbc(f, lab, num_classes=c, pca_dim=pca_dim, spherical=gaussian == "spherical"), "gbc")
