"""Our subclasses of library classes still fit the libraries they adapt.

core/ adapts flask-smorest, webargs and marshmallow partly through their private
(underscore) methods, where no public hook does the job. Nothing announces a change
to those: an upgrade can rename one, and our override silently stops being called,
or change its parameters, and our override breaks at run time. So every private
method of every class in core/ that derives from a library class must still exist
in that library, with the same parameters. The classes are found by walking core/,
so an override added later is checked without touching this file.

The rule this relies on: in core/, a private method on a subclass of a library class
is an override. A helper of our own is a module-level function.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from importlib.metadata import packages_distributions, version
from typing import Any

import pytest

import core

FIRST_PARTY = {"app", "blocklist", "core", "db", "models", "resources", "schemas"}


def core_classes() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(core.__path__, "core."):
        module = importlib.import_module(info.name)
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__
        ]
    return found


def is_library(cls: type) -> bool:
    return cls.__module__.split(".")[0] not in FIRST_PARTY | {"builtins"}


def is_method(attr: object) -> bool:
    return inspect.isfunction(attr) or isinstance(attr, staticmethod | classmethod)


def private_overrides() -> list[tuple[type, str]]:
    """(class, method name) for each private method of a core/ class with a library base."""
    return [
        (cls, name)
        for cls in core_classes()
        if any(is_library(base) for base in cls.__mro__[1:])
        for name, attr in vars(cls).items()
        if name.startswith("_") and not name.startswith("__") and is_method(attr)
    ]


def parameters(function: Callable[..., Any]) -> list[tuple[str, str, bool]]:
    """Names, kinds and whether each has a default: what a caller relies on."""
    return [
        (p.name, p.kind.description, p.default is not p.empty)
        for p in inspect.signature(function).parameters.values()
    ]


def distribution(cls: type) -> str:
    top = cls.__module__.split(".")[0]
    name = packages_distributions().get(top, [top])[0]
    return f"{name} {version(name)}"


def test_the_adapted_classes_are_found() -> None:
    # A guard for the guard: if the walk finds nothing, the test below checks nothing.
    overrides = {f"{cls.__name__}.{name}" for cls, name in private_overrides()}
    assert {"Blueprint._check_precondition", "JSONParser._raw_load_json"} <= overrides


@pytest.mark.parametrize(
    ("cls", "name"),
    private_overrides(),
    ids=lambda value: value.__name__ if isinstance(value, type) else value,
)
def test_each_private_override_still_overrides_the_same_method(cls: type, name: str) -> None:
    base = next((b for b in cls.__mro__[1:] if is_library(b) and name in vars(b)), None)
    ours = f"{cls.__module__}.{cls.__qualname__}.{name}"
    library = next(b for b in cls.__mro__[1:] if is_library(b))
    assert base is not None, (
        f"{ours} overrides a private method that {distribution(library)} no longer "
        f"defines on {library.__module__}.{library.__qualname__} or its bases: the override "
        "is never called. Read that upgrade's changes and adapt the override (or, if it "
        "is a helper of our own, make it a module-level function)."
    )
    theirs = f"{base.__module__}.{base.__qualname__}.{name}"
    assert parameters(getattr(cls, name)) == parameters(getattr(base, name)), (
        f"{theirs} changed its parameters in {distribution(base)}: "
        f"{inspect.signature(getattr(base, name))}, where {ours} takes "
        f"{inspect.signature(getattr(cls, name))}. Read that upgrade's changes and adapt "
        "the override."
    )
