"""A registry of named classes filled by a class decorator: smoothing methods, training losses and verifiers each
keep one (the op registry keys by torch module and function instead, verifiers/bounds/ops/base.py)."""
from __future__ import annotations

import importlib
import pkgutil

from certkit.common.errors import CertkitError


class Registry:
    """name -> class, in registration order.

    Args:
        kind: what is registered, for messages ("smoothing method", ...).
        package: dotted name of a package whose modules are imported before the registry is read, so that a new
            entry is one new module there.
    """

    def __init__(self, kind: str, package: str | None = None):
        self.kind, self.package = kind, package
        self._items: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: register ``cls`` under ``cls.name``.

        Raises:
            ValueError: the name is empty or taken.
        """
        name = getattr(cls, "name", "")
        if not name or name in self._items:
            raise ValueError(f"{self.kind} name {name!r} is empty or already registered")
        self._items[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove the class registered as ``name`` (tests and plug-ins that register temporarily); absent names are
        ignored."""
        self._items.pop(name, None)

    def all(self) -> dict[str, type]:
        """Every registered class by name (the package's modules are imported first)."""
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for m in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{m.name}")
        return dict(self._items)

    def get(self, name: str) -> type:
        """The class registered as ``name``.

        Raises:
            CertkitError: unknown name (the message lists the registered ones).
        """
        items = self.all()
        if name not in items:
            raise CertkitError(f"unknown {self.kind} {name!r}: choose from {', '.join(items)}")
        return items[name]
