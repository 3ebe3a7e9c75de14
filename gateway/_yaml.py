"""YAML with line numbers: parse into PyYAML's node tree, then check it collecting every problem.

``yaml.safe_load`` throws the marks away; ``compose`` keeps the nodes, and each node knows its
line. A ``Section`` wraps one mapping of the tree: it refuses keys that are not strings, given
twice or unknown, and its getters check one value each (type, range, format). A wrong value is
recorded in the shared ``Problems`` as ``FILE line N: key.path: message`` and replaced by its
default, so one pass over a file finds all of its problems.

rpccore._naming reads its naming file the same way, failing on the first problem.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection
from enum import StrEnum
from typing import Final, TypeVar

import yaml

T = TypeVar("T")
U = TypeVar("U")
E = TypeVar("E", bound=StrEnum)

_STR: Final = "tag:yaml.org,2002:str"
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"
_BOOL: Final = "tag:yaml.org,2002:bool"
_NULL: Final = "tag:yaml.org,2002:null"
# Turns an int, float or bool scalar into its value with YAML's own rules (0x1f, 1_000, .inf).
_SCALARS: Final = yaml.constructor.SafeConstructor()


class MalformedYaml(ValueError):
    """The text is not YAML; ``line`` (1-based) is where the parser gave up, when it says."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


def compose(text: str) -> yaml.Node | None:
    """The node tree of the one YAML document in ``text``; None when it holds no document."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = ", ".join(
            part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part
        )
        line = mark.line + 1 if mark is not None else None
        raise MalformedYaml(line, problem or str(exc)) from None


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def describe(node: yaml.Node) -> str:
    """How a message shows a value after "got": 'soon', 5, true, null, a mapping, a list."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _STR:
        return repr(node.value)
    if node.tag == _NULL:
        return "null"
    return str(node.value)


def as_str(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) and node.tag == _STR else None


def _as_int(node: yaml.Node) -> int | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
        return _SCALARS.construct_yaml_int(node)
    return None


def _as_number(node: yaml.Node) -> float | None:
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.tag == _INT:
        return float(_SCALARS.construct_yaml_int(node))
    if node.tag == _FLOAT:
        value = _SCALARS.construct_yaml_float(node)
        return value if math.isfinite(value) else None
    return None


def _as_bool(node: yaml.Node) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
        return _SCALARS.construct_yaml_bool(node)
    return None


def one_of(choices: Collection[str]) -> str:
    """``a or b`` for two choices, ``one of a, b, c`` for more."""
    items = list(choices)
    return " or ".join(items) if len(items) <= 2 else "one of " + ", ".join(items)


class Problems:
    """Every problem found in one file, each a line of the final message, in line order."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._found: list[tuple[int, str]] = []

    def add(self, line: int, path: str, message: str) -> None:
        text = f"{path}: {message}" if path else message
        self._found.append((line, f"{self.source} line {line}: {text}"))

    def messages(self) -> list[str]:
        return [message for _, message in sorted(self._found, key=lambda found: found[0])]


class Section:
    """One mapping of the file under ``path`` (``""`` for the top level), its keys checked.

    ``line`` is where the mapping is introduced (its key's line), for "required" problems.
    ``keys`` lists the known keys; None accepts any string key (a mapping of names). A null
    node, or no node, is an empty section: every getter returns its default.
    """

    def __init__(
        self,
        problems: Problems,
        path: str,
        line: int,
        node: yaml.Node | None,
        keys: Collection[str] | None,
    ) -> None:
        self.problems = problems
        self.path = path
        self.line = line
        self._entries: dict[str, tuple[int, yaml.Node]] = {}
        self._refused = False  # not a mapping: already reported, nothing more to say
        if node is None or is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            problems.add(line_of(node), path, f"expected a mapping, got {describe(node)}")
            self._refused = True
            return
        first: dict[str, int] = {}
        for key, value in node.value:
            name = as_str(key)
            if name is None:
                problems.add(line_of(key), path, f"a key must be a string, got {describe(key)}")
                continue
            if name in first:
                where = f"first on line {first[name]}"
                problems.add(line_of(key), self.path_of(name), f"given twice ({where})")
                continue
            first[name] = line_of(key)
            if keys is not None and name not in keys:
                problems.add(line_of(key), self.path_of(name), _unknown(name, keys))
                continue
            self._entries[name] = (line_of(key), value)

    def path_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def line_of(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else self.line

    def node(self, key: str) -> yaml.Node | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def report(self, key: str, message: str, node: yaml.Node | None = None) -> None:
        """Record a problem with ``key``, on the line of ``node`` or else of the key."""
        line = line_of(node) if node is not None else self.line_of(key)
        self.problems.add(line, self.path_of(key), message)

    def refuse_name(self, key: str, expected: str) -> None:
        """Record that ``key`` itself (a name in a mapping of names) is not ``expected``."""
        self.problems.add(self.line_of(key), self.path, f"expected {expected}, got {key!r}")

    def require(self, key: str, what: str) -> bool:
        """Whether ``key`` is given; if not, a "required" problem on the section's line."""
        if key in self._entries:
            return True
        if not self._refused:
            self.problems.add(self.line, self.path_of(key), f"required ({what})")
        return False

    def section(self, key: str, keys: Collection[str] | None) -> Section:
        return Section(self.problems, self.path_of(key), self.line_of(key), self.node(key), keys)

    def get(self, key: str, default: T, parse: Callable[[yaml.Node], T | None], expected: str) -> T:
        """The value of ``key`` as ``parse`` reads it; ``default`` when absent or refused."""
        node = self.node(key)
        if node is None:
            return default
        value = parse(node)
        if value is None:
            self.report(key, f"expected {expected}, got {describe(node)}", node)
            return default
        return value

    def string(self, key: str, default: T, parse: Callable[[str], T | None], expected: str) -> T:
        """A string value, read by ``parse`` (None refuses it)."""
        return self.get(key, default, lambda node: _then(as_str(node), parse), expected)

    def flag(self, key: str, default: bool) -> bool:
        return self.get(key, default, _as_bool, "true or false")

    def integer(self, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        expected = (
            f"an integer >= {minimum}"
            if maximum is None
            else f"an integer from {minimum} to {maximum}"
        )
        return self.get(
            key,
            default,
            lambda node: _then(
                _as_int(node),
                lambda n: n if n >= minimum and (maximum is None or n <= maximum) else None,
            ),
            expected,
        )

    def seconds(self, key: str, default: float) -> float:
        """A number of seconds, > 0."""
        return self.get(
            key, default, lambda node: _then(_as_number(node), _positive), "a number > 0"
        )

    def choice(self, key: str, default: E) -> E:
        """A member of ``default``'s StrEnum, by value."""
        members = {member.value: member for member in type(default)}
        return self.get(
            key, default, lambda node: _then(as_str(node), members.get), one_of(members)
        )

    def strings(
        self,
        key: str,
        default: tuple[T, ...],
        parse: Callable[[str], T | None],
        expected: str,
        *,
        single: bool = False,
        nonempty: bool = False,
    ) -> tuple[T, ...]:
        """A list of strings, each read by ``parse`` and refused on its own line; an entry given
        twice is refused too. ``single`` also accepts one bare string."""
        node = self.node(key)
        if node is None:
            return default
        if single and as_str(node) is not None:
            items = [node]
        elif isinstance(node, yaml.SequenceNode):
            items = node.value
        else:
            wanted = f"{expected} or a list of them" if single else "a list"
            self.report(key, f"expected {wanted}, got {describe(node)}", node)
            return default
        if nonempty and not items:
            self.report(key, "expected at least one entry, got an empty list", node)
        values: list[T] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            here = f"{key}[{index}]" if isinstance(node, yaml.SequenceNode) else key
            text = as_str(item)
            value = _then(text, parse)
            if text is None or value is None:
                self.report(here, f"expected {expected}, got {describe(item)}", item)
            elif text in seen:
                self.report(here, f"{text!r} is listed twice (first as {key}[{seen[text]}])", item)
            else:
                seen[text] = index
                values.append(value)
        return tuple(values)

    def items(self, key: str) -> list[tuple[str, yaml.Node]]:
        """The entries of a list value with their paths (``key[i]``); none when absent or null."""
        node = self.node(key)
        if node is None or is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.report(key, f"expected a list, got {describe(node)}", node)
            return []
        return [(f"{self.path_of(key)}[{index}]", item) for index, item in enumerate(node.value)]


def _then(value: T | None, parse: Callable[[T], U | None]) -> U | None:
    return None if value is None else parse(value)


def _positive(value: float) -> float | None:
    return value if value > 0 else None


def _unknown(name: str, keys: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(keys), n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (known keys: {', '.join(keys)})"
