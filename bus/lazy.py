"""Lazy public names: a package exports a name whose module (and heavy imports) loads on first use.

`sinks` and `producers` use it so that `import sinks` never imports tensorboardX, wandb or
mlflow; a package of your own can do the same:

    __getattr__ = lazy_exports(__name__, {"MySink": "._my_sink"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` resolving `names` (public name -> relative module) inside `package`."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module, package), name)

    return __getattr__
