"""Request bodies in, results out: JSON and msgpack, NDJSON and server-sent events.

Request bodies (``decode_body``):

- An empty body is None whatever its type (args.py checks it like an empty array).
- JSON for ``application/json``, any ``+json`` type, no ``Content-Type`` at all, and
  ``application/x-www-form-urlencoded``: ``curl -d '[1, 2]'`` sends that type, and it is
  the first thing most people try. A form body that is not JSON gets a 400 saying to send
  ``-H 'Content-Type: application/json'``. JSON must be UTF-8 (a ``charset`` other than
  UTF-8 is a 415; a leading BOM is skipped); a body of whitespace only is empty;
  ``NaN``/``Infinity`` and unpaired ``\\ud800`` escapes are refused (they are not JSON, and
  msgpack could not carry the latter); duplicate keys keep the last value, like
  ``json.loads``.
- msgpack for ``application/msgpack`` and ``application/x-msgpack``: bin stays bytes and
  extension values (timestamps included) pass through to the backend unchanged.
- Either is refused past ``MAX_BODY_DEPTH`` levels of nesting, in linear time.

Results (``encode_json``): bytes become a str when they are UTF-8, else
``{"$base64": ...}``; map keys become strings (bytes as text or base64 text, ``1``,
``1.5``, ``true``, ``null``, other keys as their JSON text); tuples become arrays. What JSON
cannot hold (NaN, infinities, msgpack extension values) is a 502 that names it and points
to ``Accept: application/msgpack``. The common result costs one ``json.dumps``: the value
is walked only when that refuses it. Bytes are never converted by a ``default=`` hook,
because ``json`` writes a msgpack ``ExtType`` (a tuple) as an array and only its bytes would
reach the hook: any bytes send the value down the walk, which sees the ``ExtType``.

Negotiation never answers 406: a result is JSON unless msgpack is preferred, a stream is
NDJSON unless ``text/event-stream`` is preferred. Streams have no msgpack form (DESIGN.md
names NDJSON and SSE only), so a client accepting only msgpack gets NDJSON, with bytes in
their JSON form.
"""

from __future__ import annotations

import binascii
import json
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final, TypeVar

import msgpack

from .problems import INTERNAL, Problem, invalid_argument

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
MSGPACK_LEGACY: Final = "application/x-msgpack"  # accepted on input, never sent
NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"
FORM: Final = "application/x-www-form-urlencoded"  # curl -d's default, read as JSON

MAX_BODY_DEPTH: Final = 64

# The `type` strings of the errors list of a refused body.
MALFORMED: Final = "malformed_body"
TOO_DEEP: Final = "too_deeply_nested"

_UTF8_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_ACCEPTED: Final = f"{JSON} (or any +json type), {MSGPACK} (or {MSGPACK_LEGACY}), or an empty body"
_FORM_HINT: Final = (
    f"; the body was sent as {FORM} (curl -d does that): send JSON with -H 'Content-Type: {JSON}'"
)


class ResultFormat(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"

    @property
    def media_type(self) -> str:
        return JSON if self is ResultFormat.JSON else MSGPACK


class StreamFormat(StrEnum):
    NDJSON = "ndjson"
    SSE = "sse"

    @property
    def media_type(self) -> str:
        return NDJSON if self is StreamFormat.NDJSON else SSE


# -- request bodies ------------------------------------------------------------------


class _BodyKind(StrEnum):
    JSON = "json"
    FORM = "form"
    MSGPACK = "msgpack"


def decode_body(data: bytes, content_type: str | None) -> Any:
    """The decoded request body: None when empty, else any JSON or msgpack value. Raises
    Problem: 415 for a type or charset we do not read, 400 for a body that does not parse."""
    if not data:
        return None
    kind = _body_kind(content_type)
    if kind is _BodyKind.MSGPACK:
        return _decode_msgpack(data)
    return _decode_json(data, from_form=kind is _BodyKind.FORM)


_kind_cache: dict[str | None, _BodyKind] = {None: _BodyKind.JSON, JSON: _BodyKind.JSON}
_CACHE_SIZE: Final = 256


def _body_kind(content_type: str | None) -> _BodyKind:
    kind = _kind_cache.get(content_type)
    if kind is None:
        kind = _parse_content_type(content_type or "")
        if len(_kind_cache) >= _CACHE_SIZE:
            _kind_cache.clear()
        _kind_cache[content_type] = kind
    return kind


def _parse_content_type(header: str) -> _BodyKind:
    main, _, params = header.partition(";")
    media = main.strip().lower()
    if media in (MSGPACK, MSGPACK_LEGACY):
        return _BodyKind.MSGPACK
    if not (media in (JSON, FORM, "") or (media.endswith("+json") and "/" in media)):
        raise Problem(415, f"cannot read a body of type {media}; send {_ACCEPTED}")
    charset = _charset(params)
    if charset is not None and charset not in _UTF8_CHARSETS:
        raise Problem(415, f"cannot read {media} in {charset}: JSON must be UTF-8")
    return _BodyKind.FORM if media == FORM else _BodyKind.JSON


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


class _NotJSON(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


_parse_json: Final = json.JSONDecoder(parse_constant=_no_constant).decode


def _decode_json(data: bytes, *, from_form: bool) -> Any:
    hint = _FORM_HINT if from_form else ""
    try:
        text = data.decode()  # not "utf-8-sig": ten times slower on small bodies
    except UnicodeDecodeError as exc:
        raise _malformed(f"the body is not UTF-8 (byte {exc.start} is invalid){hint}") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a BOM, which RFC 8259 lets parsers ignore
    try:
        value = _parse_json(text)
    except json.JSONDecodeError as exc:
        if not text.strip(" \t\r\n"):  # JSON whitespace only: an empty body
            return None
        where = f"line {exc.lineno}, column {exc.colno}"
        raise _malformed(f"the body is not valid JSON: {exc.msg} at {where}{hint}") from None
    except _NotJSON as exc:
        raise _malformed(f"the body is not valid JSON: {exc}{hint}") from None
    except ValueError:  # int() refusing thousands of digits
        raise _malformed("the body holds a number with too many digits") from None
    except RecursionError:
        raise _too_deep() from None
    _check_json(data, value)
    return value


def _decode_msgpack(data: bytes) -> Any:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except msgpack.ExtraData:
        raise _malformed("the body has bytes after its msgpack value") from None
    except msgpack.StackError:
        raise _too_deep() from None
    except UnicodeDecodeError:
        raise _malformed("the body holds a msgpack str that is not UTF-8") from None
    except (ValueError, TypeError) as exc:  # truncated, reserved byte, unhashable key...
        reason = str(exc) or type(exc).__name__
        raise _malformed(f"the body is not valid msgpack ({reason})") from None
    # Each level takes at least one byte: a short body cannot be too deep.
    if len(data) > MAX_BODY_DEPTH and _too_deep_value(value):
        raise _too_deep()
    return value


def _malformed(detail: str) -> Problem:
    return invalid_argument(detail, [{"loc": ["body"], "msg": detail, "type": MALFORMED}])


def _too_deep() -> Problem:
    detail = f"the body is nested more than {MAX_BODY_DEPTH} levels deep"
    return invalid_argument(detail, [{"loc": ["body"], "msg": detail, "type": TOO_DEEP}])


_CONTAINERS: Final = frozenset({list, dict})  # JSON and msgpack make no subclasses


# The shape of a JSON text: its brackets (braces folded into them), quotes and backslashes.
_FOLD_BRACES: Final = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE: Final = bytes(sorted(set(range(256)) - set(b'[]{}"\\')))


def _check_json(data: bytes, value: Any) -> None:
    """Refuse what ``json.loads`` accepts and we do not: nesting deeper than MAX_BODY_DEPTH,
    and unpaired surrogate escapes (msgpack could not carry them to the backend).

    Walking the value costs about as much as parsing it, so the text is read with bytes
    methods (C speed) instead, and the value is walked only when they cannot tell.
    """
    # Each level takes an opening and a closing bracket: a short text cannot be too deep.
    if len(data) <= 2 * MAX_BODY_DEPTH:
        escapes = b"\\" in data
    else:
        shape = data.translate(_FOLD_BRACES, _NOT_SHAPE)
        escapes = b"\\" in shape
        # Nesting needs one bracket per level: counting them clears most bodies.
        if shape.count(b"[") > MAX_BODY_DEPTH and _too_deep_text(data, shape, escapes, value):
            raise _too_deep()
    if escapes and (b"\\ud" in data or b"\\uD" in data) and _has_lone_surrogate(value):
        raise _malformed("the body holds a \\u escape of half a surrogate pair")


def _too_deep_text(data: bytes, shape: bytes, escapes: bool, value: Any) -> bool:
    """Without escaped quotes, the strings of ``shape`` pair up as adjacent ``""`` when
    they hold no bracket, and dropping them leaves the bare structure; each
    ``replace(b"[]", b"")`` then removes exactly one level, the innermost. Brackets in
    strings could only make a text look deeper (or never empty), never shallower, so a
    text this cannot read (escaped quotes, brackets in strings) has its value walked, to
    not refuse a body that is fine."""
    if escapes:
        if b'\\"' in data:
            return _too_deep_value(value)
        shape = shape.replace(b"\\", b"")
    shape = shape.replace(b'""', b"")
    if b'"' in shape:
        return _too_deep_value(value)
    for _ in range(MAX_BODY_DEPTH):
        shape = shape.replace(b"[]", b"")
        if not shape:
            return False
    return True


def _too_deep_value(value: Any) -> bool:
    """Whether ``value`` nests lists and maps more than MAX_BODY_DEPTH deep. Level by
    level, not recursively: recursion would fail on exactly the values it looks for."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(MAX_BODY_DEPTH):
        if not level:
            return False
        below: list[Any] = []  # the containers one level down
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) in _CONTAINERS:
                    below.append(child)
        level = below
    return bool(level)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# -- results -------------------------------------------------------------------------

# Built once: json.dumps with options builds an encoder per call. No cycle check: results
# come from msgpack (acyclic); a cycle would still end in RecursionError, a 502 below.
_dumps: Final[Callable[[Any], str]] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, converted as the module docstring says. Raises
    Problem(502) when it holds something JSON cannot represent."""
    try:
        return _dumps(value).encode()
    except (TypeError, ValueError):
        pass  # bytes (every ExtType holds some), other keys, NaN...: the walk tells
    except RecursionError:
        raise _nested_too_deep() from None
    try:
        return _dumps(json_value(value)).encode()
    except UnicodeEncodeError:  # a str with a lone surrogate, which no msgpack str has
        raise _unrepresentable("a string that is not valid Unicode", "result") from None


def json_value(value: Any) -> Any:
    """``value`` made of JSON types only (see the module docstring); Problem(502) when it
    holds something JSON cannot represent, naming what and where."""
    try:
        return _to_json(value)
    except _Unrepresentable as exc:
        where = "result" + "".join(reversed(exc.path))
        raise _unrepresentable(exc.what, where) from None
    except RecursionError:
        raise _nested_too_deep() from None


class _Unrepresentable(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []  # innermost first, added on the way out


_JSON_SCALARS: Final = frozenset({str, int, bool, type(None)})  # float may be NaN


def _to_json(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return _finite(value)
    if kind is list or kind is tuple:
        return _json_list(value)
    if kind is dict:
        return _json_dict(value)
    if kind is bytes:
        return _bytes_value(value)
    return _to_json_other(value)


def _json_list(items: list[Any] | tuple[Any, ...]) -> list[Any]:
    out = []
    for index, item in enumerate(items):
        if type(item) in _JSON_SCALARS:  # skip a call for most items
            out.append(item)
            continue
        try:
            out.append(_to_json(item))
        except _Unrepresentable as exc:
            exc.path.append(f"[{index}]")
            raise
    return out


def _json_dict(mapping: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for key, item in mapping.items():
        name = key if type(key) is str else _json_key(key)
        if type(item) in _JSON_SCALARS:
            out[name] = item
            continue
        try:
            out[name] = _to_json(item)
        except _Unrepresentable as exc:
            exc.path.append(f"[{json.dumps(name, ensure_ascii=False)}]")
            raise
    return out


def _to_json_other(value: Any) -> Any:
    # Subclasses and the types msgpack makes beyond JSON's: ExtType is a tuple, so first.
    if isinstance(value, msgpack.ExtType):
        raise _Unrepresentable(f"a msgpack extension value (type {value.code})")
    if isinstance(value, msgpack.Timestamp):
        raise _Unrepresentable("a msgpack timestamp")
    if isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, (list, tuple)):
        return _json_list(value)
    if isinstance(value, dict):
        return _json_dict(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_value(bytes(value))
    raise _Unrepresentable(f"a value of type {type(value).__name__}")


def _finite(number: float) -> float:
    if number - number == 0.0:  # false for NaN and both infinities
        return number
    raise _Unrepresentable(_non_finite_name(number))


def _non_finite_name(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def _bytes_value(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"$base64": _base64(data)}


def _base64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _json_key(key: Any) -> str:
    """A map key as JSON needs it: a string, the way ``json`` writes int/float/bool/None."""
    if type(key) is str:
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return _base64(data)
    if isinstance(key, float) and not math.isfinite(key):
        raise _Unrepresentable(f"{_non_finite_name(key)} as a map key")
    if key is None or isinstance(key, (bool, int, float)):
        return _dumps(key)  # 1, 1.5, true, null
    try:
        return _dumps(_to_json(key))  # a tuple key becomes its array text
    except _Unrepresentable as exc:
        raise _Unrepresentable(f"{exc.what} in a map key") from None


def _unrepresentable(what: str, where: str) -> Problem:
    return Problem(
        502,
        f"the result holds {what} at {where}, which JSON cannot represent; "
        f"ask for it with 'Accept: {MSGPACK}'",
        code=INTERNAL,
    )


def _nested_too_deep() -> Problem:
    return Problem(
        502,
        f"the result is nested too deeply to convert to JSON; ask for it with 'Accept: {MSGPACK}'",
        code=INTERNAL,
    )


def encode_msgpack(value: Any) -> bytes:
    """``value`` as msgpack, bytes kept as bin (``use_bin_type=True``, like zerorpc)."""
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Problem(
            502, f"the result cannot be packed as msgpack: {exc}", code=INTERNAL
        ) from None
    return data


def encode_result(value: Any, fmt: ResultFormat) -> bytes:
    """``value`` in the negotiated format."""
    return encode_msgpack(value) if fmt is ResultFormat.MSGPACK else encode_json(value)


# -- streams -------------------------------------------------------------------------


def ndjson_line(item: Any) -> bytes:
    """One streamed item: ``{"result": item}`` and a newline."""
    return b'{"result":' + encode_json(item) + b"}\n"


def ndjson_error(problem: dict[str, Any]) -> bytes:
    """The last line of a stream that failed: ``{"error": problem}``."""
    return b'{"error":' + encode_json(problem) + b"}\n"


# JSON escapes every control character, so one JSON text is always one SSE line.
def sse_event(item: Any) -> bytes:
    """One streamed item as a server-sent event."""
    return b"data: " + encode_json(item) + b"\n\n"


_SSE_END: Final = b"event: end\ndata: \n\n"  # a data line, even empty, makes it dispatch


def sse_end() -> bytes:
    """The event that closes a stream that ended well."""
    return _SSE_END


def sse_error(problem: dict[str, Any]) -> bytes:
    """The event that closes a stream that failed; its data is the problem document."""
    return b"event: error\ndata: " + encode_json(problem) + b"\n\n"


# -- negotiation ---------------------------------------------------------------------

_Format = TypeVar("_Format", ResultFormat, StreamFormat)

# (type, subtype, q) of each media range of an Accept header.
_Range = tuple[str, str, float]
_RESULT_OFFERS: Final = (
    (ResultFormat.JSON, (JSON,)),
    (ResultFormat.MSGPACK, (MSGPACK, MSGPACK_LEGACY)),
)
_STREAM_OFFERS: Final = (
    (StreamFormat.NDJSON, (NDJSON, "application/jsonl", JSON)),
    (StreamFormat.SSE, (SSE,)),
)

_result_cache: dict[str | None, ResultFormat] = dict.fromkeys(
    (None, "", "*/*", JSON), ResultFormat.JSON
)
_stream_cache: dict[str | None, StreamFormat] = dict.fromkeys(
    (None, "", "*/*", NDJSON, JSON), StreamFormat.NDJSON
)
_stream_cache[SSE] = StreamFormat.SSE


def negotiate(accept: str | None) -> ResultFormat:
    """The format of a result for an ``Accept`` header: msgpack when the client prefers it,
    else JSON (also when it accepts neither: we answer rather than 406)."""
    fmt = _result_cache.get(accept)
    if fmt is None:
        fmt = _choose(_media_ranges(accept or ""), _RESULT_OFFERS)
        _remember(_result_cache, accept, fmt)
    return fmt


def negotiate_stream(accept: str | None) -> StreamFormat:
    """The format of a stream: SSE when the client prefers text/event-stream, else NDJSON."""
    fmt = _stream_cache.get(accept)
    if fmt is None:
        fmt = _choose(_media_ranges(accept or ""), _STREAM_OFFERS)
        _remember(_stream_cache, accept, fmt)
    return fmt


def _remember(cache: dict[str | None, _Format], accept: str | None, fmt: _Format) -> None:
    # Clients send few distinct headers; a full cache means someone is making them up.
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[accept] = fmt


def _choose(ranges: list[_Range], offers: tuple[tuple[_Format, tuple[str, ...]], ...]) -> _Format:
    """The offer with the highest q; on a tie, the one named more specifically, then the
    first offer (our preference)."""
    best, best_rank = offers[0][0], (0.0, -1)
    for fmt, media_types in offers:
        rank = max(_rank(media, ranges) for media in media_types)
        if rank > best_rank and rank[0] > 0:
            best, best_rank = fmt, rank
    return best


def _rank(media: str, ranges: list[_Range]) -> tuple[float, int]:
    """(q, specificity) of the most specific range matching ``media`` (RFC 9110 12.5.1)."""
    kind, _, sub = media.partition("/")
    found = (0.0, -1)
    for range_kind, range_sub, q in ranges:
        if range_kind == kind and range_sub == sub:
            specificity = 2
        elif range_kind == kind and range_sub == "*":
            specificity = 1
        elif range_kind == "*":
            specificity = 0
        else:
            continue
        if specificity > found[1]:
            found = (q, specificity)
    return found


def _media_ranges(header: str) -> list[_Range]:
    ranges = []
    for part in header.split(","):
        media, *params = part.split(";")
        kind, _, sub = media.strip().lower().partition("/")
        if kind and sub:
            ranges.append((kind, sub, _quality(params)))
    return ranges


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0  # also NaN: not a q-value
    return 1.0


__all__ = [
    "FORM",
    "JSON",
    "MALFORMED",
    "MAX_BODY_DEPTH",
    "MSGPACK",
    "MSGPACK_LEGACY",
    "NDJSON",
    "SSE",
    "TOO_DEEP",
    "ResultFormat",
    "StreamFormat",
    "decode_body",
    "encode_json",
    "encode_msgpack",
    "encode_result",
    "json_value",
    "ndjson_error",
    "ndjson_line",
    "negotiate",
    "negotiate_stream",
    "sse_end",
    "sse_error",
    "sse_event",
]
