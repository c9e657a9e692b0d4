"""NLEEP: LEEP with a Gaussian-mixture pseudo-source (Li et al., "Ranking neural checkpoints", CVPR 2021)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import _checks
from jaxtransfer.score._leep import leep_core
from jaxtransfer.score._linalg import components_for_variance, pca
from jaxtransfer.score._registry import register_score

__all__ = ["gaussian_mixture_posteriors", "nleep"]

_HI = jax.lax.Precision.HIGHEST
_REG = 1e-6  # added to every covariance diagonal, as scikit-learn's GaussianMixture does
_CHUNK = 8  # mixture components per step of the component loops


def _per_component(fn, *xs):
    """``fn`` mapped over the leading (component) axis of ``xs``, ``_CHUNK`` components at a time: the (n, d)
    temporaries of a step exist for ``_CHUNK`` components, never for all M (at n = 5000, d = 64, M = 250 the
    vectorised (M, n, d) differences were 320 MB each)."""
    return jax.lax.map(lambda args: fn(*args), xs, batch_size=_CHUNK)


def _squared_distances(z, centres):
    """(n, M) ||z_i - c_m||^2, component by component."""
    return _per_component(lambda c: jnp.sum(jnp.square(z - c[None, :]), axis=1), centres).T


def _m_step(z, resp, active):
    """Weights (M,), means (M, d), covariances (M, d, d) from responsibilities (n, M).

    The diagonal gets 1e-6 (scikit-learn's reg_covar) plus 100 eps times the mean variance of z: in float64 the
    second term is ~1e-14 of the scale and changes nothing; in float32 it keeps the Cholesky factorisation of a
    component that holds fewer points than dimensions from failing on rounding (1e-6 alone is below float32's
    resolution of features of scale 10, and the mixture then returned NaN).
    """
    nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(z.dtype).eps
    means = jnp.matmul(resp.T, z, precision=_HI) / nk[:, None]

    def scatter(r, mu):  # sum_i r_i (z_i - mu)(z_i - mu)^T, (d, d)
        diff = z - mu[None, :]
        return jnp.matmul((diff * r[:, None]).T, diff, precision=_HI)

    cov = _per_component(scatter, resp.T, means) / nk[:, None, None]
    scale = jnp.sum(jnp.var(z, axis=0)) / jnp.sum(active, dtype=z.dtype)  # the mean over the active axes
    reg = _REG + 100 * jnp.finfo(z.dtype).eps * scale
    cov = cov + reg * jnp.eye(z.shape[1], dtype=z.dtype)[None]
    return nk / z.shape[0], means, cov


def _log_joint(z, weights, means, cov, active):
    """(n, M) log w_m + log N(z_i | mu_m, Sigma_m) over the active axes of z (the others are zero; see nleep)."""
    chol = jnp.linalg.cholesky(cov)  # (M, d, d)

    def mahalanobis(factor, mu):  # (n,) ||L^-1 (z_i - mu)||^2
        sol = jax.scipy.linalg.solve_triangular(factor, (z - mu[None, :]).T, lower=True)  # (d, n)
        return jnp.sum(jnp.square(sol), axis=0)

    maha = _per_component(mahalanobis, chol, means)  # (M, n)
    logdet = 2 * jnp.sum(jnp.where(active[None], jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), 0), axis=1)
    d = jnp.sum(active, dtype=z.dtype)
    return (jnp.log(weights)[:, None] - 0.5 * (maha + logdet[:, None] + d * math.log(2 * math.pi))).T


def _farthest_points(z, num_components):
    """Deterministic, permutation-invariant start: the sample nearest the mean, then repeatedly the sample
    farthest from the centres chosen so far."""
    first = jnp.argmin(jnp.sum(jnp.square(z - jnp.mean(z, axis=0, keepdims=True)), axis=1))
    centres = jnp.zeros((num_components, z.shape[1]), z.dtype).at[0].set(z[first])
    nearest = jnp.sum(jnp.square(z - z[first][None]), axis=1)

    def pick(m, state):
        centres, nearest = state
        new = z[jnp.argmax(nearest)]
        return centres.at[m].set(new), jnp.minimum(nearest, jnp.sum(jnp.square(z - new[None]), axis=1))

    return jax.lax.fori_loop(1, num_components, pick, (centres, nearest))[0]


@functools.partial(jax.jit, static_argnames=("num_components", "max_iter"))
def _fit_posteriors(z, active, tol, *, num_components, max_iter):
    # k-means initialisation (as scikit-learn's default), started from farthest points instead of random
    # samples so that the score does not depend on a seed or on the order of the samples.
    centres = _farthest_points(z, num_components)

    def lloyd(centres, _):
        dist = _squared_distances(z, centres)
        hard = jax.nn.one_hot(jnp.argmin(dist, axis=1), num_components, dtype=z.dtype)
        count = jnp.sum(hard, axis=0)
        moved = jnp.matmul(hard.T, z, precision=_HI) / jnp.maximum(count, 1)[:, None]
        return jnp.where(count[:, None] > 0, moved, centres), None

    centres, _ = jax.lax.scan(lloyd, centres, None, length=10)
    dist = _squared_distances(z, centres)
    resp = jax.nn.one_hot(jnp.argmin(dist, axis=1), num_components, dtype=z.dtype)
    return em_posteriors(z, resp, tol=tol, max_iter=max_iter, active=active)


def em_posteriors(z, resp, *, tol, max_iter: int, active=None):
    """EM for a full-covariance Gaussian mixture from initial responsibilities (n, M); returns p(m | z_i).

    Stops when the mean log-likelihood per sample changes by less than ``tol`` (1e-3, as scikit-learn). ``active``
    (d,) bool: the axes of z the mixture models (default all); the others must be zero in every row.
    """
    active = jnp.ones(z.shape[1], bool) if active is None else active

    def step(state):
        resp, ll_prev, it, _ = state
        log_joint = _log_joint(z, *_m_step(z, resp, active), active)
        norm = jax.scipy.special.logsumexp(log_joint, axis=1, keepdims=True)
        ll = jnp.mean(norm)
        return jnp.exp(log_joint - norm), ll, it + 1, jnp.abs(ll - ll_prev) < tol

    def cond(state):
        return ~state[3] & (state[2] < max_iter)

    init = (resp, jnp.asarray(-jnp.inf, z.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    return jax.lax.while_loop(cond, step, init)[0]


def gaussian_mixture_posteriors(features, num_components: int, *, tol: float = 1e-3, max_iter: int = 100) -> jax.Array:
    """Fits a full-covariance Gaussian mixture to (n, d) features by EM; returns the posteriors (n, M).

    Start: 10 k-means steps from farthest-point centres (deterministic, independent of the sample order).

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> posteriors = jt.score.gaussian_mixture_posteriors(features, 3)
        >>> posteriors.shape, bool(np.allclose(posteriors.sum(1), 1))
        ((60, 3), True)
    """
    z = _checks.check_features(features)
    if not (isinstance(num_components, int) and 1 <= num_components <= z.shape[0]):
        raise ValueError(f"num_components must be an integer in [1, n={z.shape[0]}]; got {num_components!r}.")
    active = jnp.ones(z.shape[1], bool)
    return _fit_posteriors(z, active, jnp.asarray(tol, z.dtype), num_components=num_components, max_iter=max_iter)


@register_score(reference="Li et al., CVPR 2021", units="mean log-likelihood, nats")
def nleep(
    features,
    labels,
    *,
    variance: float = 0.8,
    components_per_class: int = 5,
    num_classes: int | None = None,
    tol: float = 1e-3,
) -> jax.Array:
    """NLEEP: LEEP of the target labels under a Gaussian mixture fitted to the features.

    The features are projected on the fewest principal axes that keep ``variance`` of their variance (80 %, as
    published), a full-covariance Gaussian mixture with ``components_per_class * C`` components (5 C, as
    published) is fitted by EM (k-means start from farthest points: deterministic and independent of the order
    of the samples, where the published code uses a random start), and its posteriors p(m | x) play the source model's
    softmax outputs in :func:`jaxtransfer.leep`.

    Precision: EM stops when the mean log-likelihood changes by less than ``tol`` (1e-3, scikit-learn's default and
    the published setting). That stopping test is a step function of the data: float32 and float64 runs from the
    same k-means start can stop one EM iteration apart, and where EM converges slowly one iteration moves the score
    by up to ~1 % (measured: 1.06 % on a 150 x 8 problem). A smaller ``tol`` narrows the gap, but where float32
    stops still depends on its last bits (at ``tol=1e-5`` that problem measured 1.6e-5 with one release of the
    libraries and 1.7e-3 with the next); with ``tol=1e-7`` EM runs on until its steps are below float32's
    resolution and float32 agrees with float64 to ~4e-5 (measured 3.7e-5 there).

    Args:
        features: (n, D); labels: (n,) class ids in [0, C); num_classes: C.
        tol: EM's stopping tolerance on the mean log-likelihood per sample.

    Returns:
        Scalar <= 0, higher = better transfer.

    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.nleep(features, labels)), 3)
        -0.269
    """
    if isinstance(variance, bool) or not (isinstance(variance, int | float | np.number) and 0 < variance <= 1):
        raise ValueError(f"variance must be in (0, 1]; got {variance!r}.")
    _checks.check_positive_int(components_per_class, "components_per_class")
    _checks.check_iteration(tol, 100)
    f, lab, c = _checks.check_features_and_labels(features, labels, num_classes, centre=True)
    m = components_per_class * c
    if m > f.shape[0]:
        raise ValueError(f"the mixture needs {m} components but there are only {f.shape[0]} samples.")
    if isinstance(f, jax.core.Tracer):
        # Traced (jit, vmap): the number of axes k that keep ``variance`` is not known while tracing, so the mixture
        # is fitted on all min(n, D) axes with those past k set to zero and left out of every density: the same
        # posteriors as the eager path (which fits k axes), at the cost of larger covariances.
        width = min(f.shape)
        k = components_for_variance(f, variance, concrete=False)
        active = jnp.arange(width, dtype=k.dtype) < k
        z = pca(f, width) * active.astype(f.dtype)[None, :]
        probs = _fit_posteriors(z, active, jnp.asarray(tol, z.dtype), num_components=m, max_iter=100)
        return _checks.finite_result(leep_core(probs, lab, num_classes=c), "nleep")
    z = pca(f, components_for_variance(f, variance))
    if not bool(jnp.all(jnp.isfinite(z))):
        raise FloatingPointError(
            "nleep: the principal components of the features overflow at their scale (max |features| = "
            f"{float(jnp.max(jnp.abs(f))):.3g}); rescale the features or use float64 (jax_enable_x64)."
        )
    probs = gaussian_mixture_posteriors(z, m, tol=tol)
    if not bool(jnp.all(jnp.isfinite(probs))):
        raise FloatingPointError(
            f"NLEEP's Gaussian mixture ({m} components, {z.shape[1]} principal axes, {z.shape[0]} samples) became "
            "singular; pass float64 features or fewer components_per_class."
        )
    return leep_core(probs, lab, num_classes=c)
