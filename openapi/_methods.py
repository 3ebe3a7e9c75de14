"""What the document needs to know about one exposed method, read from its description
entry the same way the gateway's argument mapping reads it (``gateway.args.signature``), so
the document describes exactly the calls the gateway accepts."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.args import signature
from gateway.registry import MethodInfo

from ._schemas import MISSING, json_data


@dataclass(frozen=True, slots=True)
class Arg:
    """One sendable argument: its published schema (None: not annotated) and, when it has
    one, its published default as JSON data (``MISSING``: none, or none JSON can show)."""

    name: str
    schema: Any
    has_default: bool
    default: Any = MISSING


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    doc: str | None
    args: tuple[Arg, ...] | None  # None: the backend publishes no names (zerorpc 0.6.3)
    varargs: str | None
    stream: bool | None  # None: the backend does not say
    returns: Any  # the published ``returns`` schema, None when absent
    safe: bool

    @property
    def typed(self) -> bool:
        return self.args is not None

    def required(self, exclude: frozenset[str] = frozenset()) -> list[str]:
        return [a.name for a in self.args or () if not a.has_default and a.name not in exclude]


def method_of(info: MethodInfo) -> Method:
    entry = info.entry
    sig = signature(entry)
    args: tuple[Arg, ...] | None = None
    if sig is not None:
        schemas = _schemas_by_name(entry.get("args"))
        args = tuple(
            Arg(
                name,
                schemas.get(name),
                name in sig.defaults,
                # Shown in request bodies, where {"$base64": ...} would be read as an object.
                json_data(sig.defaults[name], base64=False) if name in sig.defaults else MISSING,
            )
            for name in sig.names
        )
    doc = entry.get("doc")
    return Method(
        service=info.service,
        name=info.name,
        # zerorpc 0.6.3's _zerorpc_help answers the raw docstring, indentation and all.
        doc=inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None,
        args=args,
        varargs=sig.varargs if sig is not None else None,
        stream=info.streams,
        returns=entry.get("returns"),
        safe=info.safe,
    )


def _schemas_by_name(args: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for arg in args if isinstance(args, list) else ():
        if isinstance(arg, Mapping) and isinstance(arg.get("name"), str) and "schema" in arg:
            found.setdefault(arg["name"], arg["schema"])
    return found


def split_doc(doc: str | None) -> tuple[str | None, str]:
    """(summary, description): the docstring's first line, and the rest."""
    if not doc:
        return None, ""
    first, _, rest = doc.partition("\n")
    return first.strip() or None, rest.strip()
