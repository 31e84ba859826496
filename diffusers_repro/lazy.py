"""Lazy re-exports: a package's public names, each imported from the module that defines it on first use.

The top-level package and every subpackage export their names this way, so that ``diffusers-repro --help`` and
``inspect`` import neither torch nor diffusers, and a subpackage's public names are the way into it from elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, which exports ``exports`` (name -> module).

    Args:
        package (`str`): The package's ``__name__``.
        exports (`dict[str, str]`): Each public name and the module of the package (relative, without dots) that
            defines it.
        namespace (`dict`): The package's ``globals()``: a name imported once is stored there.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({name for name in namespace if not name.startswith("_")} | set(exports))

    return __getattr__, __dir__
