"""matplotlib, imported when a plot is asked for: the library itself does not need it."""

from __future__ import annotations

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it.

    Example:
        >>> hasattr(pyplot(), "subplots")
        True
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plots need matplotlib: pip install matplotlib (or install jaxtransfer with the [bench] extra)."
        ) from err
    return plt
