"""Every public function and class carries a runnable example (a ``>>>`` block, executed by ``--doctest-modules``),
so that the API reference generated from the docstrings shows how each name is called."""

import importlib
import inspect
import pkgutil

import pytest

import jaxtransfer


def _public_modules() -> list[str]:
    names = ["jaxtransfer"]
    for info in pkgutil.walk_packages(jaxtransfer.__path__, "jaxtransfer."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_objects() -> dict[str, object]:
    found: dict[int, tuple[str, object]] = {}
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.setdefault(id(obj), (f"{module_name}.{name}", obj))
    return dict(found.values())


def _has_example(obj) -> bool:
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj):  # the class, or a method of its own (e.g. a ``create`` constructor), shows it
        docs += [inspect.getdoc(v) or "" for k, v in vars(obj).items() if not k.startswith("_") and callable(v)]
        docs += [inspect.getdoc(v.__func__) or "" for v in vars(obj).values() if isinstance(v, classmethod)]
    return any(">>>" in d for d in docs)


PUBLIC = _public_objects()


def test_the_public_api_is_found():
    assert len(PUBLIC) > 150 and "jaxtransfer.logme" in PUBLIC  # a renamed package must not empty this suite


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_has_a_runnable_example(name):
    assert _has_example(PUBLIC[name]), f"{name} has no example (a >>> block) in its docstring."
