"""Reading a PyTorch state dict saved in the legacy (pre-1.6, non-zip) ``torch.save`` format, without torch.

The legacy file is five pickles and the raw storages: a magic number, the protocol version (1001), a system record
(endianness, type sizes), the state dict itself, whose tensors refer to storages by key through pickle's persistent
ids, and the list of storage keys; then, for each key in that order, an int64 element count and the storage's bytes.

The unpickler is restricted: it resolves only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
the ``torch.*Storage`` types, so a file cannot run code on load (which an unrestricted pickle can).
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["read_legacy_state_dict"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _Storage:
    key: str
    dtype: type
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        if not self.size:
            return self.storage.data[self.offset].copy()
        flat = self.storage.data
        end = self.offset + 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or end > len(flat) or any(s < 0 for s in self.size):
            raise ValueError(f"a tensor of size {self.size} reaches past its storage of {len(flat)} elements.")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.size, tuple(st * item for st in self.stride), writeable=False
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict[str, _Storage]):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a plain state dict.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}.")
        _, kind, key, _location, _size, view = pid[:6] if len(pid) >= 6 else (*pid, None)
        if view is not None:
            raise pickle.UnpicklingError("storage views are not supported.")
        if key not in self.storages:
            self.storages[key] = _Storage(str(key), _STORAGES[kind.name])
        return self.storages[key]


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format ``torch.save`` state dict as numpy arrays, in file order.

    Raises:
        ValueError: not a legacy torch file (e.g. the zip format of torch >= 1.6), or a truncated one.
        pickle.UnpicklingError: the file holds objects other than a state dict of tensors.

    Example:
        >>> from jaxtransfer.models import source_weights
        >>> state = read_legacy_state_dict(source_weights("efficientnet-lite0"))
        >>> state["_conv_stem.weight"].shape, state["_conv_stem.weight"].dtype
        ((32, 3, 3, 3), dtype('float32'))
    """
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        try:
            magic, protocol = pickle.load(f), pickle.load(f)
        except Exception as e:  # a zip file or another format fails in the first pickle
            raise ValueError(f"{path} is not a legacy torch.save file.") from e
        if magic != _MAGIC or protocol != _PROTOCOL:
            raise ValueError(f"{path} is not a legacy torch.save file (magic {magic!r}, protocol {protocol!r}).")
        info = pickle.load(f)
        if not info.get("little_endian", False):
            raise ValueError(f"{path} was written on a big-endian machine; not supported.")
        state = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            nbytes = count * np.dtype(storage.dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path} is truncated (storage {key}: {len(raw)} of {nbytes} bytes).")
            storage.data = np.frombuffer(raw, storage.dtype)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict.")
    out = {}
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise ValueError(f"{path}: {name} is a {type(value).__name__}, not a tensor.")
        out[name] = value.numpy()
    return out
