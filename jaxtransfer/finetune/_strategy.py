"""The registry of fine-tuning strategies: each is registered once with what it trains, prepares, checks, merges.

A strategy is

- ``params``: the NNX filter over ``(path, variable)`` of the parameters it trains; the trainer splits the model by
  it and differentiates only those, so everything else stays bitwise unchanged;
- ``prepare(model, **options) -> model``: the surgery that adds its parameters (``inject_ssf``, ``inject_lora``),
  or None;
- ``check(model)``: raises ``ValueError`` before training if the model is not ready (e.g. not prepared), or None;
- ``merge(model) -> model``: folds the trained parameters back into the original architecture, or None;
- ``config(model) -> dict``: the ``prepare`` options (sites included) that rebuild a prepared model's structure
  from its base, or None: what adapter files and checkpoints record.

A new strategy is one file in ``jaxtransfer/finetune/`` that calls :func:`register_strategy` (the package imports
every module in its folder) plus its test.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping

import jax
from flax import nnx

from jaxtransfer.finetune._surgery import is_head

__all__ = [
    "HEAD_PARAMS",
    "STRATEGIES",
    "Strategy",
    "count_params",
    "get_strategy",
    "print_trainable",
    "register_strategy",
    "trainable_filter",
]

HEAD_PARAMS = nnx.All(nnx.Param, is_head)
"""The parameters of the model's ``head``: every strategy trains them."""


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A registered fine-tuning strategy (see the module docstring for the fields).

    Example:
        >>> from jaxtransfer.finetune import get_strategy
        >>> s = get_strategy("lora")
        >>> s.name, s.prepare.__name__, s.merge.__name__
        ('lora', 'inject_lora', 'merge_lora')
    """

    name: str
    params: object
    prepare: Callable | None = None
    check: Callable[[nnx.Module], None] | None = None
    merge: Callable[[nnx.Module], nnx.Module] | None = None
    reference: str = ""
    config: Callable[[nnx.Module], dict] | None = None


_STRATEGIES: dict[str, Strategy] = {}
STRATEGIES: Mapping[str, Strategy] = types.MappingProxyType(_STRATEGIES)
"""Name -> :class:`Strategy` (read-only; ``"ssf" in STRATEGIES``, ``list(STRATEGIES)``)."""


def register_strategy(
    name: str,
    params,
    *,
    prepare: Callable | None = None,
    check: Callable[[nnx.Module], None] | None = None,
    merge: Callable[[nnx.Module], nnx.Module] | None = None,
    config: Callable[[nnx.Module], dict] | None = None,
    reference: str = "",
) -> Strategy:
    """Registers a strategy and returns it.

    Example:
        >>> from jaxtransfer.finetune import STRATEGIES
        >>> STRATEGIES["ssf"].merge is not None, STRATEGIES["full"].prepare is None
        (True, True)

    Raises:
        ValueError: the name is taken by a strategy registered elsewhere.
    """
    if name in _STRATEGIES:
        raise ValueError(f"a strategy named {name!r} is already registered; choose another name.")
    _STRATEGIES[name] = strategy = Strategy(name, params, prepare, check, merge, reference, config)
    return strategy


def get_strategy(strategy: str | Strategy) -> Strategy:
    """The registered strategy of that name (a :class:`Strategy` passes through).

    Example:
        >>> get_strategy("bitfit").name
        'bitfit'
        >>> get_strategy("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown strategy 'nope'; choose from [...].

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(_STRATEGIES)}.")
    return _STRATEGIES[strategy]


def trainable_filter(strategy: str | Strategy):
    """The NNX filter of the parameters ``strategy`` trains.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import trainable_filter
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> sorted(str(p[-1]) for p, _ in nnx.to_flat_state(nnx.state(model, trainable_filter("linear_probe"))))
        ['bias', 'kernel']

    Raises:
        ValueError: for an unknown strategy (the message lists the known ones).
    """
    return get_strategy(strategy).params


def count_params(model: nnx.Module, filter=nnx.Param) -> int:
    """Number of scalars in the model's variables selected by ``filter`` (a strategy name or an NNX filter).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import count_params
        >>> from jaxtransfer.models import MLP
        >>> count_params(MLP(4, [8], 3, rngs=nnx.Rngs(0)), "linear_probe")  # the head: 8 x 3 + 3
        27
    """
    if isinstance(filter, str | Strategy):
        filter = trainable_filter(filter)
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, filter))))


def print_trainable(model: nnx.Module, strategy: str | Strategy = "full") -> str:
    """Prints (and returns) peft's one-line summary of what ``strategy`` trains in ``model``.

    "all params" counts every ``nnx.Param`` of the model as it is (adapters included, BatchNorm statistics not).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> _ = print_trainable(MLP(4, [8], 3, rngs=nnx.Rngs(0)), "linear_probe")
        trainable params: 27 || all params: 67 || trainable%: 40.2985
    """
    trainable, total = count_params(model, strategy), count_params(model)
    share = 100 * trainable / max(total, 1)
    line = f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {share:.4f}"
    print(line)
    return line
