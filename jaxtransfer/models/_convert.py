"""Conversion of the EfficientNet-Lite PyTorch pickles, once, to a deterministic safetensors file in Flax layout.

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
from pathlib import Path

import numpy as np
from flax import nnx

from jaxtransfer.models._sources import PRETRAINED, cache_dir, checked_file, source, source_weights
from jaxtransfer.models._torch_pickle import read_legacy_state_dict
from jaxtransfer.models._weights import sha256
from jaxtransfer.models.efficientnet import EfficientNetLite, torch_names

__all__ = ["FORMAT", "convert_efficientnet_lite", "converted_weights", "write_safetensors"]

FORMAT = "jaxtransfer-efficientnet-lite/1"
_TO_FLAX = {  # PyTorch layout -> Flax layout
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # (out, in / groups, kh, kw) -> (kh, kw, in / groups, out)
    "linear": lambda a: a.T,  # (out, in) -> (in, out)
    "copy": lambda a: a,
}
_WEIGHTS, _DIGEST = "weights.safetensors", "weights.sha256"
_STALE_SECONDS = 600  # temporary directories of conversions older than this were killed: removed on the next one


def write_safetensors(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
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
        checked_file(weights, digest.read_text().strip(), "converted weights")
    except OSError:
        return False
    return True


def convert_efficientnet_lite(name: str, *, directory: str | Path | None = None, force: bool = False) -> Path:
    """Converts the PyTorch weights of an EfficientNet-Lite to a safetensors file in Flax layout (no torch needed).

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

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = convert_efficientnet_lite("efficientnet-lite0", directory=d)
        ...     print(path.relative_to(d))
        efficientnet-lite0/weights.safetensors

    The ``.pth`` files are legacy ``torch.save`` pickles; they are read by a restricted unpickler of our own
    (``read_legacy_state_dict``: tensors and nothing else, bit-identical to ``torch.load``), so torch is needed only
    as the tests' reference.
    """
    lite = sorted(k for k in PRETRAINED if k.startswith("efficientnet-lite"))
    if name not in lite:
        raise ValueError(f"not a shipped EfficientNet-Lite: {name!r}; available: {lite}.")
    root = Path(directory or cache_dir())
    folder = root / name
    if not force and _intact(folder):
        return folder / _WEIGHTS
    src = source_weights(name)
    state = read_legacy_state_dict(src)
    names = torch_names(nnx.eval_shape(lambda: EfficientNetLite(name, rngs=nnx.Rngs(0))))
    arrays = {}
    for ours, (theirs, kind) in names.items():
        t = state.pop(theirs).astype(np.float32)
        arrays[ours] = _TO_FLAX[kind](t)
    leftover = [k for k in state if not k.endswith("num_batches_tracked")]
    if leftover:
        raise ValueError(f"{src} has tensors the model does not use: {leftover[:5]}.")
    meta = {"format": FORMAT, "source": name, "source_sha256": source(name).sha256}
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, name)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    try:
        write_safetensors(tmp / _WEIGHTS, arrays, meta)
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


def converted_weights(name: str, directory, convert: bool) -> Path:
    """The checked converted weights of ``name``, converting them first if missing and ``convert``."""
    folder = Path(directory or cache_dir()) / name
    path = folder / _WEIGHTS
    if not folder.exists():
        if not convert:
            raise FileNotFoundError(f"no converted {name} weights at {folder}: run `jaxtransfer convert {name}`.")
        convert_efficientnet_lite(name, directory=directory)
    digest = folder / _DIGEST
    if not (path.is_file() and digest.is_file()):
        raise OSError(f"{folder} is incomplete (no {_WEIGHTS} or {_DIGEST}); convert again: jaxtransfer convert {name}")
    return checked_file(path, digest.read_text().strip(), f"the converted {name} weights")
