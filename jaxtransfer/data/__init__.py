"""Bundled real datasets (shipped inside installed packages; nothing is downloaded)."""

from jaxtransfer.data.digits import load_digits

__all__ = ["load_digits"]
