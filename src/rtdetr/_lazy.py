"""Lazy package attributes (PEP 562), so that importing a light submodule stays light.

``rtdetr --help`` builds its parser from ``rtdetr.*.command`` modules; if importing
``rtdetr`` or a subpackage pulled in PyTorch and every model module, the help would
take seconds. Packages list their public names with the submodule holding each;
the submodule is imported on first access and the value cached on the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a name to its relative module (``".builder"``)."""

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
