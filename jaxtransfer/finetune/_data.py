"""The trainer's input: arrays or streams of batches, cut or padded to one batch shape, with a mask.

``data`` is one of
- ``(x, y)`` arrays (or anything indexable with ``len``): shuffled every epoch with a generator seeded by
  ``(seed, epoch)``, so that epoch k draws the same order in a resumed run;
- a callable returning a fresh iterable of ``(x, y)`` batches each epoch (e.g. a generator function reading files);
  if it takes an argument it is called with the epoch number (0, 1, ...), so that a resumed run can ask a
  reproducible stream for the epoch it resumes at;
- a re-iterable of batches (a list, a ``tf.data``/grain dataset): iterated once per epoch;
- a one-shot iterator (a generator object): one epoch only.

Every batch is padded to ``batch_size`` rows (copies of its first row) and comes with a float mask (1 = real row), so
that one compiled step serves every batch, the last partial one included; masked rows have no weight in the loss,
its gradient or the metrics.
"""

from __future__ import annotations

import collections.abc
import inspect
from collections.abc import Iterator

import numpy as np

__all__ = ["epoch_batches", "is_array_data", "pad_batch", "takes_epoch"]


def is_array_data(data) -> bool:
    """Whether ``data`` is an ``(x, y)`` pair of arrays (as opposed to a stream of batches)."""
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(hasattr(a, "shape") and hasattr(a, "__len__") for a in data)
        and np.ndim(data[0]) >= 1
        and len(data[0]) != 0
        and not isinstance(data[0], tuple)
    )


def takes_epoch(fn) -> bool:
    """Whether the data function ``fn`` takes an argument (then it is called with the epoch number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def pad_batch(x, y, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, mask)`` with ``batch_size`` rows; ValueError if the batch is empty, too large or mismatched."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"a batch has {len(x)} inputs but {len(y)} targets.")
    if not 0 < len(x) <= batch_size:
        raise ValueError(f"a batch has {len(x)} rows; batches must have 1 to batch_size={batch_size} rows.")
    mask = np.zeros(batch_size, np.float32)
    mask[: len(x)] = 1.0
    return _pad(x, batch_size), _pad(y, batch_size), mask


def epoch_batches(
    data, batch_size: int, *, epoch: int, seed: int, shuffle: bool, drop_last: bool = False, name: str = "data"
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The padded ``(x, y, mask)`` batches of one epoch (see the module docstring).

    Example:
        >>> import numpy as np
        >>> x, y = np.arange(5.0)[:, None], np.arange(5)
        >>> [m.tolist() for _, _, m in epoch_batches((x, y), 2, epoch=0, seed=0, shuffle=False)]
        [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    """
    if is_array_data(data):
        x, y = data
        n = len(x)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield pad_batch(x[idx], y[idx], batch_size)
        return
    if callable(data):
        stream = data(epoch) if takes_epoch(data) else data()
    elif isinstance(data, collections.abc.Iterable):
        stream = iter(data)  # a one-shot iterator is its own iterator: empty from the second epoch on
    else:
        raise ValueError(
            f"{name} must be an (x, y) pair of arrays, an iterable of (x, y) batches or a function returning one; "
            f"got {type(data).__name__}."
        )
    for batch in stream:
        if not (isinstance(batch, tuple | list) and len(batch) == 2):
            raise ValueError(f"{name} must yield (x, y) batches; got {type(batch).__name__}.")
        x, y, mask = pad_batch(batch[0], batch[1], batch_size)
        if drop_last and mask.min() == 0:
            continue
        yield x, y, mask
