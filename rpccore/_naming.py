"""The naming file: service names mapped to ZeroMQ endpoints, in YAML.

    calc: [tcp://127.0.0.1:4242, tcp://127.0.0.1:4243]
    users: tcp://127.0.0.1:5000          # one endpoint may be a plain string
    local: ipc:///run/zerogate/local.sock

``load_names(path)`` reads and checks one; ``resolve(target, names)`` turns a target (an
endpoint, or a name looked up in the file ``names`` or ``$ZEROGATE_NAMES``) into endpoints.
Every problem is a ``NamingError`` (a ``ValueError``) whose message names the file and the
line. Pure: no sockets, no driver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Final

import yaml

ENV_VAR: Final = "ZEROGATE_NAMES"
ENDPOINT_FORMS: Final = "tcp://host:port, ipc://path or inproc://name"

_STR_TAG: Final = "tag:yaml.org,2002:str"
_ENDPOINT: Final = re.compile(
    r"tcp://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?:\*|[0-9]{1,5})"
    r"|ipc://\S+"
    r"|inproc://\S+"
)

NamesPath = str | os.PathLike[str]


class NamingError(ValueError):
    """A naming file is missing or malformed, or a name is not in it."""


def is_endpoint(text: str) -> bool:
    """Whether ``text`` looks like a ZeroMQ endpoint we can connect or bind to."""
    if _ENDPOINT.fullmatch(text) is None:
        return False
    port = text.rpartition(":")[2]
    return not text.startswith("tcp://") or port == "*" or 0 < int(port) < 65536


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = node.tag.rpartition(":")[2]
    return "null" if kind == "null" else f"{kind} {node.value}"


def _is_str(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG


def load_names(path: NamesPath) -> dict[str, list[str]]:
    """Read the naming file at ``path``: ``{name: [endpoint, ...]}``, in file order.

    An empty file names nothing. Refused with a ``NamingError`` naming the file and line:
    a missing or unreadable file, malformed YAML, a top level that is not a mapping, a
    name given twice or that is not a string, no endpoints, and an endpoint that is not a
    string or not a ZeroMQ endpoint.
    """
    where = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise NamingError(f"{where}: no such naming file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NamingError(f"{where}: cannot read the naming file: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = ", ".join(
            part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part
        )
        raise NamingError(f"{where}{line}: malformed YAML: {problem or exc}") from None
    if root is None:
        return {}

    def error(node: yaml.Node, message: str) -> NamingError:
        return NamingError(f"{where} line {node.start_mark.line + 1}: {message}")

    if not isinstance(root, yaml.MappingNode):
        raise error(root, f"the top level must map names to endpoints, not {_kind(root)}")
    names: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for key, value in root.value:
        if not _is_str(key):
            raise error(key, f"a name must be a string, not {_kind(key)}")
        if not key.value:
            raise error(key, "a name must not be empty")
        name: str = key.value
        if name in names:
            raise error(key, f"{name!r}: named twice (first on line {first_line[name]})")
        first_line[name] = key.start_mark.line + 1
        items = value.value if isinstance(value, yaml.SequenceNode) else [value]
        if not items:
            raise error(value, f"{name!r}: no endpoints")
        endpoints: list[str] = []
        for item in items:
            if not _is_str(item):
                raise error(item, f"{name!r}: an endpoint must be a string, not {_kind(item)}")
            if not is_endpoint(item.value):
                raise error(
                    item, f"{name!r}: {item.value!r} is not a ZeroMQ endpoint ({ENDPOINT_FORMS})"
                )
            endpoints.append(item.value)
        names[name] = endpoints
    return names


def resolve(target: str, names: NamesPath | None = None) -> list[str]:
    """The endpoints ``target`` stands for: itself when it contains ``://``, else the
    endpoints of that name in the naming file ``names`` (default: ``$ZEROGATE_NAMES``)."""
    if "://" in target:
        return [target]
    if names is None:
        names = os.environ.get(ENV_VAR) or None
        source = f"{names} (${ENV_VAR})"
    else:
        source = os.fspath(names)
    if names is None:
        raise NamingError(
            f"{target!r} is not an endpoint ({ENDPOINT_FORMS}) and there is no naming file "
            f"to look it up in (none given, and ${ENV_VAR} is not set)"
        )
    table = load_names(names)
    if target not in table:
        known = ", ".join(sorted(table)) or "none"
        raise NamingError(f"{source}: no service named {target!r} (names: {known})")
    return list(table[target])


def resolve_all(targets: str | Iterable[str], names: NamesPath | None = None) -> list[str]:
    """``resolve`` each target (a string is one target); the endpoints, in order."""
    if isinstance(targets, str):
        return resolve(targets, names)
    return [endpoint for target in targets for endpoint in resolve(target, names)]
