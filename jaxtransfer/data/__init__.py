"""Bundled real datasets (shipped inside installed packages; nothing is downloaded)."""

from jaxtransfer.data.digits import digits_transfer, load_digits

__all__ = ["digits_transfer", "load_digits"]
