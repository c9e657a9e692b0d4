"""Sphinx configuration of the jaxtransfer documentation site (build it with ``python docs/build.py``).

The API reference is generated here from each public module's ``__all__``, so a new public name is documented the
moment it is exported; the notebooks are executed by ``docs/build.py`` (as a reader would run them, from the
repository root) and rendered with their outputs by myst-nb, which does not execute them again.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import jaxtransfer  # noqa: E402

project = "jaxtransfer"
author = "the jaxtransfer developers"
release = version = jaxtransfer.__version__
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"jaxtransfer {version}"
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]
nb_execution_mode = "off"  # build.py executed them; a notebook that fails there fails the build
nb_output_stderr = "remove"  # progress bars and JAX warnings: not part of what a page shows
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
suppress_warnings = ["myst.header"]  # the guides keep the README's heading levels (## sections under one #)

# The public surface, one API page per module: (module, one line on what it holds).
MODULES = {
    "jaxtransfer": "Model-zoo ranking and the scores re-exported from jaxtransfer.score.",
    "jaxtransfer.score": "Transferability scores: LogME (naive, optimised, from statistics, sharded) and the others.",
    "jaxtransfer.finetune": "Fine-tuning in Flax NNX: the trainer, PEFT strategies, regularisers, survey methods.",
    "jaxtransfer.models": "Reference models and the real pre-trained backbones, loaded offline.",
    "jaxtransfer.data": "The bundled real datasets and the image/text preprocessing.",
    "jaxtransfer.soup": "Model soups (uniform, greedy, learned) and logit ensembles, on any pytree.",
    "jaxtransfer.merge": "WiSE-FT, task arithmetic, TIES and DARE, on any pytree.",
    "jaxtransfer.landscape": "Loss-landscape probes: paths, barriers, planes, trajectories, Hessian spectra.",
    "jaxtransfer.similarity": "CKA (linear, RBF, debiased, minibatch) and parameter distances.",
    "jaxtransfer.criticality": "Module criticality.",
    "jaxtransfer.analysis": "Mistake overlap between models.",
    "jaxtransfer.experiments": "The model-selection experiments behind `jaxtransfer demo` and bench/.",
}


def _public(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = [n for n in module.__all__ if not n.startswith("_")]
    if module_name == "jaxtransfer":  # the scores are documented once, on the jaxtransfer.score page
        names = [n for n in names if n not in importlib.import_module("jaxtransfer.score").__all__ and n != "score"]
    return names


def _directive(module_name: str, name: str) -> str:
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(obj):
        return f".. autoclass:: {module_name}.{name}\n   :members:\n   :special-members: __call__\n"
    if callable(obj):
        return f".. autofunction:: {module_name}.{name}\n"
    return f".. py:data:: {module_name}.{name}\n\n   {_describe(obj)}\n"


def _describe(obj) -> str:
    """A registry or constant: its type and keys (dicts) or its value (short sequences), as inline literals."""
    if isinstance(obj, dict):
        keys = ", ".join(f"``{k}``" for k in obj)
        return f"A ``dict`` of {len(obj)} entries, keyed by: {keys}."
    if isinstance(obj, (tuple, list, frozenset, set)):
        items = ", ".join(f"``{v!r}``" for v in obj)
        return f"A ``{type(obj).__name__}`` of {len(obj)}: {items}."
    return f"``{obj!r}``"


def write_api_pages(directory: Path = DOCS / "api") -> None:
    """One reStructuredText page per public module, plus the index; rewritten at every build."""
    directory.mkdir(exist_ok=True)
    index = ["API reference", "=============", "", "Every public name, generated from the docstrings.", ""]
    index += [".. toctree::", "   :maxdepth: 1", ""] + [f"   {m}" for m in MODULES]
    (directory / "index.rst").write_text("\n".join(index) + "\n")
    for module_name, summary in MODULES.items():
        names = _public(module_name)
        lines = [module_name, "=" * len(module_name), "", summary, "", f".. currentmodule:: {module_name}", ""]
        module = importlib.import_module(module_name)
        summarised = [n for n in names if callable(getattr(module, n))]  # constants: their type's docstring
        lines += [".. autosummary::", ""] + [f"   {n}" for n in summarised] + [""]
        lines += [_directive(module_name, n) for n in names]
        (directory / f"{module_name}.rst").write_text("\n".join(lines))


write_api_pages()
