"""Resolve ``poisonlab.a.b.c`` names as the docs write them, for the tests that hold docs to the code."""

from __future__ import annotations

import importlib


def resolve(dotted: str) -> object:
    """The module or attribute named by ``dotted``, importing its longest module prefix; raises
    ModuleNotFoundError when no prefix is a module, AttributeError when an attribute is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module or an attribute of one."""
    try:
        resolve(dotted)
    except (ModuleNotFoundError, AttributeError):
        return False
    return True
