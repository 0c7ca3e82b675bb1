"""Names a package imports on first access (a module ``__getattr__``, PEP 562), so that importing the package
stays cheap: ``csakd``, ``csakd.data`` and ``csakd.inference`` keep PyTorch out of ``import`` this way."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``package``: a name of ``table`` is imported from the module ``table[name]`` on
    first access and kept in the package, so later accesses are plain lookups; any other name is an
    AttributeError."""

    def getattr_(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return getattr_
