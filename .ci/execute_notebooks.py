"""Executes notebooks in place of a reader (on a copy: the repository's files are not changed); fails on error."""

import sys
import time

import nbformat
from nbclient import NotebookClient


def main(paths: list[str]) -> int:
    for path in paths:
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
        print(f"executed {path} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
