"""Saving and restoring NNX models with orbax (atomic: a checkpoint is never half-written)."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

__all__ = ["restore_model", "save_model"]


def save_model(model: nnx.Module, path: str | Path, *, force: bool = False) -> Path:
    """Writes the model's state to the directory ``path`` (orbax writes to a temporary name, then renames).

    Raises:
        FileExistsError: if ``path`` exists and ``force`` is false (no checkpoint is overwritten by accident).
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it.")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model), force=force)
    return path


def restore_model(model: nnx.Module, path: str | Path) -> nnx.Module:
    """Returns a copy of ``model`` (same architecture) with the state read from ``path``; ``model`` is unchanged."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    graphdef, abstract = nnx.split(nnx.clone(model))
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(path, abstract)
    return nnx.merge(graphdef, state)
