"""Every method by its ``pruning.method`` name: the one list config, engines and reports read.

A method registers itself with :func:`register` in its own module of this
package; :func:`all_methods` imports every module here once, so adding a method
is adding a file (docs/design.md shows the steps). Order is each class's
``order`` (then its name): the order of tables and figures.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

import torch

from fedmap.errors import ConfigError
from fedmap.methods.base import Method

if TYPE_CHECKING:
    from fedmap.runs.config import Config

_REGISTRY: dict[str, type[Method]] = {}
_LOADED: list[bool] = []  # non-empty once every module of the package was imported
_NOT_METHODS = {"base", "registry", "revisions"}  # modules of this package that define none
M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: make ``cls`` selectable as ``pruning.method = cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    if not isinstance(getattr(cls, "label", None), str):
        raise TypeError(f"method {name!r} must set a class attribute 'label'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"two methods are named {name!r}: {_REGISTRY[name]} and {cls}")
    _REGISTRY[name] = cls
    return cls


def _load() -> None:
    """Import every method module of this package (each registers itself)."""
    import fedmap.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"fedmap.methods.{info.name}")
    _LOADED.append(True)


def all_methods() -> tuple[type[Method], ...]:
    """Every registered method, in report order."""
    if not _LOADED:  # some may have registered already, imported for their helpers
        _load()
    return tuple(sorted(_REGISTRY.values(), key=lambda cls: (cls.order, cls.name)))


def method_names() -> tuple[str, ...]:
    """Every ``pruning.method`` value, in report order."""
    return tuple(cls.name for cls in all_methods())


def get_method(name: str) -> type[Method]:
    """The method named ``name``; a :class:`ConfigError` naming the choices if there is none."""
    by_name = {cls.name: cls for cls in all_methods()}
    if name not in by_name:
        raise ConfigError(f"pruning.method: expected one of {tuple(by_name)}, got {name!r}")
    return by_name[name]


def build_method(config: Config, initial_values: torch.Tensor) -> Method:
    """The method ``config.pruning.method`` names, set up from ``config``."""
    return get_method(config.pruning.method).from_config(config, initial_values)
