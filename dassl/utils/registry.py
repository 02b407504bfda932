"""Name -> object registries (trainers, datasets, evaluators)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .tools import check_availability

__all__ = ["Registry"]


class Registry:
    """Map names to classes or functions; the key is the object's ``__name__``.

    Use as a decorator, ``@REG.register()``, or as a call, ``REG.register(obj)``.
    """

    def __init__(self, name: str):
        self._name = name
        self._obj_map: dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            raise KeyError(
                f'An object named "{name}" was already registered in "{self._name}" registry; '
                "pass force=True to replace it"
            )
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Callable | None:
        """Register ``obj`` (a plain call) or return a decorator that does (no argument)."""
        if obj is None:

            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return None

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; KeyError naming the choices otherwise."""
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in "{self._name}" registry; '
                f"registered: {sorted(self._obj_map)}"
            )
        return self._obj_map[name]

    def check(self, name: str) -> None:
        """Raise ValueError (with the closest registered name) if ``name`` is not registered."""
        check_availability(name, self.registered_names(), what=f'"{self._name}" registry')

    def registered_names(self) -> list[str]:
        return list(self._obj_map.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map
