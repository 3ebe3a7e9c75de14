"""The answers of ``_zerorpc_help``, ``_zerorpc_args`` and ``_zerorpc_inspect`` (spec 10).

The formats are exactly zerorpc 0.6.3's, built with ``inspect.signature`` so they work on
every Python >= 3.11 and every kind of signature (annotations, keyword-only parameters,
``*args``) where the reference crashes. Like the reference, bound methods list ``self``.

Our extension keys, ignored by 0.6.3 peers: per method ``stream`` (bool), ``returns``
(JSON Schema of the return annotation) and ``varargs`` (the name of a ``*args``
parameter); per argument ``kind`` ("self", "positional" for positional-only, or "named"),
``schema`` (JSON Schema of the annotation) and ``default_repr``.

A default that msgpack cannot carry (an enum member, an object) is published as its
``repr``, marked ``"default_repr": true`` (the reference fails the whole call instead).
``default`` keeps 0.6.3's meaning, "this argument has a default", and its text is what a
person should read; the marker tells a program that the value is only a description and
must never be sent in the argument's place (the gateway refuses to fill a gap with it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ._schema import signature_schemas

_POSITIONAL: Final = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)
_PLAIN_TYPES: Final = (type(None), bool, int, float, str, bytes)


def method_doc(method: Callable[..., Any]) -> str | None:
    doc = getattr(method, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


def _signature(method: Callable[..., Any]) -> tuple[inspect.Signature, bool] | None:
    """The signature including ``self`` for bound methods, and whether it is bound."""
    bound = inspect.ismethod(method)
    target = method.__func__ if bound else method  # type: ignore[attr-defined]
    try:
        return inspect.signature(target), bound
    except (TypeError, ValueError):
        return None


def method_args(method: Callable[..., Any]) -> list[Any] | None:
    """``_zerorpc_args``: ``[args, varargs, keywords, defaults]`` like getargspec."""
    found = _signature(method)
    if found is None:
        return None
    sig, _ = found
    names: list[str] = []
    defaults: list[Any] = []
    varargs = keywords = None
    for param in sig.parameters.values():
        if param.kind in _POSITIONAL:
            names.append(param.name)
            if param.default is not param.empty:
                defaults.append(_wire_default(param.default))
        elif param.kind is param.VAR_POSITIONAL:
            varargs = param.name
        elif param.kind is param.VAR_KEYWORD:
            keywords = param.name
    return [names, varargs, keywords, defaults or None]


def method_entry(method: Callable[..., Any], *, streams: bool) -> dict[str, Any]:
    """One ``_zerorpc_inspect`` method entry, with our extension keys."""
    entry: dict[str, Any] = {"args": None, "doc": method_doc(method)}
    found = _signature(method)
    if found is not None:
        sig, bound = found
        schemas, returns = signature_schemas(method)
        args: list[dict[str, Any]] = []
        for index, param in enumerate(sig.parameters.values()):
            if param.kind is param.VAR_POSITIONAL:
                entry["varargs"] = param.name
            if param.kind not in _POSITIONAL:
                continue
            arg: dict[str, Any] = {"name": param.name}
            if param.default is not param.empty and _encodable(param.default):
                arg["default"] = param.default
            elif param.default is not param.empty:
                arg["default"] = repr(param.default)
                arg["default_repr"] = True  # a description, never a value to send
            if bound and index == 0:
                arg["kind"] = "self"
            else:
                arg["kind"] = "positional" if param.kind is param.POSITIONAL_ONLY else "named"
            if param.name in schemas:
                arg["schema"] = schemas[param.name]
            args.append(arg)
        entry["args"] = args
        if returns is not None:
            entry["returns"] = returns
    entry["stream"] = streams
    return entry


def describe(
    name: str,
    methods: Mapping[str, Callable[..., Any]],
    streams: Iterable[str],
    doc: str | None = None,
) -> dict[str, Any]:
    """``_zerorpc_inspect``: ``{"name": ..., "methods": {name: entry}}``, plus our ``doc``
    extension key (the service's docstring) when it has one."""
    stream_set = frozenset(streams)
    answer: dict[str, Any] = {"name": name}
    if doc:
        answer["doc"] = doc
    answer["methods"] = {
        method_name: method_entry(method, streams=method_name in stream_set)
        for method_name, method in methods.items()
        if not method_name.startswith("_")
    }
    return answer


def _wire_default(value: Any) -> Any:
    if _encodable(value):
        return value
    return repr(value)


def _encodable(value: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if isinstance(value, _PLAIN_TYPES):
        return not isinstance(value, int) or -(2**63) <= value < 2**64
    if isinstance(value, (list, tuple)):
        return all(_encodable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, (str, bytes)) and _encodable(v, depth + 1) for k, v in value.items()
        )
    return False
