"""Saving and restoring NNX models with orbax (atomic: a checkpoint is never half-written)."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx

__all__ = ["restore_model", "save_model"]

# Files orbax writes at the top of every checkpoint directory; a directory without them is not a checkpoint.
_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA")
# The checkpoint's custom metadata key under which save_model records the adapters injected into the model.
_ADAPTERS = "jaxtransfer_adapters"


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _MARKERS)


def save_model(model: nnx.Module, path: str | Path, *, force: bool = False) -> Path:
    """Writes the model's state to the directory ``path`` (orbax writes to a temporary name, then renames).

    The checkpoint records which adapters (LoRA, SSF, IA3, VPT, bottleneck adapters) were injected and how, so
    :func:`restore_model` can inject them into a plain template.

    Args:
        force: replace an existing checkpoint at ``path``. Only a checkpoint is ever replaced: a directory holding
            anything else, or a file, is left alone and raises.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false, or ``path`` exists and is not a checkpoint.

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save_model(MLP(4, [8], 3, rngs=nnx.Rngs(0)), f"{d}/mlp")
        ...     print(path.name, sorted(p.name for p in path.iterdir())[:1])
        mlp ['_CHECKPOINT_METADATA']
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to replace the checkpoint there.")
    if path.exists() and not _is_checkpoint(path):
        raise FileExistsError(
            f"{path} exists and is not a jaxtransfer/orbax checkpoint: force=True only replaces a checkpoint, never "
            "other files. Choose another path."
        )
    from jaxtransfer.finetune import injected_adapters  # (the strategies register in the fine-tuning package)

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model), force=force, custom_metadata={_ADAPTERS: injected_adapters(model)})
    return path


def _leaf_shapes(tree) -> dict[str, tuple]:
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[name.removesuffix(".value")] = tuple(getattr(leaf, "shape", ()))
    return out


def _hint(missing: list[str], unexpected: list[str]) -> str:
    def has(keys, *words):
        return any(w in k.split(".") for k in keys for w in words)

    if has(unexpected, "ssf"):
        return "the checkpoint has SSF parameters: call inject_ssf on the template first."
    if has(unexpected, "lora_a", "lora_b"):
        return "the checkpoint has LoRA parameters: call inject_lora(template, rank) with the same rank first."
    if has(missing, "ssf"):
        return "the template has SSF but the checkpoint does not: restore into the model before inject_ssf."
    if has(missing, "lora_a", "lora_b"):
        return "the template has LoRA but the checkpoint does not: restore into the model before inject_lora."
    return "build the template with the architecture and head width the checkpoint was saved from."


def _check_structure(template_state, metadata, path: Path) -> None:
    want, have = _leaf_shapes(template_state), _leaf_shapes(metadata)
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint at {path} does not match the template model: the checkpoint lacks {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''} and has {unexpected[:4]}{'...' if len(unexpected) > 4 else ''} "
            f"that the template does not. {_hint(missing, unexpected)}"
        )
    for key in sorted(want):
        if want[key] != have[key]:
            raise ValueError(
                f"the checkpoint at {path} has {key} of shape {have[key]}, the template {want[key]}: {_hint([], [])}"
            )


def restore_model(model: nnx.Module, path: str | Path, *, inject: bool = True) -> nnx.Module:
    """Returns a copy of ``model`` (same architecture) with the state read from ``path``; ``model`` is unchanged.

    If the checkpoint was saved from a model with adapters and ``model`` carries none, they are injected into the
    copy first, as recorded (``inject=False``: refuse and name the call to make instead).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the checkpoint was saved from another structure (the message names the differing leaves and
            the fix, e.g. "call inject_ssf on the template first").

    Example:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.models import MLP
        >>> trained, template = MLP(4, [8], 3, rngs=nnx.Rngs(0)), MLP(4, [8], 3, rngs=nnx.Rngs(1))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     restored = restore_model(template, save_model(trained, f"{d}/mlp"))
        >>> bool(jnp.array_equal(restored.head.kernel[...], trained.head.kernel[...]))
        True
        >>> bool(jnp.array_equal(template.head.kernel[...], trained.head.kernel[...]))  # the template is unchanged
        False
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    if not _is_checkpoint(path):
        raise FileNotFoundError(f"{path} is not a checkpoint (no {_MARKERS[0]} in it); give the save_model path.")
    from jaxtransfer.finetune import inject_recorded, injected_adapters

    template = nnx.clone(model)
    with ocp.StandardCheckpointer() as ckpt:
        metadata = ckpt.metadata(path)
        recorded = (getattr(metadata, "custom_metadata", None) or {}).get(_ADAPTERS) or []
        if recorded and not injected_adapters(template):
            if not inject:
                calls = ", ".join(f"{r['strategy']} with {r['options']}" for r in recorded)
                raise ValueError(f"the checkpoint at {path} has adapters the template lacks: inject {calls} first.")
            template = inject_recorded(template, recorded)
        graphdef, abstract = nnx.split(template)
        _check_structure(abstract, getattr(metadata, "item_metadata", metadata), path)
        state = ckpt.restore(path, abstract)
    return nnx.merge(graphdef, state)
