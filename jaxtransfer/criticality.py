"""Module criticality (Chatterji, Neyshabur and Sedghi, ICLR 2020), for any pytree of parameters.

For a module m (a subset of the leaves), with theta_alpha = theta_final except on m, where
theta_alpha = (1 - alpha) theta_init + alpha theta_final:

    criticality(m) = min over (alpha, sigma) of alpha^2 ||theta_final - theta_init||_m^2 / sigma^2
    subject to E_{u ~ N(0, sigma^2 I on m)} loss(theta_alpha + u) <= (1 + eps) loss(theta_final).

A module that can be moved all the way back to its initial value (alpha = 0) without raising the loss has
criticality 0; a critical module needs alpha close to 1 and only tolerates small noise. The reference grid is
11 x 11 (alpha in [0, 1], sigma log-spaced in [1e-16, 1]) with 10 noise samples and eps = 0.01; the whole grid is
evaluated with ``vmap`` (in chunks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer._checks import check_positive_int
from jaxtransfer._plotting import pyplot
from jaxtransfer._pytree import as_arrays, check_same, is_float

__all__ = ["Criticality", "dotted_path", "module_criticality"]


def dotted_path(path) -> str:
    """``blocks.0.attn.query.kernel`` for a JAX key path (dict keys, sequence indices, attributes).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxtransfer.criticality import dotted_path
        >>> [dotted_path(p) for p, _ in jax.tree_util.tree_leaves_with_path({'blocks': [{'w': jnp.ones(1)}]})]
        ['blocks.0.w']
    """
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


@dataclasses.dataclass(frozen=True)
class Criticality:
    """Per-module criticality, with the loss of the final model and the settings used.

    Example:
        >>> c = Criticality(("blocks.0", "head"), (0.0, 1.5), final_loss=0.1, eps=0.01)
        >>> c.to_dict()
        {'blocks.0': 0.0, 'head': 1.5}
    """

    modules: tuple[str, ...]
    values: tuple[float, ...]
    final_loss: float
    eps: float

    def to_dict(self) -> dict:
        return dict(zip(self.modules, self.values, strict=True))

    def __str__(self) -> str:
        width = max(6, *(len(m) for m in self.modules))
        return "\n".join(
            [f"{'module':<{width}}  criticality"] + [f"{m:<{width}}  {v:.4g}" for m, v in self.to_dict().items()]
        )

    def plot(self, ax=None):
        plt = pyplot()

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        values = np.asarray(self.values, np.float64)
        bars = ax.bar(list(self.modules), values)
        positive = values[values > 0]
        if positive.size:  # criticality spans decades and is 0 for modules that can be reset: a symmetric log axis
            ax.set_yscale("symlog", linthresh=float(positive.min()))
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("module criticality (symlog)" if positive.size else "module criticality")
        ax.set_title(f"eps = {self.eps:g}, final loss {self.final_loss:.3g}", fontsize=9)
        ax.tick_params(axis="x", rotation=45)
        return ax


def module_criticality(
    loss_fn: Callable[[object, object], jax.Array],
    theta_init,
    theta_final,
    data,
    modules: Mapping[str, str | Callable[[str], bool]],
    *,
    eps: float = 0.01,
    alphas=None,
    sigmas=None,
    num_samples: int = 10,
    seed: int = 0,
    chunk: int = 16,
) -> Criticality:
    """Criticality of each module (a set of leaves chosen by a dotted-path prefix or a predicate on the path).

    Args:
        loss_fn: ``(params, data) -> scalar`` (jit-compatible).
        theta_init, theta_final: parameters before and after training (identical structure).
        modules: name -> dotted-path prefix (e.g. ``"blocks.0"``) or predicate ``path -> bool``.
        eps, alphas, sigmas, num_samples: the threshold and the grid (defaults: the reference 11 x 11, 10 samples).


    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtransfer.criticality import module_criticality
        >>> def loss(p, data):  # only 'used' matters
        ...     return 1.0 + jnp.sum(jnp.square(p['used'] - 1.0))
        >>> init = {'used': jnp.zeros(2), 'unused': jnp.zeros(2)}
        >>> final = {'used': jnp.ones(2), 'unused': jnp.ones(2)}
        >>> crit = module_criticality(loss, init, final, None, {'used': 'used', 'unused': 'unused'})
        >>> crit.to_dict()['unused'], crit.to_dict()['used'] > 0
        (0.0, True)

    Raises:
        ValueError: mismatched pytrees, a module that selects no leaf, eps < 0, a final loss that is not > 0,
            empty or non-finite grids, sigmas <= 0, num_samples < 1.
        FloatingPointError: the final loss is not finite, or the perturbed loss is NaN somewhere on the grid.

    A module with no feasible grid point (the loss rises above (1 + eps) x the final loss everywhere) gets
    criticality ``inf``.
    """
    theta_init, theta_final = as_arrays(theta_init), as_arrays(theta_final)
    check_same(theta_init, theta_final, names=("theta_init", "theta_final"))
    if not (isinstance(eps, int | float | np.number) and np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}.")
    check_positive_int(num_samples, "num_samples")
    check_positive_int(chunk, "chunk")
    if not isinstance(modules, Mapping) or not modules:
        raise ValueError(f"modules must be a non-empty mapping name -> path prefix or predicate; got {modules!r}.")
    alphas = np.linspace(0.0, 1.0, 11) if alphas is None else np.asarray(alphas, np.float64)
    sigmas = np.logspace(-16, 0, 11) if sigmas is None else np.asarray(sigmas, np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or not np.isfinite(alphas).all():
        raise ValueError(f"alphas must be a non-empty 1-D array of finite values; got {alphas!r}.")
    if sigmas.ndim != 1 or sigmas.size == 0 or not (np.isfinite(sigmas).all() and (sigmas > 0).all()):
        raise ValueError(
            f"sigmas must be a non-empty 1-D array of finite values > 0 (the criticality divides by sigma^2); got "
            f"{sigmas!r}."
        )
    paths = [dotted_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(theta_final)]
    final_loss = float(loss_fn(theta_final, data))
    if not np.isfinite(final_loss):
        raise FloatingPointError(f"the final loss loss_fn(theta_final, data) is {final_loss}.")
    if not final_loss > 0:
        raise ValueError(
            f"the final loss is {final_loss}: the threshold (1 + eps) x loss needs a positive loss (evaluate on data "
            "the model does not fit exactly, e.g. a held-out split)."
        )
    grid = jnp.asarray(np.stack(np.meshgrid(alphas, sigmas, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
    keys = jax.random.split(jax.random.key(seed), num_samples)
    treedef = jax.tree.structure(theta_final)
    values = []
    for name, sel in modules.items():
        select = (lambda p, s=sel: p == s or p.startswith(s + ".")) if isinstance(sel, str) else sel
        mask = [select(p) and is_float(x) for p, x in zip(paths, jax.tree.leaves(theta_final), strict=True)]
        if not any(mask):
            raise ValueError(f"module {name!r} selects no floating-point leaf; leaf paths look like {paths[:4]}.")
        mask_tree = jax.tree.unflatten(treedef, mask)
        dist2 = sum(
            float(jnp.sum(jnp.square(jnp.asarray(f, jnp.float32) - jnp.asarray(i, jnp.float32))))
            for f, i, m in zip(jax.tree.leaves(theta_final), jax.tree.leaves(theta_init), mask, strict=True)
            if m
        )

        def perturbed_loss(point, key, mask_tree=mask_tree):
            alpha, sigma = point[0], point[1]
            leaves_f, leaves_i, leaves_m = (
                jax.tree.leaves(theta_final),
                jax.tree.leaves(theta_init),
                jax.tree.leaves(mask_tree),
            )
            subkeys = jax.random.split(key, len(leaves_f))
            out = []
            for f, i, m, k in zip(leaves_f, leaves_i, leaves_m, subkeys, strict=True):
                if m:
                    moved = (1 - alpha) * i + alpha * f + sigma * jax.random.normal(k, f.shape, jnp.float32)
                    out.append(moved.astype(f.dtype))
                else:
                    out.append(f)
            return loss_fn(jax.tree.unflatten(treedef, out), data)

        def expected_loss(point, perturbed_loss=perturbed_loss):
            return jnp.mean(jax.vmap(lambda k: perturbed_loss(point, k))(keys))

        mean_loss = jax.jit(lambda g, f=expected_loss: jax.lax.map(f, g, batch_size=chunk))(grid)
        mean_loss = np.asarray(mean_loss)
        if np.isnan(mean_loss).any():
            bad = grid[int(np.flatnonzero(np.isnan(mean_loss))[0])]
            raise FloatingPointError(
                f"module {name!r}: the perturbed loss is NaN at alpha={float(bad[0]):.3g}, sigma={float(bad[1]):.3g} "
                "(lower the largest sigma, or make loss_fn stable for large perturbations)."
            )
        feasible = mean_loss <= (1 + eps) * final_loss
        a, s = np.asarray(grid[:, 0], np.float64), np.asarray(grid[:, 1], np.float64)
        score = np.where(feasible, a**2 * dist2 / s**2, np.inf)
        values.append(float(score.min()))
    return Criticality(tuple(modules), tuple(values), final_loss, float(eps))
