"""L2T-ww (Jang et al., "Learning What and Where to Transfer", ICML 2019): feature matching between a frozen source
network and the target network, weighted by meta-networks trained through unrolled updates.

For a pair p = (m, n) of a source layer m (maps S^m (n, H, W, C_m), frozen) and a target layer n (T^n, trained),
a 1 x 1 convolution r_p (FitNets' regressor, trained with the target network: theta) maps T^n to C_m channels.
Two meta-networks read the pooled source features s^m(x) = mean_hw S^m(x) (phi):

    what:  w_p(x) = softmax(W_p s^m(x) + b_p)                  (C_m,) channel weights
    where: lambda_p(x) = softplus(v_p . s^m(x) + c_p)          a non-negative weight of the pair

    L_wfm(theta | phi) = sum_p mean_i lambda_p(x_i) sum_c w_{p,c}(x_i) mean_hw (r_p(T^n(x_i)) - S^m(x_i))_{c,hw}^2

The target trains on L_org(theta) + beta L_wfm(theta | phi). The meta-networks are learnt so that matching helps the
target task: from theta_0 = theta, ``inner_steps`` SGD steps on L_wfm and one on L_org,

    theta_{t+1} = theta_t - eta grad_theta L_wfm(theta_t | phi),   theta_{T+1} = theta_T - eta grad_theta L_org(theta_T)

and phi moves along -grad_phi L_org(theta_{T+1}(phi)), differentiated through the unrolled steps (written out with
optax's functional updates, so JAX differentiates them like any other function).

Choices the paper leaves open: softplus for the pair weights (any non-negative map would do), the meta-networks
read the globally pooled source map, BatchNorm statistics of both networks stay frozen, and each step does the
meta-update on the batch first, then the target update with the new phi.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtransfer.finetune._losses import per_example_loss
from jaxtransfer.finetune._train import evaluate

__all__ = ["L2TWW", "l2t_ww", "weighted_feature_matching"]


def weighted_feature_matching(regressed, source, channel_weights, pair_weights) -> jax.Array:
    """L_wfm: sum over pairs of mean_i lambda_i sum_c w_ic mean_hw (regressed - source)^2.

    Args:
        regressed, source: lists (one per pair) of (n, H, W, C) maps; the regressed target maps and the source maps.
        channel_weights: list of (n, C) "what" weights; pair_weights: list of (n,) "where" weights.

    Example (uniform weights w = 1/C, lambda = 1 give FitNets' mean squared distance):
        >>> import jax.numpy as jnp
        >>> r, s = jnp.ones((2, 3, 3, 4)), jnp.zeros((2, 3, 3, 4))
        >>> float(weighted_feature_matching([r], [s], [jnp.full((2, 4), 0.25)], [jnp.ones(2)]))
        1.0
    """
    lists = (regressed, source, channel_weights, pair_weights)
    if len({len(v) for v in lists}) != 1:
        raise ValueError(
            f"one regressed map, source map, channel and pair weight per pair; got {[len(v) for v in lists]}"
        )
    total = 0.0
    for r, s, w, lam in zip(*lists, strict=True):
        if r.shape != s.shape or w.shape != (s.shape[0], s.shape[-1]) or lam.shape != (s.shape[0],):
            raise ValueError(
                f"pair shapes disagree: regressed {r.shape}, source {s.shape}, what {w.shape}, where {lam.shape}."
            )
        per = jnp.mean(jnp.square(r - s), axis=tuple(range(1, r.ndim - 1)))  # (n, C): mean over H, W
        total = total + jnp.mean(lam * jnp.sum(w * per, axis=-1))
    return total


class _Regressors(nnx.Module):
    def __init__(self, pairs, source_channels, target_channels, rngs):
        self.convs = nnx.List([nnx.Conv(target_channels[t], source_channels[s], (1, 1), rngs=rngs) for s, t in pairs])


class _Meta(nnx.Module):
    def __init__(self, pairs, source_channels, rngs):
        self.what = nnx.List([nnx.Linear(source_channels[s], source_channels[s], rngs=rngs) for s, _ in pairs])
        self.where = nnx.List([nnx.Linear(source_channels[s], 1, rngs=rngs) for s, _ in pairs])


def _pool_to(h: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Average-pools (n, H, W, C) to (n, h, w, C) when H, W are integer multiples of h, w."""
    if h.shape[1:3] == tuple(size):
        return h
    fh, fw = h.shape[1] // size[0], h.shape[2] // size[1]
    if fh * size[0] != h.shape[1] or fw * size[1] != h.shape[2]:
        raise ValueError(f"a target map {h.shape[1:3]} cannot be pooled to the source map's {tuple(size)}.")
    return nnx.avg_pool(h, (fh, fw), strides=(fh, fw))


def _map_shapes(model, x) -> dict[str, tuple]:
    """``{layer: shape}`` of ``model.feature_maps(x)`` in the model's order (a traced dict comes back sorted)."""
    names = []

    def maps(m, x):
        out = m.feature_maps(x)
        names.extend(out)
        return tuple(out.values())

    return {k: v.shape for k, v in zip(names, nnx.eval_shape(maps, model, x), strict=True)}


@dataclasses.dataclass(frozen=True)
class L2TWW:
    """The pure functions of L2T-ww on NNX states (see the module docstring); build it with :meth:`create`.

    ``theta`` is ``(target parameters, regressor parameters)``, ``phi`` the meta-networks' parameters.
    """

    pairs: tuple[tuple[str, str], ...]
    target_def: object
    target_rest: object
    source: object
    regressor_def: object
    meta_def: object
    beta: float
    inner_steps: int
    inner_learning_rate: float

    @classmethod
    def create(cls, target, source, x_sample, *, pairs="all", beta=0.5, inner_steps=2, inner_learning_rate=0.1,
               seed=0) -> tuple[L2TWW, tuple, object]:  # fmt: skip
        """(L2TWW, theta, phi) for models with ``feature_maps(x) -> {name: (n, H, W, C)}``.

        ``pairs``: ``"all"`` (every source layer with every target layer at least as large, as in the paper),
        ``"matched"`` (layers of the same name) or a list of ``(source_layer, target_layer)``.

        Example:
            >>> import numpy as np
            >>> from flax import nnx
            >>> from jaxtransfer.models import CNN
            >>> source = CNN(3, 4, 2, 3, norm="batch", rngs=nnx.Rngs(0))
            >>> problem, theta, phi = L2TWW.create(nnx.clone(source), source, np.zeros((2, 8, 8, 3), np.float32),
            ...                                    pairs="matched")
            >>> problem.pairs
            (('stem', 'stem'), ('block1', 'block1'), ('block2', 'block2'))
        """
        for name, m in (("target", target), ("source", source)):
            if not hasattr(m, "feature_maps"):
                raise ValueError(f"the {name} model needs feature_maps(x) -> {{name: (n, H, W, C)}} maps.")
        target, source = nnx.clone(target), nnx.clone(source)
        target.eval()
        source.eval()
        x = jnp.asarray(np.asarray(x_sample)[:1])
        s_shapes, t_shapes = _map_shapes(source, x), _map_shapes(target, x)

        def fits(s, t):
            (hs, ws), (ht, wt) = s_shapes[s][1:3], t_shapes[t][1:3]
            return ht % hs == 0 and wt % ws == 0

        if pairs == "all":
            pairs = [(s, t) for s in s_shapes for t in t_shapes if fits(s, t)]
        elif pairs == "matched":
            pairs = [(s, s) for s in s_shapes if s in t_shapes and fits(s, s)]
        pairs = tuple((str(s), str(t)) for s, t in pairs)
        for s, t in pairs:
            if s not in s_shapes or t not in t_shapes:
                raise ValueError(f"pair {(s, t)}: source layers {list(s_shapes)}, target layers {list(t_shapes)}.")
            if not fits(s, t):
                raise ValueError(f"pair {(s, t)}: target map {t_shapes[t][1:3]} does not pool to {s_shapes[s][1:3]}.")
        if not pairs:
            raise ValueError("no (source, target) layer pair to match.")
        if not (beta >= 0 and inner_steps >= 0 and inner_learning_rate > 0):
            raise ValueError("beta and inner_steps must be >= 0 and inner_learning_rate > 0.")
        rngs = nnx.Rngs(seed)
        s_c = {k: v[-1] for k, v in s_shapes.items()}
        t_c = {k: v[-1] for k, v in t_shapes.items()}
        regressors, meta = _Regressors(pairs, s_c, t_c, rngs), _Meta(pairs, s_c, rngs)
        target_def, target_params, target_rest = nnx.split(target, nnx.Param, ...)
        regressor_def, regressor_params = nnx.split(regressors)
        meta_def, phi = nnx.split(meta)
        self = cls(pairs, target_def, target_rest, source, regressor_def, meta_def, float(beta), int(inner_steps),
                   float(inner_learning_rate))  # fmt: skip
        return self, (target_params, regressor_params), phi

    def target(self, theta) -> nnx.Module:
        return nnx.merge(self.target_def, theta[0], self.target_rest)

    def source_maps(self, x) -> list[jax.Array]:
        maps = self.source.feature_maps(x)
        return [jax.lax.stop_gradient(maps[s]) for s, _ in self.pairs]

    def wfm(self, theta, phi, x, source_maps) -> jax.Array:
        """L_wfm(theta | phi) on the batch ``x`` given the frozen source maps."""
        maps = self.target(theta).feature_maps(x)
        regressors = nnx.merge(self.regressor_def, theta[1])
        meta = nnx.merge(self.meta_def, phi)
        regressed, weights, lams = [], [], []
        for k, ((_, t), s) in enumerate(zip(self.pairs, source_maps, strict=True)):
            regressed.append(regressors.convs[k](_pool_to(maps[t], s.shape[1:3])))
            pooled = jnp.mean(s, axis=(1, 2))
            weights.append(jax.nn.softmax(meta.what[k](pooled), axis=-1))
            lams.append(jax.nn.softplus(meta.where[k](pooled))[:, 0])
        return weighted_feature_matching(regressed, source_maps, weights, lams)

    def org(self, theta, x, y) -> jax.Array:
        """L_org: the target task's mean cross-entropy."""
        return jnp.mean(per_example_loss(self.target(theta)(x), y, "classification"))

    def meta_objective(self, phi, theta, x, y, source_maps) -> jax.Array:
        """L_org after ``inner_steps`` unrolled SGD steps on L_wfm(. | phi) and one on L_org (differentiable in
        phi)."""
        sgd = optax.sgd(self.inner_learning_rate)
        th, state = theta, sgd.init(theta)
        for _ in range(self.inner_steps):
            g = jax.grad(self.wfm)(th, phi, x, source_maps)
            updates, state = sgd.update(g, state, th)
            th = optax.apply_updates(th, updates)
        updates, state = sgd.update(jax.grad(self.org)(th, x, y), state, th)
        return self.org(optax.apply_updates(th, updates), x, y)

    def total(self, theta, phi, x, y, source_maps) -> jax.Array:
        return self.org(theta, x, y) + self.beta * self.wfm(theta, phi, x, source_maps)


def l2t_ww(
    target: nnx.Module,
    source: nnx.Module,
    train_data: tuple,
    *,
    pairs: str | Sequence[tuple[str, str]] = "all",
    beta: float = 0.5,
    inner_steps: int = 2,
    inner_learning_rate: float = 0.1,
    optimizer: optax.GradientTransformation | None = None,
    meta_optimizer: optax.GradientTransformation | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    eval_data: tuple | None = None,
    seed: int = 0,
) -> tuple[nnx.Module, list[dict]]:
    """Trains ``target`` (a copy; the model with its new head, usually initialised from ``source``) with L2T-ww.

    Args:
        target, source: models with ``feature_maps``; ``source`` stays frozen.
        train_data: ``(images, labels)`` arrays; shuffled each epoch (seeded).
        pairs, beta, inner_steps, inner_learning_rate: as in :meth:`L2TWW.create` (beta 0.5 and 2 inner steps as
            in the paper's experiments).
        optimizer: for theta (default Adam 1e-3); meta_optimizer for phi (default Adam 1e-4).

    Returns:
        (trained target in eval mode, history per epoch: ``loss``, ``wfm``, ``meta_loss`` and eval metrics).

    Example (two epochs on 8 images: the shapes, not a result):
        >>> import numpy as np
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> source = CNN(3, 4, 2, 3, norm="batch", rngs=nnx.Rngs(0))
        >>> target = nnx.clone(source)  # initialised from the source; its head is the new one
        >>> x, y = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8) % 3
        >>> trained, history = l2t_ww(target, source, (x, y), pairs="matched", epochs=2, batch_size=4)
        >>> [h["epoch"] for h in history], sorted(history[0])
        ([1, 2], ['epoch', 'loss', 'meta_loss', 'wfm'])
    """
    x, y = (np.asarray(a) for a in train_data)
    problem, theta, phi = L2TWW.create(target, source, x, pairs=pairs, beta=beta, inner_steps=inner_steps,
                                       inner_learning_rate=inner_learning_rate, seed=seed)  # fmt: skip
    tx = optimizer or optax.adam(1e-3)
    meta_tx = meta_optimizer or optax.adam(1e-4)
    opt, meta_opt = tx.init(theta), meta_tx.init(phi)

    @jax.jit
    def step(theta, phi, opt, meta_opt, xb, yb):
        maps = problem.source_maps(xb)
        meta_loss, g_phi = jax.value_and_grad(problem.meta_objective)(phi, theta, xb, yb, maps)
        updates, meta_opt = meta_tx.update(g_phi, meta_opt, phi)
        phi = optax.apply_updates(phi, updates)
        (loss, wfm), g = jax.value_and_grad(
            lambda th: (lambda w: (problem.org(th, xb, yb) + problem.beta * w, w))(problem.wfm(th, phi, xb, maps)),
            has_aux=True,
        )(theta)
        updates, opt = tx.update(g, opt, theta)
        return optax.apply_updates(theta, updates), phi, opt, meta_opt, loss, wfm, meta_loss

    history = []
    for epoch in range(epochs):
        order = np.random.default_rng((seed, epoch)).permutation(len(x))
        sums = np.zeros(3)
        batches = 0
        for i in range(0, max(len(x) - batch_size, 0) + 1, batch_size):  # full batches (one compiled step)
            idx = order[i : i + batch_size]
            theta, phi, opt, meta_opt, *vals = step(theta, phi, opt, meta_opt, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
            sums += np.array([float(v) for v in vals])
            batches += 1
        record = dict(zip(("loss", "wfm", "meta_loss"), sums / batches, strict=True), epoch=epoch + 1)
        if eval_data is not None:
            record.update({f"eval_{k}": v for k, v in evaluate(problem.target(theta), eval_data).items()})
        history.append(record)
    model = problem.target(theta)
    model.eval()
    return model, history
