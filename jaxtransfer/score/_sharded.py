"""LogME across devices: the samples sharded over a mesh axis.

Sharded: each device forms the centred moments of its own rows (as :func:`jaxtransfer.logme_stats`), ``lax.psum``
inside ``jax.shard_map`` adds them up (one all-reduce for the means, one of D^2 + D K + 2 K numbers for the centred
moments), and the score follows: the same score as on one device. The inputs are placed on the mesh with
``jax.device_put(x, NamedSharding(mesh, P(axis)))`` before the call (we pick explicit placement over
``AxisType.Auto`` meshes, so the call works with whatever mesh the user already has). Rows are padded with zeros to
a multiple of the axis size; a mask keeps the padding out of the counts.

On a multi-host TPU VM or GPU cluster, call ``jax.distributed.initialize()`` on every host first, build the mesh
over ``jax.devices()`` (all hosts) and pass each host's rows as a global array, e.g. with
``jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local_rows)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtransfer import _checks
from jaxtransfer.score._evidence import check_result
from jaxtransfer.score._logme_optimized import moments_evidence
from jaxtransfer.score._targets import Dense, OneHot

__all__ = ["logme_sharded"]

_HI = jax.lax.Precision.HIGHEST


def _masked_moments(features, y, mask, num_classes, axis):
    """The centred moments of the rows with mask == 1 over all shards (padded rows are zero features and targets).

    Two all-reduces: the sums (for the means), then the centred second moments.
    """
    t = Dense(y) if num_classes is None else OneHot(y, num_classes)
    dtype = features.dtype
    n = jax.lax.psum(jnp.sum(mask), axis)
    mu = jax.lax.psum(jnp.sum(features, axis=0), axis) / n
    c = (features - mu[None, :]) * mask[:, None]
    if num_classes is None:
        sums = jax.lax.psum(t.sums(dtype), axis)
        yy = jax.lax.psum(t.sq_norms(dtype), axis)
        yc = (y - (sums / n)[None, :]) * mask[:, None]
        m2 = jax.lax.psum(jnp.sum(jnp.square(yc), axis=0), axis)
    else:
        sums = yy = jax.lax.psum(jax.ops.segment_sum(mask, y, num_segments=num_classes), axis)
        m2 = sums - jnp.square(sums) / n
    gram = jax.lax.psum(jnp.matmul(c.T, c, precision=_HI), axis)
    cross = jax.lax.psum(t.project(c), axis)
    return gram, mu, cross, sums, yy, m2, n


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "num_classes", "max_iter"))
def _sharded(features, y, mask, tol, *, mesh, axis, num_classes, max_iter):
    def local(f, y, m):
        return _masked_moments(f, y, m, num_classes, axis)

    spec = P(axis)
    moments = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=P())(features, y, mask)
    return moments_evidence(*moments, tol=tol, max_iter=max_iter)


def logme_sharded(
    features,
    labels,
    *,
    regression: bool = False,
    num_classes: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    axis: str | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> jax.Array:
    """LogME with the samples sharded over a mesh axis; the same score as :func:`jaxtransfer.logme` (n > D).

    Args:
        features: (n, D) features (a host array, or a global jax array already sharded over ``axis``).
        labels: (n,) class ids, or with ``regression=True`` (n,) / (n, K) targets.
        regression, num_classes, tol, max_iter: as :func:`jaxtransfer.logme`.
        mesh: the device mesh; default a 1-D mesh ``("data",)`` over all devices.
        axis: the mesh axis the samples are split over; default the mesh's first axis.

    Returns:
        The LogME score (replicated).


    Example:
        >>> import numpy as np
        >>> import jaxtransfer as jt
        >>> rng = np.random.default_rng(0)
        >>> labels = np.arange(60) % 3
        >>> features = rng.normal(size=(60, 4)) + 2 * np.eye(3, 4)[labels]
        >>> round(float(jt.logme_sharded(features, labels)), 4) == round(float(jt.logme(features, labels)), 4)
        True

    Raises:
        ValueError: as :func:`jaxtransfer.logme`, and if n <= D (use :func:`jaxtransfer.logme` there: the dual
            form needs all rows together) or ``axis`` is not an axis of ``mesh``.
    """
    f, y, c = _checks.check_logme_inputs(features, labels, regression, num_classes, tol, max_iter, "optimized")
    f = _checks.power_of_two_rescale(f)[0]  # exact; LogME is invariant to the feature scale
    n, d = f.shape
    if n <= d:
        raise ValueError(f"logme_sharded needs more samples than features (n={n}, D={d}); use logme for n <= D.")
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    axis = mesh.axis_names[0] if axis is None else axis
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {mesh.axis_names}.")
    shards = mesh.shape[axis]
    pad = (-n) % shards
    mask = jnp.ones((n,), f.dtype)
    if pad:
        f = jnp.pad(f, ((0, pad), (0, 0)))
        y = jnp.pad(y, ((0, pad),) + ((0, 0),) * (y.ndim - 1))
        mask = jnp.pad(mask, (0, pad))
    put = functools.partial(jax.device_put, device=NamedSharding(mesh, P(axis)))
    result = _sharded(
        put(f), put(y), put(mask), jnp.asarray(tol, f.dtype), mesh=mesh, axis=axis, num_classes=c, max_iter=max_iter
    )
    check_result(result, max_iter, "optimized")
    return jnp.mean(result.evidence)
