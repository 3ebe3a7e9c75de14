"""What the document needs to know about one exposed method, read from its description
entry the same way the gateway's argument mapping reads it (``gateway.args.signature``), so
the document describes exactly the calls the gateway accepts."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.args import Signature, signature
from gateway.registry import MethodInfo

from ._schemas import MISSING, json_data


@dataclass(frozen=True, slots=True)
class Arg:
    """One sendable argument: its published schema (None: not annotated) and, when it has
    one, its published default as JSON data (``MISSING``: none, or none JSON can show).
    ``default_repr`` is the published text of a default msgpack cannot carry: the backend
    has it, but the gateway cannot send it, so it never fills a gap."""

    name: str
    schema: Any
    has_default: bool
    default: Any = MISSING
    default_repr: str | None = None


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
        """The arguments a call must give, beside the ``exclude`` ones (given elsewhere, as
        path parameters): those without a default, and those whose default cannot be sent
        that come before one always given (the gateway cannot fill their gap)."""
        args = self.args or ()
        given = (i for i, a in enumerate(args) if a.name in exclude or not a.has_default)
        last = max(given, default=-1)
        return [
            a.name
            for i, a in enumerate(args)
            if a.name not in exclude
            and (not a.has_default or (a.default_repr is not None and i < last))
        ]

    def needed_with(self, exclude: frozenset[str] = frozenset()) -> dict[str, list[str]]:
        """For each argument (and ``*args``), the earlier arguments that must be given with
        it because their default cannot be sent (JSON Schema's ``dependentRequired``)."""
        args = [a for a in self.args or () if a.name not in exclude]
        required = set(self.required(exclude))
        needed: dict[str, list[str]] = {}
        unsendable: list[str] = []
        for arg in args:
            if unsendable:
                needed[arg.name] = list(unsendable)
            if arg.default_repr is not None and arg.name not in required:
                unsendable.append(arg.name)
        if unsendable and self.varargs is not None:
            needed[self.varargs] = list(unsendable)  # extra arguments follow every named one
        return needed


def method_of(info: MethodInfo) -> Method:
    entry = info.entry
    sig = signature(entry)
    args: tuple[Arg, ...] | None = None
    if sig is not None:
        schemas = _schemas_by_name(entry.get("args"))
        args = tuple(_arg(name, schemas.get(name), sig) for name in sig.names)
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


def _arg(name: str, schema: Any, sig: Signature) -> Arg:
    if name not in sig.defaults:
        return Arg(name, schema, False)
    default = sig.defaults[name]
    if name in sig.unsendable:
        return Arg(name, schema, True, MISSING, str(default))
    # Shown in request bodies, where {"$base64": ...} would be read as an object.
    return Arg(name, schema, True, json_data(default, base64=False))


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
