"""Adapter files: only what a strategy trained (adapters and head), a small JSON config, and the base's fingerprint.

``save_adapter(model, path)`` writes a directory (as peft's ``save_pretrained``) with

- ``adapter_config.json``: the strategy, the ``prepare`` options that rebuild the adapted structure (rank, alpha,
  sites, ...), the base model's class and name, and a fingerprint of the frozen base: the paths and shapes of its
  parameters and a sha256 of their values;
- ``adapter_weights.npz``: the trained parameters, by dotted path.

``load_adapter(base_model, path)`` prepares the base as recorded, checks the fingerprint (a different architecture
or different weights is refused, saying which leaves differ) and loads the trained parameters. The directory is
written under a temporary name and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxtransfer.finetune._strategy import STRATEGIES, get_strategy, trainable_filter
from jaxtransfer.finetune._surgery import path_str

__all__ = ["adapter_config", "inject_recorded", "injected_adapters", "load_adapter", "save_adapter"]

_CONFIG, _WEIGHTS = "adapter_config.json", "adapter_weights.npz"
_FORMAT = "jaxtransfer-adapter"


def _leaves(state) -> list[tuple[str, np.ndarray]]:
    return [(path_str(p), np.asarray(v[...])) for p, v in nnx.to_flat_state(state)]


def _fingerprint(model: nnx.Module, strategy) -> dict:
    """Paths, shapes and a sha256 of the values of the parameters ``strategy`` keeps frozen."""
    frozen = _leaves(nnx.state(model, nnx.All(nnx.Param, nnx.Not(trainable_filter(strategy)))))
    digest = hashlib.sha256()
    for name, value in frozen:
        digest.update(f"{name}:{value.dtype}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return {"leaves": {name: list(value.shape) for name, value in frozen}, "sha256": digest.hexdigest()}


def _prepared(model: nnx.Module) -> list[str]:
    """The registered strategies whose adapters ``model`` carries (in registry order)."""
    found = []
    for name, spec in STRATEGIES.items():
        if spec.prepare is None or spec.config is None or spec.check is None:
            continue
        try:
            spec.check(model)
        except ValueError:
            continue
        found.append(name)
    return found


def injected_adapters(model: nnx.Module) -> list[dict]:
    """What was injected into ``model``: ``[{"strategy": name, "options": prepare options}]`` (what ``save_model``
    records in a checkpoint, and :func:`inject_recorded` replays).

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_lora
        >>> from jaxtransfer.models import MLP
        >>> [record] = injected_adapters(inject_lora(MLP(4, [8], 3, rngs=nnx.Rngs(0)), rank=2))
        >>> record["strategy"], record["options"]
        ('lora', {'rank': 2, 'alpha': 2.0, 'rslora': False, 'dropout': 0.0, 'where': ['layers.0']})
    """
    return [{"strategy": name, "options": STRATEGIES[name].config(model)} for name in _prepared(model)]


def inject_recorded(model: nnx.Module, records: list[dict]) -> nnx.Module:
    """Returns a copy of ``model`` with the adapters of ``records`` (from :func:`injected_adapters`) injected.

    Args:
        model: a model without those adapters (not changed); records: ``[{"strategy", "options"}]``.

    Raises:
        ValueError: an unknown strategy, or the model already carries some of them.

    Example:
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_lora
        >>> from jaxtransfer.models import MLP
        >>> base = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> records = injected_adapters(inject_lora(base, rank=2))
        >>> injected_adapters(inject_recorded(base, records)) == records, injected_adapters(base)
        (True, [])
    """
    for record in records:
        model = get_strategy(record["strategy"]).prepare(model, **record["options"])
    return model


def _detect(model: nnx.Module) -> str:
    found = _prepared(model)
    if len(found) != 1:
        what = f"adapters of {found}" if found else "no adapter (inject_lora, inject_ssf, ...)"
        raise ValueError(f"the model has {what}: pass strategy= to say what to save.")
    return found[0]


def save_adapter(
    model: nnx.Module,
    path: str | Path,
    *,
    strategy: str | None = None,
    base_name: str | None = None,
    force: bool = False,
) -> Path:
    """Writes the parameters ``strategy`` trained in ``model`` (adapters and head) and their config to ``path``.

    Args:
        model: a trained model (not merged).
        path: the directory to create.
        strategy: default: the one strategy whose adapters the model carries (LoRA, SSF, IA3, VPT, adapter);
            required for strategies that add nothing (``"bitfit"``, ``"linear_probe"``).
        base_name: a name for the base model, recorded (e.g. ``"minilm-l6"``).
        force: replace an existing adapter directory at ``path`` (nothing else is ever replaced).

    Returns:
        The directory written.

    Raises:
        ValueError: the strategy cannot be told (several or no adapters), or the model is not prepared for it.
        FileExistsError: ``path`` exists (without ``force``, or it is not an adapter directory).

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_lora
        >>> from jaxtransfer.models import MLP
        >>> base = MLP(4, [16, 16], 3, rngs=nnx.Rngs(0))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = save_adapter(inject_lora(base, rank=2), f"{d}/adapter")
        ...     config = adapter_config(out)
        ...     restored = load_adapter(base, out)
        >>> config["strategy"], config["options"]["rank"], config["trained_parameters"]
        ('lora', 2, 155)
    """
    name = _detect(model) if strategy is None else get_strategy(strategy).name
    spec = STRATEGIES[name]
    if spec.check is not None:
        spec.check(model)
    path = Path(path).absolute()
    if path.exists() and not (force and (path / _CONFIG).is_file()):
        why = "pass force=True to replace it" if (path / _CONFIG).is_file() else "it is not an adapter directory"
        raise FileExistsError(f"{path} exists: {why}.")
    trained = _leaves(nnx.state(model, trainable_filter(name)))
    config = {
        "format": _FORMAT,
        "version": 1,
        "strategy": name,
        "options": spec.config(model) if spec.config is not None else {},
        "base": {"class": type(model).__name__, "name": base_name, **_fingerprint(model, name)},
        "trained_parameters": int(sum(v.size for _, v in trained)),
        "parameters": {k: [list(v.shape), str(v.dtype)] for k, v in trained},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        np.savez(tmp / _WEIGHTS, **{k: v for k, v in trained})
        (tmp / _CONFIG).write_text(json.dumps(config, indent=1))
        if path.exists():  # force, onto an adapter directory: swap, then drop the old one
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def adapter_config(path: str | Path) -> dict:
    """The JSON config of the adapter directory at ``path`` (see :func:`save_adapter`'s example).

    Returns:
        A dict with ``strategy``, ``options`` (as passed to its ``inject_*``), ``base`` (class, name, and the
        paths, shapes and sha256 of the frozen weights), ``trained_parameters`` and ``parameters`` (path ->
        [shape, dtype]).

    Raises:
        FileNotFoundError: ``path`` is not an adapter directory.

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_ssf, save_adapter
        >>> from jaxtransfer.models import MLP
        >>> with tempfile.TemporaryDirectory() as d:
        ...     config = adapter_config(save_adapter(inject_ssf(MLP(4, [8], 3, rngs=nnx.Rngs(0))), f"{d}/ssf"))
        >>> config["strategy"], config["trained_parameters"]  # SSF's scale and shift of the hidden layer + head
        ('ssf', 43)
    """
    path = Path(path)
    if not (path / _CONFIG).is_file() or not (path / _WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not an adapter directory (no {_CONFIG} and {_WEIGHTS}); see save_adapter.")
    config = json.loads((path / _CONFIG).read_text())
    if config.get("format") != _FORMAT:
        raise ValueError(f"{path / _CONFIG} is not a jaxtransfer adapter config.")
    return config


def _differences(want: dict, have: dict) -> str:
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    shapes = [f"{k} {tuple(have[k])} (adapter: {tuple(want[k])})" for k in want if k in have and want[k] != have[k]]
    parts = []
    if missing:
        parts.append(f"lacks {missing[:4]}")
    if extra:
        parts.append(f"has {extra[:4]} that the adapter's base did not")
    if shapes:
        parts.append(f"has other shapes: {shapes[:4]}")
    return "; ".join(parts)


def load_adapter(base_model: nnx.Module, path: str | Path) -> nnx.Module:
    """Returns ``base_model`` prepared as the adapter was (same sites and options) with its trained parameters.

    ``base_model`` must be the model the adapter was trained from (same architecture and frozen weights; its head
    is replaced by the saved one, so any head of the saved width will do). It is not changed.

    Raises:
        FileNotFoundError: ``path`` is not an adapter directory.
        ValueError: the base's architecture or weights differ from the adapter's base (the message says which
            leaves), or it already carries adapters.

    Example:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxtransfer.finetune import inject_lora, save_adapter
        >>> from jaxtransfer.models import MLP
        >>> base = MLP(4, [8], 3, rngs=nnx.Rngs(0))
        >>> tuned = inject_lora(base, rank=2)
        >>> tuned.layers[0].lora_b[...] = jnp.ones_like(tuned.layers[0].lora_b[...])  # as if trained
        >>> with tempfile.TemporaryDirectory() as d:
        ...     restored = load_adapter(base, save_adapter(tuned, f"{d}/lora"))
        >>> x = jnp.ones((2, 4))
        >>> bool(jnp.array_equal(restored(x), tuned(x))), bool(jnp.array_equal(restored(x), base(x)))
        (True, False)
    """
    config = adapter_config(path)
    spec = get_strategy(config["strategy"])
    model = base_model
    if spec.prepare is not None:
        model = spec.prepare(nnx.clone(base_model), **config["options"])
    else:
        model = nnx.clone(base_model)
    recorded, here = config["base"], _fingerprint(model, spec.name)
    if recorded["leaves"] != here["leaves"]:
        raise ValueError(
            f"the adapter at {path} was trained on a {recorded['class']} ({recorded['name'] or 'unnamed'}) of "
            f"another structure: this base {_differences(recorded['leaves'], here['leaves'])}."
        )
    if recorded["sha256"] != here["sha256"]:
        raise ValueError(
            f"the adapter at {path} was trained on other base weights ({recorded['class']}, "
            f"{recorded['name'] or 'unnamed'}: sha256 {recorded['sha256'][:12]}..., this base "
            f"{here['sha256'][:12]}...): load the pre-trained weights it was trained from."
        )
    state = nnx.state(model, trainable_filter(spec.name))
    flat = nnx.to_flat_state(state)
    have = {path_str(p): list(v[...].shape) for p, v in flat}
    want = {k: shape for k, (shape, _) in config["parameters"].items()}
    if have != want:
        raise ValueError(f"the adapter at {path} does not fit this model: the model {_differences(want, have)}.")
    with np.load(Path(path) / _WEIGHTS) as weights:
        for p, variable in flat:
            value = weights[path_str(p)]
            variable[...] = jax.numpy.asarray(value, variable[...].dtype)
    nnx.update(model, nnx.from_flat_state(flat))
    return model
