"""Model surgery shared by every strategy: paths, the one "is this the head?" rule, site selection, replacement.

A *path* is what ``nnx.iter_modules`` / ``nnx.iter_graph`` yield (a tuple of attribute names and integer indices)
or a jax key path (``DictKey``, ``GetAttrKey``, ``SequenceKey``); both print the same way with :func:`path_str`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from flax import nnx

__all__ = ["HEAD", "is_head", "path_str", "replace_module", "require_sites", "select_modules"]

HEAD = "head"
"""The attribute that holds a model's task head: the new, randomly initialised layer that every strategy trains,
no adapter is put into, and the regularisers treat as having no pre-trained value."""


def _key(k) -> object:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return k


def path_str(path: Sequence) -> str:
    """``("blocks", 0, "fc1")`` -> ``"blocks.0.fc1"`` (jax key paths too): the format of every error message.

    Example:
        >>> path_str(("blocks", 0, "fc1"))
        'blocks.0.fc1'
    """
    return ".".join(str(_key(k)) for k in path)


def is_head(path: Sequence, _value=None) -> bool:
    """Whether ``path`` lies under the model's top-level ``head`` attribute (usable as an NNX filter).

    Example:
        >>> is_head(("head", "kernel")), is_head(("blocks", 0, "head", "kernel"))
        (True, False)
    """
    return bool(path) and _key(path[0]) == HEAD


def select_modules(
    model: nnx.Module,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None,
    types: tuple[type, ...],
    default: Callable[[tuple, nnx.Module], bool],
) -> list[tuple[tuple, nnx.Module]]:
    """The ``(path, module)`` sites of ``model`` that ``where`` selects (the root itself never).

    ``where``: ``None`` -> ``default``; a predicate ``(path, module) -> bool`` (any module); glob patterns on the
    dotted path (``"blocks.*.fc1"``), applied to modules of ``types``.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(4, [8, 8], 3, rngs=nnx.Rngs(0))
        >>> [path_str(p) for p, _ in select_modules(model, "layers.*", (nnx.Linear,), default=lambda p, m: False)]
        ['layers.0', 'layers.1']
        >>> [path_str(p) for p, _ in select_modules(model, None, (nnx.Linear,), default=lambda p, m: is_head(p))]
        ['head']
    """
    if where is None:
        match = default
    elif callable(where):
        match = where
    else:
        patterns = [where] if isinstance(where, str) else list(where)
        if not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"where must be a predicate, a glob pattern or a list of them; got {where!r}.")

        def match(path, module):
            return isinstance(module, types) and any(fnmatch.fnmatch(path_str(path), p) for p in patterns)

    return [(p, m) for p, m in nnx.iter_modules(model) if p and match(p, m)]


def require_sites(
    model: nnx.Module,
    where: Callable[[tuple, nnx.Module], bool] | str | Sequence[str] | None,
    types: tuple[type, ...],
    default: Callable[[tuple, nnx.Module], bool],
    what: str,
) -> list[tuple[tuple, nnx.Module]]:
    """:func:`select_modules`, raising ``ValueError`` (naming ``what`` was looked for and where the model's modules
    are) when nothing is selected.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> require_sites(MLP(4, [8], 3, rngs=nnx.Rngs(0)), "blocks.*", (nnx.Linear,), lambda p, m: False, "Linear")
        Traceback (most recent call last):
        ...
        ValueError: where='blocks.*' selects no Linear in MLP; the modules are at ['head', 'layers.0', 'layers'].
    """
    sites = select_modules(model, where, types, default)
    if not sites:
        raise ValueError(
            f"where={where!r} selects no {what} in {type(model).__name__}; the modules are at "
            f"{[path_str(p) for p, _ in nnx.iter_modules(model) if p][:12]}."
        )
    return sites


def replace_module(model: nnx.Module, path: tuple, new: nnx.Module) -> None:
    """Puts ``new`` at ``path`` in ``model``, in place (the parent's attribute or list item).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> model = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> replace_module(model, ("head",), nnx.Linear(8, 5, rngs=nnx.Rngs(1)))
        >>> import jax.numpy as jnp
        >>> model(jnp.ones((2, 4))).shape
        (2, 5)
    """
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)
