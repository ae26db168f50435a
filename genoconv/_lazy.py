"""Names a package exports but imports on first use (PEP 562), so importing the package costs nothing it does not use."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, namespace: dict, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving ``names`` (attribute -> module) on first access and caching the result."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
