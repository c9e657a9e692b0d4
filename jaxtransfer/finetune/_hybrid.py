"""Hybrid forward on the teacher-student model: the fine-tuned student's blocks interleaved with the frozen
pre-trained teacher's, as extra forward paths that regularise fine-tuning (the AAAI 2021 hybrid knowledge transfer
the survey lists).

Teacher and student share the architecture; the teacher is the pre-trained network, frozen, the student starts from
it and fine-tunes. With blocks B^S_1..B^S_L (student) and B^T_1..B^T_L (teacher), three paths run per sample, all
from the student's stem to the student's target head:

    student:  B^S_1 -> B^S_2 -> B^S_3 -> ...          loss L_S (the target loss the trainer computes)
    hybrid a: B^S_1 -> B^T_2 -> B^S_3 -> ...          loss L_a
    hybrid b: B^T_1 -> B^S_2 -> B^T_3 -> ...          loss L_b

    L = L_S + mu (w_a L_a + w_b L_b),    w_k = stop_gradient(min(1, L_S / L_k))

A hybrid path makes each student block work with the pre-trained blocks around it, which keeps it close to what
the teacher computes; the dynamic weights w_k let a hybrid path count fully while it does as well as the student
alone and fade when it is worse (L_k > L_S), so the transfer terms never outweigh the target loss. No code was
published; the weighting rule is our reading of "weighted dynamically against the target loss". At inference
only the student path runs: :func:`merge_hybrid` gives the plain architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtransfer.finetune._losses import per_example_loss
from jaxtransfer.finetune._routing import collapse_routed, route_blocks, routing

__all__ = ["HybridTeacherStudent", "hybrid_regularizer", "inject_hybrid", "merge_hybrid"]


class HybridTeacherStudent(nnx.Module):
    """A model whose routed blocks hold the student (``tuned``) and the frozen teacher (``frozen``).

    ``model(x)`` is the student path; ``model.path(x, pattern)`` runs block b on the student if ``pattern[b]`` is
    1 and on the teacher if 0; ``patterns`` are the two alternating hybrids (a, b).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_hybrid
        >>> from jaxtransfer.models import CNN
        >>> model = inject_hybrid(CNN(3, 8, 2, 5, rngs=nnx.Rngs(0)))
        >>> x = jnp.ones((2, 8, 8, 3))
        >>> bool(jnp.allclose(model.path(x, (1, 1)), model(x))), model.patterns  # untrained: student = teacher
        (True, ((1, 0), (0, 1)))
    """

    def __init__(self, model: nnx.Module, num_blocks: int):
        self.model = model
        self.num_blocks = num_blocks

    @property
    def patterns(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        a = tuple(1 - b % 2 for b in range(self.num_blocks))  # student first: 1, 0, 1, ...
        return a, tuple(1 - v for v in a)

    def path(self, x: jax.Array, pattern: Sequence[int]) -> jax.Array:
        pattern = tuple(int(v) for v in pattern)
        if len(pattern) != self.num_blocks or not set(pattern) <= {0, 1}:
            raise ValueError(f"pattern must be {self.num_blocks} zeros (teacher) and ones (student); got {pattern}.")
        with routing(pattern):
            return self.model(x)

    def features(self, x: jax.Array) -> jax.Array:
        with routing((1,) * self.num_blocks):
            return self.model.features(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.path(x, (1,) * self.num_blocks)


def inject_hybrid(model: nnx.Module, *, where: Callable | str | Sequence[str] | None = None) -> HybridTeacherStudent:
    """The teacher-student model on a copy of the pre-trained ``model`` (with its new head; unchanged): every
    selected block (default: the items of ``blocks`` / ``stages.i`` / ``layers``) gets a frozen teacher twin.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import CNN
        >>> model = inject_hybrid(CNN(3, 8, 3, 5, rngs=nnx.Rngs(0)))
        >>> model.patterns
        ((1, 0, 1), (0, 1, 0))
    """
    routed, n = route_blocks(model, where)
    if n < 2:
        raise ValueError(f"the hybrid paths interleave blocks: the model needs >= 2 routed blocks; it has {n}.")
    return HybridTeacherStudent(routed, n)


def hybrid_regularizer(
    weight: float = 1.0, *, task="classification", dynamic: bool = True
) -> Callable[[HybridTeacherStudent, jax.Array, jax.Array], jax.Array]:
    """The transfer terms mu (w_a L_a + w_b L_b) as a ``finetune(regularizer=)`` (the trainer adds L_S itself).

    ``dynamic=False`` fixes w_a = w_b = 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_hybrid
        >>> from jaxtransfer.models import CNN
        >>> model = inject_hybrid(CNN(3, 8, 2, 10, rngs=nnx.Rngs(0)))
        >>> penalty = hybrid_regularizer()(model, jnp.ones((2, 8, 8, 3)), jnp.array([0, 1]))  # finetune(regularizer=)
        >>> bool(penalty > 0)
        True
    """
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0; got {weight!r}.")

    def regularizer(model, x, y):
        if not isinstance(model, HybridTeacherStudent):
            raise ValueError("hybrid_regularizer needs a HybridTeacherStudent model (inject_hybrid).")
        mean_loss = lambda out: jnp.mean(per_example_loss(out.astype(jnp.float32), y, task))  # noqa: E731
        student = jax.lax.stop_gradient(mean_loss(model(x))) if dynamic else None
        total = 0.0
        for pattern in model.patterns:
            loss = mean_loss(model.path(x, pattern))
            w = jnp.minimum(1.0, student / jnp.maximum(jax.lax.stop_gradient(loss), 1e-12)) if dynamic else 1.0
            total = total + w * loss
        return weight * total

    return regularizer


def merge_hybrid(model: HybridTeacherStudent) -> nnx.Module:
    """The student alone in the plain architecture (each routed block its fine-tuned copy), in eval mode.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_hybrid
        >>> from jaxtransfer.models import CNN
        >>> type(merge_hybrid(inject_hybrid(CNN(3, 8, 2, 10, rngs=nnx.Rngs(0))))).__name__
        'CNN'
    """
    if not isinstance(model, HybridTeacherStudent):
        raise ValueError(f"merge_hybrid takes a HybridTeacherStudent; got {type(model).__name__}.")
    return collapse_routed(model.model, lambda block: block.tuned)
