"""Request bodies, results, streams and negotiation (gateway.payloads): exact bytes and
exact problems in tables, and hypothesis for the decoder and the JSON conversion."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.payloads import (
    FORM,
    JSON,
    MAX_BODY_DEPTH,
    MSGPACK,
    MSGPACK_LEGACY,
    NDJSON,
    SSE,
    ResultFormat,
    StreamFormat,
    decode_body,
    encode_json,
    encode_msgpack,
    encode_result,
    json_value,
    ndjson_error,
    ndjson_line,
    negotiate,
    negotiate_stream,
    sse_end,
    sse_error,
    sse_event,
)
from gateway.problems import Problem

ACCEPTED = (
    "application/json (or any +json type), application/msgpack (or application/x-msgpack), "
    "or an empty body"
)
FORM_HINT = (
    "; the body was sent as application/x-www-form-urlencoded (curl -d does that): "
    "send JSON with -H 'Content-Type: application/json'"
)
TOO_DEEP = f"the body is nested more than {MAX_BODY_DEPTH} levels deep"


def refused(data: bytes, content_type: str | None) -> Problem:
    with pytest.raises(Problem) as caught:
        decode_body(data, content_type)
    return caught.value


def malformed(detail: str, type_: str = "malformed_body") -> dict[str, Any]:
    return {
        "type": "urn:zerogate:problem:invalid_argument",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
        "code": "invalid_argument",
        "errors": [{"loc": ["body"], "msg": detail, "type": type_}],
    }


def nested(depth: int) -> Any:
    value: Any = []
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return value


# -- request bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        (b"", None, None),
        (b"", "text/html", None),  # empty is no arguments, whatever the type says
        (b" \r\n\t", JSON, None),
        (b"[1, 2]", None, [1, 2]),
        (b"[1, 2]", JSON, [1, 2]),
        (b"[1, 2]", "Application/JSON; charset=UTF-8", [1, 2]),
        (b"[1, 2]", 'application/json;charset="utf8"', [1, 2]),
        (b"[1, 2]", "application/json; charset=us-ascii", [1, 2]),
        (b"[1, 2]", "application/vnd.api+json", [1, 2]),
        (b"[1, 2]", FORM, [1, 2]),  # curl -d
        (b"[1, 2]", f"{FORM}; charset=utf-8", [1, 2]),
        (b'"text"', None, "text"),  # any JSON value: args.py decides what it accepts
        (b"\xef\xbb\xbf[1]", JSON, [1]),  # a BOM is skipped
        (b'{"a": 1, "a": 2}', JSON, {"a": 2}),  # duplicate keys: the last wins
        ('["é😀"]'.encode(), JSON, ["é😀"]),
        (b'["\\ud83d\\ude00"]', JSON, ["😀"]),  # an escaped surrogate pair is fine
        (b'["[[[[", "]]]]", {"k": "{{"}]', JSON, ["[[[[", "]]]]", {"k": "{{"}]),
        (msgpack.packb({"k": b"\x00\xff", 1: "x"}), MSGPACK, {"k": b"\x00\xff", 1: "x"}),
        (msgpack.packb([1, "a"]), MSGPACK_LEGACY, [1, "a"]),
        (msgpack.packb([1]), f"{MSGPACK}; charset=latin-1", [1]),  # no charset in msgpack
        (
            msgpack.packb([msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0)]),
            MSGPACK,
            [msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0)],  # passed on as they are
        ),
    ],
)
def test_decoded(data: bytes, content_type: str | None, expected: Any) -> None:
    assert decode_body(data, content_type) == expected


@pytest.mark.parametrize(
    ("data", "content_type", "detail"),
    [
        (
            b'{"a": 1,\n "b": }',
            JSON,
            "the body is not valid JSON: Expecting value at line 2, column 7",
        ),
        (b"[1, 2", None, "the body is not valid JSON: Expecting ',' delimiter at line 1, column 6"),
        (
            b"a=1&b=2",
            FORM,
            "the body is not valid JSON: Expecting value at line 1, column 1" + FORM_HINT,
        ),
        (b'["\xff"]', JSON, "the body is not UTF-8 (byte 2 is invalid)"),
        (b"\xff", FORM, "the body is not UTF-8 (byte 0 is invalid)" + FORM_HINT),
        (b"[1, NaN]", JSON, "the body is not valid JSON: NaN is not JSON"),
        (b"-Infinity", JSON, "the body is not valid JSON: -Infinity is not JSON"),
        (b"1" * 5000, JSON, "the body holds a number with too many digits"),
        (b'["\\ud800"]', JSON, "the body holds a \\u escape of half a surrogate pair"),
        (b'{"\\uDFFF": 1}', JSON, "the body holds a \\u escape of half a surrogate pair"),
        (b"\x92\x01", MSGPACK, "the body is not valid msgpack (Unpack failed: incomplete input)"),
        (b"\x01\x02", MSGPACK, "the body has bytes after its msgpack value"),
        (b"\xc1", MSGPACK, "the body is not valid msgpack (FormatError)"),
        (b"\xa1\xff", MSGPACK, "the body holds a msgpack str that is not UTF-8"),
        (b"\x81\x91\x01\x02", MSGPACK, "the body is not valid msgpack (unhashable type: 'list')"),
    ],
)
def test_malformed(data: bytes, content_type: str | None, detail: str) -> None:
    assert refused(data, content_type).document() == malformed(detail)


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("text/plain", f"cannot read a body of type text/plain; send {ACCEPTED}"),
        (
            "multipart/form-data; boundary=x",
            f"cannot read a body of type multipart/form-data; send {ACCEPTED}",
        ),
        ("application/jsonx", f"cannot read a body of type application/jsonx; send {ACCEPTED}"),
        (
            "application/json; charset=latin-1",
            "cannot read application/json in latin-1: JSON must be UTF-8",
        ),
        (f"{FORM}; charset=utf-16", f"cannot read {FORM} in utf-16: JSON must be UTF-8"),
    ],
)
def test_unsupported_media_type(content_type: str, detail: str) -> None:
    assert refused(b"[1]", content_type).document() == {
        "type": "about:blank",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": detail,
    }


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
def test_nesting_limit(content_type: str) -> None:
    def encoded(depth: int) -> bytes:
        value = nested(depth)
        return json.dumps(value).encode() if content_type == JSON else msgpack.packb(value)

    assert decode_body(encoded(MAX_BODY_DEPTH), content_type) == nested(MAX_BODY_DEPTH)
    too_deep = refused(encoded(MAX_BODY_DEPTH + 1), content_type).document()
    assert too_deep == malformed(TOO_DEEP, "too_deeply_nested")


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"[" * 200_000 + b"]" * 200_000, JSON),  # past the recursion limit
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON),
        (b"[" * 1_000_000, JSON),  # and malformed
        (b"\x91" * 200_000 + b"\xc0", MSGPACK),
    ],
)
def test_very_deep_bodies_are_refused_quickly(data: bytes, content_type: str) -> None:
    started = time.perf_counter()
    assert refused(data, content_type).status == 400
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "item",
    [
        ["]]]]", "[[[", "{"],  # brackets in strings, no escapes
        ['"]"', "x"],  # escaped quotes could pair the wrong quotes up
        ['a\\"]', "[[[" * 30],
        ["\\", "]"],
    ],
)
def test_strings_do_not_make_a_body_look_deep(item: list[str]) -> None:
    fine = [item for _ in range(MAX_BODY_DEPTH)]  # more brackets than levels allowed
    assert decode_body(json.dumps(fine).encode(), JSON) == fine


def test_deep_text_read_right_around_strings() -> None:
    deep = nested(MAX_BODY_DEPTH + 1)
    sneaky = ["]" * 200, deep]  # closers in a string could hide the depth from a count
    assert refused(json.dumps(sneaky).encode(), JSON).status == 400
    escaped = ['a\\"]]]]', deep]
    assert refused(json.dumps(escaped).encode(), JSON).status == 400


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet="[]{}ab")
    | st.text(alphabet='[]{}"\\ab\n')
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(value=json_values, extra=st.integers(0, 80), data=st.data())
def test_nesting_scan_agrees_with_the_value(value: Any, extra: int, data: Any) -> None:
    for _ in range(extra):
        value = [value] if data.draw(st.booleans()) else {"k": value}
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans())).encode()
    if depth_of(value) <= MAX_BODY_DEPTH:
        assert decode_body(text, JSON) == value
    else:
        assert refused(text, JSON).document() == malformed(TOO_DEEP, "too_deeply_nested")


@settings(max_examples=300)
@given(
    data=st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b"[" * 70 + b),
    content_type=st.sampled_from([None, JSON, FORM, MSGPACK, MSGPACK_LEGACY, "text/plain"]),
)
def test_decode_never_raises_anything_but_problem(data: bytes, content_type: str | None) -> None:
    try:
        decode_body(data, content_type)
    except Problem as problem:
        status = problem.status
    else:
        status = 200
    assert status in (200, 400, 415)


# -- results as JSON -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1, "b": [1, 2.5, None, True]}, b'{"a":1,"b":[1,2.5,null,true]}'),
        ("é\u2028", '"é\u2028"'.encode()),  # UTF-8, not \u escapes
        ((1, (2, "x")), b'[1,[2,"x"]]'),
        (b"abc", b'"abc"'),
        (b"\xff\x00", b'{"$base64":"/wA="}'),
        ([b"", b"\xc3\xa9"], '["","é"]'.encode()),
        ({b"k": b"v", b"\xff": 1}, b'{"k":"v","/w==":1}'),
        ({1: "a", 1.5: "b", False: "c", None: "d"}, b'{"1":"a","1.5":"b","false":"c","null":"d"}'),
        ({(1, "x"): 0, (b"\xfe",): 1}, b'{"[1,\\"x\\"]":0,"[{\\"$base64\\":\\"/g==\\"}]":1}'),
        ({"k": {2: [b"\x01"]}}, b'{"k":{"2":["\\u0001"]}}'),
        ({"s": "line\nbreak"}, b'{"s":"line\\nbreak"}'),
        (2**63, b"9223372036854775808"),
        (-(2**63), b"-9223372036854775808"),
    ],
)
def test_encode_json(value: Any, expected: bytes) -> None:
    assert encode_json(value) == expected


def test_walked_and_direct_paths_write_alike() -> None:
    # One bytes value sends the whole result down the walk; the rest must not change.
    value = {"f": [0.1, 1e300, -0.0, 5e-324], "s": "é\x00\u2028", "n": [None, False, 7]}
    direct = encode_json(value)
    walked = encode_json({**value, "b": b"x"})
    assert walked == direct[:-1] + b',"b":"x"}'


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ([float("nan")], "NaN at result[0]"),
        ({"a": [1, float("inf")]}, 'Infinity at result["a"][1]'),
        (-math.inf, "-Infinity at result"),
        ([msgpack.ExtType(1, b"")], "a msgpack extension value (type 1) at result[0]"),
        ({"é": {"t": msgpack.Timestamp(1, 0)}}, 'a msgpack timestamp at result["é"]["t"]'),
        ({"s": {1, 2}}, 'a value of type set at result["s"]'),
        ({"x": {float("nan"): 1}}, 'NaN as a map key at result["x"]'),
        (
            {msgpack.ExtType(2, b"a"): 1},
            "a msgpack extension value (type 2) in a map key at result",
        ),
        (
            [0, {"k": (1, object())}],
            'a value of type object at result[1]["k"][1]',
        ),
    ],
)
def test_unrepresentable_result(value: Any, what: str) -> None:
    with pytest.raises(Problem) as caught:
        encode_json(value)
    assert caught.value.document() == {
        "type": "urn:zerogate:problem:internal",
        "title": "Bad Gateway",
        "status": 502,
        "detail": f"the result holds {what}, which JSON cannot represent; "
        "ask for it with 'Accept: application/msgpack'",
        "code": "internal",
    }
    with pytest.raises(Problem):
        json_value(value)


def test_an_ext_type_is_never_written_as_an_array() -> None:
    # ExtType is a tuple: json.dumps would write [3, ...] if bytes took a shortcut.
    with pytest.raises(Problem):
        encode_json({"a": "x", "e": msgpack.ExtType(3, b"\x01")})


def test_deep_result() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    for result in (value, [b"\xff", value]):
        with pytest.raises(Problem) as caught:
            encode_json(result)
        assert caught.value.status == 502
        assert caught.value.detail == (
            "the result is nested too deeply to convert to JSON; "
            "ask for it with 'Accept: application/msgpack'"
        )


def expected_json(value: Any) -> Any:
    """The conversion DESIGN.md describes, written plainly as an oracle."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            import base64

            return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [expected_json(v) for v in value]
    if isinstance(value, dict):
        return {expected_key(k): expected_json(v) for k, v in value.items()}
    return value


def expected_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        converted = expected_json(key)
        return converted if isinstance(converted, str) else converted["$base64"]
    return json.dumps(key)


msgpack_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=8)
    | st.sampled_from([b"caf\xc3\xa9", b"\xff"])
)
msgpack_keys = (
    st.text(max_size=4)
    | st.binary(max_size=3)
    | st.integers(-(2**63), 2**64 - 1)
    | st.booleans()
    | st.none()
)
msgpack_values = st.recursive(
    msgpack_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(msgpack_keys, inner, max_size=4),
    max_leaves=20,
)


@given(value=msgpack_values)
def test_json_value_of_msgpack_values(value: Any) -> None:
    received = msgpack.unpackb(
        msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False
    )
    converted = json_value(received)
    assert converted == expected_json(received)
    assert json.loads(encode_json(received)) == converted


@given(value=msgpack_values)
def test_msgpack_round_trip(value: Any) -> None:
    encoded = encode_msgpack(value)
    assert msgpack.unpackb(encoded, raw=False, strict_map_key=False) == value


def test_encode_msgpack() -> None:
    assert encode_msgpack(b"x") == b"\xc4\x01x"  # bin, not str
    assert encode_msgpack("x") == b"\xa1x"
    assert encode_msgpack((1, 2)) == b"\x92\x01\x02"
    with pytest.raises(Problem) as caught:
        encode_msgpack({1, 2})
    assert caught.value.status == 502
    assert caught.value.code == "internal"


def test_encode_result() -> None:
    assert encode_result({"b": b"\xff"}, ResultFormat.JSON) == b'{"b":{"$base64":"/w=="}}'
    assert encode_result({"b": b"\xff"}, ResultFormat.MSGPACK) == b"\x81\xa1b\xc4\x01\xff"
    assert ResultFormat.JSON.media_type == JSON
    assert ResultFormat.MSGPACK.media_type == MSGPACK
    assert StreamFormat.NDJSON.media_type == NDJSON
    assert StreamFormat.SSE.media_type == SSE


# -- streams -------------------------------------------------------------------------

PROBLEM_DOC = {"type": "about:blank", "title": "Bad Gateway", "status": 502, "detail": "x\ny"}


def test_stream_framing() -> None:
    assert ndjson_line({"a": 1}) == b'{"result":{"a":1}}\n'
    assert ndjson_line(b"\xff") == b'{"result":{"$base64":"/w=="}}\n'
    assert ndjson_line("two\nlines") == b'{"result":"two\\nlines"}\n'
    assert ndjson_error(PROBLEM_DOC) == (
        b'{"error":{"type":"about:blank","title":"Bad Gateway","status":502,"detail":"x\\ny"}}\n'
    )
    assert sse_event([1, "a"]) == b'data: [1,"a"]\n\n'
    assert sse_event("two\nlines\r\n") == b'data: "two\\nlines\\r\\n"\n\n'
    assert sse_end() == b"event: end\ndata: \n\n"
    assert sse_error(PROBLEM_DOC) == (
        b'event: error\ndata: {"type":"about:blank","title":"Bad Gateway","status":502,'
        b'"detail":"x\\ny"}\n\n'
    )
    with pytest.raises(Problem):
        ndjson_line(float("nan"))


@given(item=msgpack_values)
def test_one_item_is_one_line(item: Any) -> None:
    line = ndjson_line(item)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert b"\r" not in line
    event = sse_event(item)
    # SSE splits lines on CR, LF and CRLF: one data line, then the blank line.
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert b"\n" not in event[:-2]
    assert b"\r" not in event
    assert json.loads(event[6:-2]) == json.loads(line)["result"]


# -- negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, ResultFormat.JSON),
        ("", ResultFormat.JSON),
        ("*/*", ResultFormat.JSON),
        ("application/json", ResultFormat.JSON),
        ("application/json, text/plain, */*", ResultFormat.JSON),
        ("application/msgpack", ResultFormat.MSGPACK),
        ("application/x-msgpack", ResultFormat.MSGPACK),
        ("APPLICATION/MSGPACK", ResultFormat.MSGPACK),
        ("application/msgpack, */*", ResultFormat.MSGPACK),  # named beats the wildcard
        ("*/*;q=0.1, application/msgpack", ResultFormat.MSGPACK),
        ("application/json, application/msgpack", ResultFormat.JSON),  # a tie: ours
        ("application/json;q=0.5, application/msgpack", ResultFormat.MSGPACK),
        ("application/msgpack; q=0.9, application/json; q=0.8", ResultFormat.MSGPACK),
        ("application/*;q=0.2, application/msgpack;q=0.1", ResultFormat.JSON),
        ("application/msgpack;q=0", ResultFormat.JSON),  # refused: we still answer JSON
        ("application/msgpack;q=abc", ResultFormat.JSON),
        ("application/msgpack;q=2", ResultFormat.JSON),
        ("text/html", ResultFormat.JSON),  # nothing we make: JSON rather than 406
        ("application/msgpack;q=0.5,text/html", ResultFormat.MSGPACK),
        (",,;", ResultFormat.JSON),
    ],
)
def test_negotiate(accept: str | None, expected: ResultFormat) -> None:
    assert negotiate(accept) is expected
    assert negotiate(accept) is expected  # again, from the cache


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, StreamFormat.NDJSON),
        ("*/*", StreamFormat.NDJSON),
        ("text/event-stream", StreamFormat.SSE),
        ("text/event-stream, */*", StreamFormat.SSE),
        ("text/*", StreamFormat.SSE),
        ("text/event-stream;q=0.5, */*", StreamFormat.NDJSON),
        ("application/x-ndjson, text/event-stream", StreamFormat.NDJSON),
        ("application/json", StreamFormat.NDJSON),
        ("application/msgpack", StreamFormat.NDJSON),  # streams have no msgpack form
        ("application/json;q=0.1, text/event-stream;q=0.2", StreamFormat.SSE),
    ],
)
def test_negotiate_stream(accept: str | None, expected: StreamFormat) -> None:
    assert negotiate_stream(accept) is expected
    assert negotiate_stream(accept) is expected


def test_negotiation_cache_stays_bounded_and_right() -> None:
    from gateway import payloads

    for i in range(1000):
        assert negotiate(f"application/msgpack;q=0.{i % 9 + 1}, x/y{i}") is ResultFormat.MSGPACK
    assert len(payloads._result_cache) <= 256
    assert negotiate("application/json") is ResultFormat.JSON
