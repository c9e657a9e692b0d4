"""Writing files safely: atomic replacement, and output paths that never clobber the user's data unasked."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "check_output_path"]


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, then renames it onto ``path`` in one step.

    A run killed midway leaves ``path`` as it was (absent or the old file), never half-written; the temporary file
    is removed when ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_output_path(path: str | Path, *, force: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Checks, before any work is done, that ``path`` can be written without destroying anything unasked.

    Raises:
        ValueError: ``path`` is one of ``inputs`` (never overwritten, even with ``force``), is a directory, its
            parent directory does not exist, or it exists and ``force`` is false.
    """
    p = Path(path)
    try:
        resolved = p.resolve()
        for other in inputs:
            if Path(other).exists() and Path(other).resolve() == resolved:
                raise ValueError(f"the output {path} is also an input file; write the output elsewhere.")
        if p.is_dir():
            raise ValueError(f"the output {path} is a directory; give a file name.")
        if not p.parent.is_dir():
            raise ValueError(f"the output directory {p.parent} does not exist; create it first.")
        if p.exists() and not force:
            raise ValueError(f"the output {path} exists; pass --force (force=True) to overwrite it.")
    except OSError as err:  # e.g. a file name longer than the file system allows
        raise ValueError(f"the output path {path!r} cannot be used: {err.strerror or err}.") from err
    return p
