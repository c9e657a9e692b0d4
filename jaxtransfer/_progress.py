"""One progress-bar helper: a tqdm bar when asked for and installed, a silent stand-in otherwise."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["progress_bar", "wants_progress"]


class _Silent:
    """The subset of tqdm's interface the library uses, doing nothing."""

    def __init__(self, iterable=None):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    @property
    def total(self):
        return None

    def close(self) -> None:
        pass


def wants_progress(progress: bool | None, count: int, threshold: int = 5) -> bool:
    """``progress`` if given, else whether there are more than ``threshold`` items."""
    return bool(progress) if progress is not None else count > threshold


def progress_bar(
    iterable: Iterable | None = None,
    *,
    enabled: bool,
    desc: str,
    unit: str,
    total: int | None = None,
    delay: float = 0.0,
):
    """``tqdm.auto.tqdm(iterable, ...)`` if ``enabled`` and tqdm is installed, else a silent stand-in with the same
    ``update`` / ``set_postfix`` / ``close`` methods (iterating it yields ``iterable`` unchanged). With ``delay``
    the bar appears only once the loop has run that many seconds (quick loops print nothing). On stderr."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, desc=desc, unit=unit, total=total, delay=delay)
    return _Silent(iterable)
