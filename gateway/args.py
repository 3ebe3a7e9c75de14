"""Mapping HTTP arguments onto a positional RPC call, using a method's description entry.

ZeroRPC calls are positional only, so every named argument an HTTP client gives (JSON object
keys, query and path parameters) is placed by the argument order introspection published:
``entry["args"]`` is ``[{"name", "default"?, "kind"?, "schema"?}]`` and ``entry["varargs"]``
names a ``*args`` parameter. Rules:

- Arguments of kind ``"self"`` are never sent. Entries without ``kind`` (other servers) mark
  the bound instance only by a *first* argument named ``self``. Positional-only arguments
  (kind ``"positional"``) may still be named: we only ever send positions.
- A skipped argument that has a default, followed by one the caller gave, is filled with the
  published default. Trailing defaulted arguments the caller left out are not sent: the
  backend applies its own defaults, which is exact even when the published one is only the
  ``repr`` of a value msgpack could not carry. Such a default (marked ``"default_repr":
  true``) never fills a gap: sending its text would hand the method a string instead of
  its default, so the caller must give that argument (400 ``default_not_sendable``).
- The varargs name may be given an array, appended after the named arguments.
- An empty body is checked like an empty array: a missing argument is our 400, not the
  backend's TypeError.
- ``entry["args"] is None`` (a zerorpc 0.6.3 backend publishes no names): arrays pass
  through unchecked and named arguments are refused with a hint to send an array.
- Query and path values are JSON when they parse as JSON, else strings; a repeated query key
  is an error (send one JSON array instead), as is a name given in two places.

Every problem found is reported at once, as one ``invalid_argument`` Problem whose
``errors`` are ``[{"loc", "msg", "type"}]`` and whose ``detail`` is a one-line summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

from .problems import Problem, invalid_argument

Location = Literal["path", "query", "body"]
Named = Mapping[str, tuple[Location, Any]]

# The `type` strings of the errors list.
MISSING: Final = "missing_argument"
UNEXPECTED: Final = "unexpected_argument"
CONFLICTING: Final = "conflicting_argument"
REPEATED: Final = "repeated_argument"
INVALID_TYPE: Final = "invalid_type"
NAMES_UNKNOWN: Final = "argument_names_unknown"
UNSENDABLE_DEFAULT: Final = "default_not_sendable"

# A hostile body may name thousands of unknown arguments; the answer stays small.
MAX_ERRORS: Final = 50
_MAX_NAMES_IN_DETAIL: Final = 5


_NO_NAMES: Final[frozenset[str]] = frozenset()


class Signature(NamedTuple):
    """What a description entry says about sending arguments: the names in call order
    (never ``self``), the published defaults by name, the ``*args`` name, and the names
    whose published default is only the ``repr`` of a value msgpack cannot carry (they have
    a default, but it cannot be sent)."""

    names: list[str]
    defaults: dict[str, Any]
    varargs: str | None
    unsendable: frozenset[str] = _NO_NAMES


# Entries are immutable once described and live as long as their description: parse each
# once. Keyed by id() with the entry kept, so an id reused by a new entry cannot match.
_SIGNATURES: dict[int, tuple[Mapping[str, Any], Signature | None]] = {}
_SIGNATURES_MAX: Final = 4096


def signature(entry: Mapping[str, Any]) -> Signature | None:
    """The sendable arguments of a description entry; None when the names are unknown
    (``args`` is None, or not in a shape we can trust)."""
    cached = _SIGNATURES.get(id(entry))
    if cached is not None and cached[0] is entry:
        return cached[1]
    found = _parse_signature(entry)
    if len(_SIGNATURES) >= _SIGNATURES_MAX:
        _SIGNATURES.clear()
    _SIGNATURES[id(entry)] = (entry, found)
    return found


def _parse_signature(entry: Mapping[str, Any]) -> Signature | None:
    args = entry.get("args")
    if not isinstance(args, list):
        return None
    names: list[str] = []
    defaults: dict[str, Any] = {}
    unsendable = _NO_NAMES
    for arg in args:
        if not isinstance(arg, dict) or type(name := arg.get("name")) is not str:
            return None
        kind = arg.get("kind")
        if kind == "self" or (kind is None and name == "self" and not names):
            continue
        names.append(name)
        if "default" in arg:
            defaults[name] = arg["default"]
            if arg.get("default_repr") is True:
                unsendable = unsendable | {name}
    varargs = entry.get("varargs")
    # _make skips NamedTuple's Python-level __new__: a third of this function's time.
    return Signature._make((names, defaults, varargs if type(varargs) is str else None, unsendable))


class _Complaints:
    """The errors found so far, and the phrases of the one-line detail."""

    __slots__ = ("errors", "phrases")

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.phrases: list[str] = []

    def add(self, loc: Sequence[Any], msg: str, type_: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"loc": [_loc_part(p) for p in loc], "msg": msg, "type": type_})

    def problem(self, service: str, method: str) -> Problem:
        detail = f"{service}.{method}: {'; '.join(self.phrases)}"
        return invalid_argument(detail, self.errors, rpc={"service": service, "method": method})

    def raise_if_any(self, service: str, method: str) -> None:
        if self.errors:
            raise self.problem(service, method)


def _loc_part(part: Any) -> str | int:
    # msgpack bodies may have keys of any type; the problem document must stay JSON.
    if isinstance(part, (str, int)) and not isinstance(part, bool):
        return part
    return repr(part)


def _quoted(names: Iterable[Any]) -> str:
    shown = [f"'{n}'" if isinstance(n, str) else repr(n) for n in names]
    if len(shown) > _MAX_NAMES_IN_DETAIL:
        more = len(shown) - _MAX_NAMES_IN_DETAIL
        return f"{', '.join(shown[:_MAX_NAMES_IN_DETAIL])} and {more} more"
    return ", ".join(shown)


def _plural(word: str, count: int) -> str:
    return word if count == 1 else f"{word}s"


def _arg_list(sig: Signature) -> str:
    names = list(sig.names)
    if sig.varargs:
        names.append(f"*{sig.varargs}")
    return ", ".join(names) if names else "no arguments"


# -- bodies --------------------------------------------------------------------------


def args_from_body(entry: Mapping[str, Any], body: Any, *, service: str, method: str) -> list[Any]:
    """The positional arguments for a decoded request body: an array (positional), an
    object (named), or None (an empty body, checked like an empty array)."""
    if body is None:
        body = []
    if isinstance(body, list):
        sig = signature(entry)
        if sig is not None and not _arity_fits(sig, len(body)):
            complaints = _Complaints()
            _check_arity(sig, len(body), complaints)
            raise complaints.problem(service, method)
        return body
    if isinstance(body, dict):
        sig = signature(entry)
        args = None if sig is None else _bind_plain_object(sig, body)
        if args is not None:
            return args
        named: dict[str, tuple[Location, Any]] = {k: ("body", v) for k, v in body.items()}
        return args_from_named(entry, named, service=service, method=method)
    complaints = _Complaints()
    what = _json_type(body)
    complaints.add(["body"], f"must be an array or an object, not {what}", INVALID_TYPE)
    complaints.phrases.append(
        f"the body must be a JSON array (positional arguments) or object (named arguments), "
        f"not {what}"
    )
    raise complaints.problem(service, method)


def _json_type(value: Any) -> str:
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _arity_fits(sig: Signature, count: int) -> bool:
    names = sig.names
    if count == len(names):
        return True
    if count > len(names):
        return sig.varargs is not None
    return all(name in sig.defaults for name in names[count:])


def _check_arity(sig: Signature, count: int, complaints: _Complaints) -> None:
    names, defaults = sig.names, sig.defaults
    if count > len(names) and sig.varargs is None:
        for index in range(len(names), count):
            complaints.add(["body", index], "unexpected extra argument", UNEXPECTED)
        complaints.phrases.append(
            f"takes {len(names)} {_plural('argument', len(names))} ({_arg_list(sig)}), got {count}"
        )
    if count >= len(names):
        return
    missing = [(i, n) for i, n in enumerate(names[count:], count) if n not in defaults]
    for index, name in missing:
        complaints.add(["body", index], f"missing required argument '{name}'", MISSING)
    if missing:
        listed = _quoted(name for _, name in missing)
        complaints.phrases.append(f"missing required {_plural('argument', len(missing))} {listed}")


def _bind_plain_object(sig: Signature, body: dict[Any, Any]) -> list[Any] | None:
    """The fast path of an object body that names only arguments (no ``*args``) and
    every required one, leaving no gap a default cannot fill; None for anything else, which
    ``_bind_named`` then explains."""
    args: list[Any] = []
    found = given_up_to = 0
    gap = -1  # the first position left to a default that cannot be sent
    for name in sig.names:
        if name in body:
            args.append(body[name])
            found += 1
            given_up_to = len(args)
        elif name in sig.defaults:
            if gap < 0 and name in sig.unsendable:
                gap = len(args)
            args.append(sig.defaults[name])
        else:
            return None
    if found != len(body) or 0 <= gap < given_up_to:
        return None
    return args[:given_up_to]


# -- named arguments -----------------------------------------------------------------


def args_from_named(
    entry: Mapping[str, Any],
    named: Named,
    *,
    service: str,
    method: str,
    missing_in: Location = "body",
) -> list[Any]:
    """The positional arguments for named ones, each with where it came from (its ``loc``).
    ``missing_in`` is where a missing required argument should have been given."""
    complaints = _Complaints()
    args = _bind_named(entry, named, complaints, missing_in)
    complaints.raise_if_any(service, method)
    return args


def _bind_named(
    entry: Mapping[str, Any], named: Named, complaints: _Complaints, missing_in: Location
) -> list[Any]:
    sig = signature(entry)
    if sig is None:
        if named:
            _refuse_names(named, complaints)
        return []
    remaining = dict(named)
    args: list[Any] = []
    missing: list[str] = []
    unsendable: list[tuple[int, str]] = []  # gaps only the repr of a default could fill
    given_up_to = 0  # how many leading params are covered, gaps filled with defaults
    for index, name in enumerate(sig.names):
        found = remaining.pop(name, None)
        if found is not None:
            args.append(found[1])
            given_up_to = index + 1
        elif name in sig.defaults:
            args.append(sig.defaults[name])
            if name in sig.unsendable:
                unsendable.append((index, name))
        else:
            args.append(None)
            missing.append(name)
            complaints.add([missing_in, name], "missing required argument", MISSING)
    if missing:
        complaints.phrases.append(
            f"missing required {_plural('argument', len(missing))} {_quoted(missing)}"
        )
    extra = _varargs(sig, remaining, complaints)
    _refuse_unexpected(sig, remaining, complaints)
    # Every named position must be sent before the extra ones.
    sent = len(args) if extra else given_up_to
    _refuse_unsendable([name for index, name in unsendable if index < sent], complaints, missing_in)
    return args + extra if extra else args[:given_up_to]


def _refuse_unsendable(names: list[str], complaints: _Complaints, missing_in: Location) -> None:
    for name in names:
        complaints.add(
            [missing_in, name],
            "give it explicitly: its default cannot be sent (a later argument is given)",
            UNSENDABLE_DEFAULT,
        )
    if names:
        its = "its" if len(names) == 1 else "their"
        complaints.phrases.append(
            f"give {_quoted(names)} explicitly: {its} default cannot be sent, and a later "
            "argument is given"
        )


def _varargs(sig: Signature, remaining: dict[str, Any], complaints: _Complaints) -> list[Any]:
    if sig.varargs is None or sig.varargs not in remaining:
        return []
    where, value = remaining.pop(sig.varargs)
    if isinstance(value, (list, tuple)):
        return list(value)
    complaints.add([where, sig.varargs], "must be an array of the extra arguments", INVALID_TYPE)
    complaints.phrases.append(f"'{sig.varargs}' must be an array (it is *{sig.varargs})")
    return []


def _refuse_unexpected(sig: Signature, remaining: Named, complaints: _Complaints) -> None:
    for name, (where, _) in remaining.items():
        complaints.add([where, name], "unexpected argument", UNEXPECTED)
    if remaining:
        count = len(remaining)
        complaints.phrases.append(
            f"unexpected {_plural('argument', count)} {_quoted(remaining)} "
            f"(arguments: {_arg_list(sig)})"
        )


def _refuse_names(named: Named, complaints: _Complaints) -> None:
    for name, (where, _) in named.items():
        complaints.add([where, name], "argument names are unknown", NAMES_UNKNOWN)
    complaints.phrases.append(
        "this backend (e.g. zerorpc 0.6.3) does not publish argument names, so named "
        "arguments cannot be placed; send a JSON array of positional arguments"
    )


# -- query and path parameters -------------------------------------------------------

# A JSON text starts with one of these (after optional whitespace); anything else is a
# plain string, without paying for a failed parse.
_JSON_STARTS: Final = frozenset('-0123456789tfn"[{ \t\r\n')
_MAX_QUERY_DEPTH: Final = 64


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_parse_json: Final = json.JSONDecoder(parse_constant=_no_constant).decode


def query_value(text: str) -> Any:
    """A query or path value: its JSON value when it is JSON (``42``, ``true``,
    ``"007"``, ``[1,2]``), else the text itself (``hello``, ``007``). ``NaN``, numbers
    beyond Python's digit limit and values nested deeper than 64 stay strings."""
    if not text or text[0] not in _JSON_STARTS:
        return text
    try:
        value = _parse_json(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return text
    if text.count("[") + text.count("{") > _MAX_QUERY_DEPTH and _too_deep(value):
        return text
    return value


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_QUERY_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (list, dict)))
    return False


def gather_named(
    *,
    path: Mapping[str, Any],
    query: Iterable[tuple[str, str]],
    body: Any,
    service: str,
    method: str,
) -> dict[str, tuple[Location, Any]]:
    """Path parameters, query parameters (as ``(key, value)`` pairs, repeats included) and
    an optional object body as named arguments. Path and query strings are read with
    ``query_value``; a name given twice is an error."""
    complaints = _Complaints()
    named = _gather(path, query, body, complaints)
    complaints.raise_if_any(service, method)
    return named


def _gather(
    path: Mapping[str, Any], query: Iterable[tuple[str, str]], body: Any, complaints: _Complaints
) -> dict[str, tuple[Location, Any]]:
    named: dict[str, tuple[Location, Any]] = {}
    conflicts: dict[str, None] = {}  # ordered and without repeats
    repeated: dict[str, int] = {}

    def put(where: Location, name: str, value: Any) -> None:
        before = named.get(name)
        if before is None:
            named[name] = (where, value)
        elif before[0] == where == "query":
            repeated[name] = repeated.get(name, 1) + 1
        else:
            conflicts[name] = None
            complaints.add([where, name], f"also given in the {before[0]}", CONFLICTING)

    for name, raw in path.items():
        put("path", name, query_value(raw) if isinstance(raw, str) else raw)
    for name, text in query:
        put("query", name, query_value(text))
    if isinstance(body, dict):
        for name, value in body.items():
            put("body", name, value)
    elif body is not None:
        complaints.add(["body"], "must be an object of named arguments", INVALID_TYPE)
        complaints.phrases.append(
            f"with path or query parameters the body must be a JSON object, not {_json_type(body)}"
        )
    _report_repeats(repeated, complaints)
    if conflicts:
        complaints.phrases.append(
            f"{_plural('argument', len(conflicts))} {_quoted(conflicts)} given in two places"
        )
    return named


def _report_repeats(repeated: Mapping[str, int], complaints: _Complaints) -> None:
    for name, count in repeated.items():
        complaints.add(
            ["query", name],
            f"given {count} times; send one value (a JSON array for a list)",
            REPEATED,
        )
    if repeated:
        complaints.phrases.append(
            f"query {_plural('parameter', len(repeated))} {_quoted(repeated)} repeated; "
            f"send one value, a JSON array for a list (?ids=[1,2])"
        )


def args_for_route(
    entry: Mapping[str, Any],
    *,
    path: Mapping[str, Any],
    query: Iterable[tuple[str, str]],
    body: Any,
    service: str,
    method: str,
    missing_in: Location = "body",
) -> list[Any]:
    """The positional arguments of a REST route or a GET call. A body alone counts as
    ``args_from_body`` reads it (an array is fine); with path or query parameters, or with
    none at all, everything is named (a missing argument is reported in ``missing_in``)
    and every problem is reported together."""
    query = list(query)
    if not path and not query and body is not None:
        return args_from_body(entry, body, service=service, method=method)
    complaints = _Complaints()
    named = _gather(path, query, body, complaints)
    args = _bind_named(entry, named, complaints, missing_in)
    complaints.raise_if_any(service, method)
    return args


__all__ = [
    "CONFLICTING",
    "INVALID_TYPE",
    "MAX_ERRORS",
    "MISSING",
    "NAMES_UNKNOWN",
    "REPEATED",
    "UNEXPECTED",
    "UNSENDABLE_DEFAULT",
    "Location",
    "Named",
    "Signature",
    "args_for_route",
    "args_from_body",
    "args_from_named",
    "gather_named",
    "query_value",
    "signature",
]
