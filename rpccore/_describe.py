"""Describing a remote service, the pure part: which calls to make and how to merge them.

Discovery asks ``_zerorpc_inspect``; a zerorpc 0.6.3 server on Python 3.11 always fails
it (no ``inspect.getargspec``), so we fall back to ``_zerorpc_name``, ``_zerorpc_list``
and one ``_zerorpc_help`` per method, and build the same shape with ``args: None``
(unknown) and ``stream: None`` (the remote cannot tell).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def from_inspect(answer: Any) -> dict[str, Any]:
    """Normalise an ``_zerorpc_inspect`` answer (ours or the reference's)."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("methods"), Mapping):
        raise ValueError(f"_zerorpc_inspect answered {answer!r:.80}")
    methods: dict[str, Any] = {}
    for name, raw in answer["methods"].items():
        entry = dict(raw) if isinstance(raw, Mapping) else {}
        entry.setdefault("args", None)
        entry.setdefault("doc", None)
        entry.setdefault("stream", None)
        methods[str(name)] = entry
    doc = answer.get("doc")  # our extension: the service's docstring
    return {
        "name": answer.get("name"),
        "doc": doc if isinstance(doc, str) else None,
        "methods": methods,
        "introspection": "inspect",
    }


def from_fallback(name: Any, docs: Mapping[str, Any]) -> dict[str, Any]:
    """The description built from ``_zerorpc_name`` + ``_zerorpc_list`` + ``_zerorpc_help``."""
    return {
        "name": name,
        "doc": None,
        "methods": {
            method: {"args": None, "doc": doc if isinstance(doc, str) else None, "stream": None}
            for method, doc in docs.items()
        },
        "introspection": "fallback",
    }
