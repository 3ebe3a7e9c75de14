"""What a server exposes: the service's name, its methods and the introspection built-ins.

Exposure follows zerorpc 0.6.3 (spec 10.1) so the same object gives the same method list:
a dict exposes all its entries; any other object exposes every callable attribute whose
name does not start with ``_`` and is not one of the reference Server's own names.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from . import _introspect

F = TypeVar("F", bound=Callable[..., Any])

_STREAM_MARK: Final = "_rpccore_stream"
# The reference Server's own public names, which it never exposes.
_RESERVED: Final = frozenset(("bind", "close", "connect", "debug", "disconnect", "run", "stop"))


def stream(func: F) -> F:
    """Mark a method as streaming: its return value is iterated and sent as a stream.

    Generator functions and async generator functions stream without the decorator; it is
    needed for methods that return some other iterable.
    """
    setattr(func, _STREAM_MARK, True)
    return func


def is_stream(func: Callable[..., Any]) -> bool:
    target = getattr(func, "__func__", func)
    return bool(
        getattr(target, _STREAM_MARK, False)
        or inspect.isgeneratorfunction(target)
        or inspect.isasyncgenfunction(target)
    )


def service_name(obj: object) -> str:
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) else type(obj).__name__


def service_doc(obj: object) -> str | None:
    """The exposed object's own docstring, else its class's (never ``object``'s)."""
    if isinstance(obj, Mapping):
        return None
    # A module or a class documents itself; an instance is documented by its class.
    doc = obj.__doc__ if isinstance(obj, (type, types.ModuleType)) else type(obj).__doc__
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def public_methods(obj: object) -> dict[str, Callable[..., Any]]:
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items() if callable(v)}
    methods: dict[str, Callable[..., Any]] = {}
    for name in dir(obj):
        if name.startswith("_") or name in _RESERVED:
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that raises is simply not a method
            continue
        if callable(value):
            methods[name] = value
    return methods


class Service:
    """An exposed object: ``lookup(name)`` finds a method or an introspection built-in."""

    def __init__(self, obj: object, name: str | None = None) -> None:
        self.name = name if name is not None else service_name(obj)
        self.methods = public_methods(obj)
        self.streams = frozenset(n for n, m in self.methods.items() if is_stream(m))
        self.doc = service_doc(obj)
        self._builtins: dict[str, Callable[..., Any]] = {
            "_zerorpc_list": self._list,
            "_zerorpc_name": self._name,
            "_zerorpc_ping": self._ping,
            "_zerorpc_help": self._help,
            "_zerorpc_args": self._args,
            "_zerorpc_inspect": self._inspect,
        }

    def __repr__(self) -> str:
        return f"<Service {self.name!r} methods={len(self.methods)} streams={len(self.streams)}>"

    def lookup(self, name: str) -> Callable[..., Any] | None:
        return self._builtins.get(name) or self.methods.get(name)

    def is_stream(self, name: str) -> bool:
        return name in self.streams

    def _list(self) -> list[str]:
        return [name for name in self.methods if not name.startswith("_")]

    def _name(self) -> str:
        return self.name

    def _ping(self) -> list[str]:
        return ["pong", self.name]

    def _help(self, method: str) -> str | None:
        return _introspect.method_doc(self.methods[method])

    def _args(self, method: str) -> list[Any] | None:
        return _introspect.method_args(self.methods[method])

    def _inspect(self) -> dict[str, Any]:
        return _introspect.describe(self.name, self.methods, self.streams, self.doc)
