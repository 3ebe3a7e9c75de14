"""The pure half of ``zerogate rpc``: reading call arguments and printing results and
service descriptions. No I/O and no gevent here, so all of it is easy to test.

Descriptions are the shape ``rpccore`` clients' ``describe()`` returns:
``{"name", "methods": {name: {"args": [{"name", "default"?, "kind"?}] | None, "doc",
"varargs"?, ...}}}``.
"""

from __future__ import annotations

import base64
import json
import pprint
from collections.abc import Iterable, Mapping
from typing import Any

UNDOCUMENTED = "<undocumented>"


# -- arguments ---------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_param(text: str) -> Any:
    """``text`` as JSON; raises ValueError when it is not valid JSON. ``NaN`` and
    ``Infinity``, which Python's parser accepts, are not JSON and stay strings."""
    return json.loads(text, parse_constant=_no_constants)


def parse_params(texts: Iterable[str], *, mode: str) -> list[Any]:
    """Call arguments from the command line. ``mode`` is "auto" (JSON when valid JSON,
    else the string itself), "raw" (all strings) or "json" (all JSON; ValueError names
    the first argument that is not)."""
    values: list[Any] = []
    for index, text in enumerate(texts, 1):
        if mode == "raw":
            values.append(text)
            continue
        try:
            values.append(parse_param(text))
        except ValueError:
            if mode == "json":
                raise ValueError(f"argument {index} is not valid JSON: {text!r}") from None
            values.append(text)
    return values


# -- results -----------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """``value`` with JSON types only: bytes become their UTF-8 text, or
    ``{"$base64": ...}`` when they are not UTF-8; map keys become strings (a key that
    is not a string becomes its JSON text); tuples and sets become lists."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return value


def _json_key(key: Any) -> str:
    key = to_jsonable(key)
    return key if isinstance(key, str) else to_json(key)


def to_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, indent=indent, default=repr)


def format_result(value: Any, *, as_json: bool, one_line: bool = False) -> str:
    """A result as JSON or as Python's pprint (server order kept; ``one_line`` for
    stream items, so each item is exactly one line)."""
    if as_json:
        return to_json(value)
    width = 1 << 30 if one_line else 80
    return pprint.pformat(value, width=width, sort_dicts=False)


# -- descriptions ------------------------------------------------------------------


def service_name(description: Any) -> str:
    name = description.get("name") if isinstance(description, Mapping) else None
    return name if isinstance(name, str) else "N/A"


def signature(name: str, entry: Mapping[str, Any]) -> str:
    """``name(a, b, greeting='Hello', *rest)`` from an introspection entry, without
    ``self``; ``name(...)`` when the server did not tell the arguments."""
    args = entry.get("args")
    if not isinstance(args, list):
        return f"{name}(...)"
    args = [arg for arg in args if isinstance(arg, Mapping)]
    # Ours mark self with kind "self"; 0.6.3 has no kinds and lists self first.
    if not any("kind" in arg for arg in args) and args and args[0].get("name") == "self":
        args = args[1:]
    args = [arg for arg in args if arg.get("kind") != "self"]
    parts = []
    for arg in args:
        text = str(arg.get("name", "?"))
        parts.append(f"{text}={arg['default']!r}" if "default" in arg else text)
    positional_only = [i for i, arg in enumerate(args) if arg.get("kind") == "positional"]
    if positional_only:
        parts.insert(positional_only[-1] + 1, "/")
    varargs = entry.get("varargs")
    if isinstance(varargs, str):
        parts.append(f"*{varargs}")
    return f"{name}({', '.join(parts)})"


def _doc(entry: Mapping[str, Any]) -> str | None:
    doc = entry.get("doc")
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def listing(description: Mapping[str, Any]) -> str:
    """``[service]``, then each method, aligned, with the first line of its doc, else
    its signature, else ``<undocumented>``."""
    methods: Mapping[str, Any] = description.get("methods") or {}
    lines = [f"[{service_name(description)}]"]
    width = max((len(name) for name in methods), default=0)
    for name, entry in methods.items():
        doc = _doc(entry)
        if doc is not None:
            summary = doc.splitlines()[0]
        elif isinstance(entry.get("args"), list):
            summary = signature(name, entry)
        else:
            summary = UNDOCUMENTED
        lines.append(f"{name.ljust(width)} {summary}")
    return "\n".join(lines) + "\n"


def method_detail(description: Mapping[str, Any], method: str) -> str | None:
    """``[service]``, the signature and the whole doc of ``method``; None if unknown."""
    entry = (description.get("methods") or {}).get(method)
    if entry is None:
        return None
    doc = _doc(entry) or UNDOCUMENTED
    return f"[{service_name(description)}]\n{signature(method, entry)}\n\n{doc}\n"


def all_details(description: Mapping[str, Any]) -> str:
    """``[service]``, then every method's signature with its doc indented below."""
    blocks = [f"[{service_name(description)}]\n"]
    for name, entry in (description.get("methods") or {}).items():
        doc = _doc(entry) or UNDOCUMENTED
        body = "\n".join(f"    {line}".rstrip() for line in doc.splitlines())
        blocks.append(f"{signature(name, entry)}\n{body}\n")
    return "\n".join(blocks)
