"""Wall time split into JAX compilation (tracing, lowering to MLIR, the XLA compile) and everything else."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import jax

__all__ = ["Timing", "timed"]

_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)


@dataclasses.dataclass
class Timing:
    """``total`` wall seconds of a block, of which ``compile`` were spent compiling; ``run`` is the rest."""

    total: float = 0.0
    compile: float = 0.0

    @property
    def run(self) -> float:
        return max(self.total - self.compile, 0.0)


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
    """Times the block and the JAX compilations inside it (from ``jax.monitoring``'s duration events).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> with timed() as t:
        ...     _ = jax.jit(lambda x: x * 3.0)(jnp.ones(7)).block_until_ready()
        >>> t.compile > 0 and t.total >= t.compile
        True
    """
    record = Timing()

    def listener(event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            record.compile += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    start = time.perf_counter()
    try:
        yield record
    finally:
        record.total = time.perf_counter() - start
        record.compile = min(record.compile, record.total)
        jax.monitoring.unregister_event_duration_listener(listener)
