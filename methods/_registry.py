"""Methods by name: the built-ins plus those other packages add through entry points.

A plugin package declares, in its pyproject.toml::

    [project.entry-points."peftbench.methods"]
    my_method = "my_package.module:MyMethod"

where `MyMethod` subclasses `peftbench.methods.base.Method`. The built-ins register themselves
when `peftbench.methods` is imported (which any import of this module does first); entry points
are read once per process, on the first lookup.
"""

from __future__ import annotations

import fnmatch
import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

from peftbench.errors import PeftbenchError

if TYPE_CHECKING:
    from .base import Method

ENTRY_POINT_GROUP = "peftbench.methods"
_METHODS: dict[str, type[Method]] = {}
_plugins_loaded = False


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method subclass available as `--method name`."""

    def decorate(cls: type[Method]) -> type[Method]:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def load_plugins(force: bool = False) -> None:
    """Register the entry points' methods (once per process unless `force`); a broken plugin warns."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _METHODS:
            continue
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plugin must not break the built-ins
            warnings.warn(f"peftbench: could not load method plugin '{entry.name}' ({entry.value}): {exc}")
            continue
        register_method(entry.name)(cls)


def all_methods() -> dict[str, type[Method]]:
    """Every known method by name: built-ins first, then plugins."""
    load_plugins()
    return dict(_METHODS)


def get_method(name: str) -> type[Method]:
    """The method class registered as `name`."""
    methods = all_methods()
    if name not in methods:
        raise PeftbenchError(f"unknown method '{name}'; valid methods: {', '.join(methods)}")
    return methods[name]


def resolve_method_names(names: list[str]) -> list[str]:
    """Expand `all` (every method whose optional dependency is installed) and shell-style patterns
    (`peft-*`), check every name, keep the order given and drop repeats."""
    methods = all_methods()
    expanded: list[str] = []
    for name in names:
        if name == "all":
            expanded += [n for n, cls in methods.items() if cls.available()]
        elif any(ch in name for ch in "*?["):
            matched = fnmatch.filter(methods, name)
            if not matched:
                raise PeftbenchError(f"no method matches '{name}'; valid methods: {', '.join(methods)}")
            expanded += matched
        else:
            expanded.append(name)
    for name in expanded:
        cls = get_method(name)
        if not cls.available():
            raise PeftbenchError(f"method '{name}' needs {cls.requires}, which is not installed")
    return list(dict.fromkeys(expanded))
