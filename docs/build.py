"""Builds the documentation site: executes the notebooks, then runs Sphinx with warnings as errors.

    python docs/build.py                      # everything; the site is docs/_build/html/index.html
    python docs/build.py --no-execute         # the notebooks without outputs (a quick look at the text)
    python docs/build.py --notebooks ssf      # execute only notebooks/ssf.ipynb (the others render without outputs)

Each notebook runs from the repository root, as a reader runs it (``jupyter`` there), on a copy: the files in
``notebooks/`` keep no outputs, the executed copies go to ``docs/notebooks/`` (generated, not tracked), and a
notebook that raises fails the build. Sphinx then renders those copies (myst-nb, without executing them again),
the guides in ``docs/guides/`` and the API reference that ``docs/conf.py`` generates from the docstrings.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def execute(source: Path, target: Path, *, timeout: int = 900) -> float:
    """Runs ``source`` top to bottom from the repository root and writes it with its outputs to ``target``."""
    import nbformat
    from nbclient import NotebookClient

    start = time.perf_counter()
    nb = nbformat.read(source, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="render the notebooks without running them")
    parser.add_argument("--notebooks", nargs="+", metavar="NAME", help="execute only these (names without .ipynb)")
    parser.add_argument("--out", type=Path, default=DOCS / "_build" / "html")
    args = parser.parse_args(argv)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.notebooks:
        unknown = set(args.notebooks) - {p.stem for p in notebooks}
        if unknown:
            parser.error(f"no such notebook(s): {sorted(unknown)}; choose from {[p.stem for p in notebooks]}")
    target_dir = DOCS / "notebooks"
    target_dir.mkdir(exist_ok=True)
    for stale in set(target_dir.glob("*.ipynb")) - {target_dir / p.name for p in notebooks}:
        stale.unlink()  # a notebook removed from notebooks/ leaves the site too
    for path in notebooks:
        target = target_dir / path.name
        if args.no_execute or (args.notebooks and path.stem not in args.notebooks):
            shutil.copyfile(path, target)
            continue
        print(f"executed {path.relative_to(ROOT)} in {execute(path, target):.0f} s", flush=True)
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(args.out)]
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode == 0:
        print(f"built {args.out / 'index.html'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
