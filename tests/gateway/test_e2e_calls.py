"""Calls through the gateway end to end (DESIGN.md, "HTTP API"): a real uvicorn on loopback in
front of real backends in child processes (ours on gevent and asyncio, and zerorpc 0.6.3).

One gateway and its backends are shared by the module (``shared``): its config gives each test
its own service where counts or settings must not mix (``metered``, ``quick``, ``plain``...).
Tests that need another gateway setting, a backend that comes late or a redeploy start their
own. ``extra.py`` (written to a temporary folder) is a small asyncio backend for what ``Shop``
cannot show: the trace id a call carried, which arguments were sent, and a second version of a
service for the NameError re-describe.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import msgpack
import pytest
from backends import Shop
from e2e_support import (
    Children,
    Gateway,
    free_port,
    service_config,
    start_backend,
    wait_for_port,
)

from gateway.config import ConfigError, parse_config

CURL: Final = "/usr/bin/curl"
PROBLEM: Final = "application/problem+json"
MSGPACK: Final = "application/msgpack"
TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")

# The three kinds of backend, each behind its own service of the shared gateway.
SERVICE_OF: Final = {"green": "shop", "aio": "shop-aio", "zerorpc": "shop-z"}
OURS: Final = ("shop", "shop-aio")
ALL_SHOPS: Final = ("shop", "shop-aio", "shop-z")
# Every public method of the test backend (backends.py grows with other tests' needs).
SHOP_METHODS: Final = {
    name for name, value in vars(Shop).items() if callable(value) and not name.startswith("_")
}
SAFE: Final = {"add", "get_item", "list_items"}  # the shop services' safe globs
PRIVATE: Final = ("_hidden", "_zerorpc_inspect", "_zerorpc_list", "_zerorpc_name")

EXTRA_BACKEND: Final = '''
"""python extra.py v1|v2 ENDPOINT: an asyncio backend; v2 is v1 redeployed without old()."""

import asyncio
import sys

from rpccore import current_trace
from rpccore.aio import Server

_UNSET = object()


class Base:
    def trace(self):
        """The trace id the call carried (None without one)."""
        context = current_trace.get()
        return None if context is None else context.trace_id

    def probe(self, a, b="b-default", c=_UNSET):
        """[a, b, whether c was left to this default]: shows what the gateway sent."""
        return [a, b, c is _UNSET]


class V1(Base):
    """Version one."""

    def old(self):
        return "old"


class V2(Base):
    """Version two."""

    def new(self):
        return "new"


async def main(version, endpoint):
    server = Server({"v1": V1, "v2": V2}[version](), name="extra")
    server.bind(endpoint)
    await server.run()


asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


# -- the shared gateway ----------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    url: str
    endpoints: dict[str, str]  # backend kind ("green", "aio", "zerorpc", "extra") -> endpoint
    gateway: Gateway


def write_extra(folder: Path) -> Path:
    script = folder / "extra.py"
    script.write_text(EXTRA_BACKEND)
    return script


def start_extra(
    children: Children, script: Path, version: str, port: int
) -> subprocess.Popen[bytes]:
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = children.start(str(script), version, endpoint, name=f"extra-{version}-{port}")
    wait_for_port(port)
    return proc


def shared_config(endpoints: dict[str, str]) -> str:
    green = endpoints["green"]
    mapped = "{KeyError: 404, ValueError: 400}"
    safe = '["get_*", "list_*", "add"]'
    services = [
        service_config("shop", [green], errors=mapped, safe=safe),
        service_config("shop-aio", [endpoints["aio"]], errors=mapped, safe=safe),
        service_config("shop-z", [endpoints["zerorpc"]], errors=mapped, safe=safe),
        service_config("plain", [green]),  # no errors table: every exception is a 500
        service_config(
            "limited",
            [green],
            methods='{include: ["get_*", "list_*", "add", "slow", "fail*"], '
            'exclude: ["slow", "fail*"]}',
            safe='["*"]',
        ),
        service_config("quick", [green], timeout=1),
        service_config("metered", [green]),  # only the metrics test calls its methods
        service_config("extra", [endpoints["extra"]]),
    ]
    routes = [
        '{method: GET, path: "/items/{name}", call: shop.get_item}',
        '{method: POST, path: "/greetings/{name}", call: shop.greet}',
        '{method: GET, path: "/sum/{a}", call: shop.add}',
        '{method: POST, path: "/z/greetings/{name}", call: shop-z.greet}',
        '{method: POST, path: "/limited/slow", call: limited.slow}',
        '{method: GET, path: "/limited/items/{name}", call: limited.get_item}',
    ]
    return (
        "gateway:\n  max_body_bytes: 65536\n"
        + "services:\n"
        + "\n".join(services)
        + "\nroutes:\n"
        + "".join(f"  - {route}\n" for route in routes)
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    folder = tmp_path_factory.mktemp("e2e-calls")
    procs = Children(folder)
    try:
        endpoints = {kind: start_backend(procs, kind)[0] for kind in SERVICE_OF}
        port = free_port()
        start_extra(procs, write_extra(folder), "v1", port)
        endpoints["extra"] = f"tcp://127.0.0.1:{port}"
        with Gateway(shared_config(endpoints)) as gateway:
            yield Shared(gateway.url, endpoints, gateway)
    finally:
        procs.stop_all()


@pytest.fixture
def http(shared: Shared) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=10) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------


def problem(answer: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The problem document of ``answer``, checked: status, type, code and trace id."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = answer.json()
    assert doc["status"] == status
    assert doc.get("code") == code
    assert doc["type"] == (f"urn:zerogate:problem:{code}" if code else "about:blank")
    assert doc["trace_id"] == answer.headers["x-trace-id"]
    return doc


def ok(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def arg_errors(answer: httpx.Response) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = problem(answer, 400, "invalid_argument")["errors"]
    return errors


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``check()``'s first truthy value, polling for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def packb(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """Run curl with ``-i``: (status, headers with lowercase names, body)."""
    done = subprocess.run(
        [CURL, "-sS", "-i", "--max-time", "10", *args],
        capture_output=True,
        check=True,
        timeout=20,
    )
    head, _, body = done.stdout.decode().partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, frozenset[tuple[str, str]]]


def samples(text: str) -> dict[Sample, float]:
    """The samples of a Prometheus text exposition, keyed by (name, labels)."""
    found: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, line
        labels = frozenset(_LABEL.findall(match[2] or ""))
        found[(match[1], labels)] = float(match[3])
    return found


def sample(name: str, **labels: str) -> Sample:
    return (name, frozenset(labels.items()))


def access_records(caplog: pytest.LogCaptureFixture, trace_id: str) -> list[dict[str, Any]]:
    lines = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "zerogate.access"
    ]
    return [line for line in lines if line["trace_id"] == trace_id]


# -- POST /rpc/{service}/{method}: bodies and argument mapping -------------------------------


@pytest.mark.parametrize("service", ALL_SHOPS)
def test_a_json_array_calls_on_every_backend(http: httpx.Client, service: str) -> None:
    assert ok(http.post(f"/rpc/{service}/add", json=[2, 3])) == 5
    assert ok(http.post(f"/rpc/{service}/greet", json=["ann", "Hi", "?"])) == "Hi, ann?"
    assert ok(http.post(f"/rpc/{service}/echo", json=[{"a": [1, None, True]}])) == {
        "a": [1, None, True]
    }
    assert ok(http.post(f"/rpc/{service}/list_items", content=b"")) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]


@pytest.mark.parametrize("service", OURS)
def test_a_json_object_is_named_arguments(http: httpx.Client, service: str) -> None:
    url = f"/rpc/{service}/greet"
    assert ok(http.post(url, json={"name": "ann"})) == "Hello, ann!"
    assert ok(http.post(url, json={"punct": "?", "name": "ann"})) == "Hello, ann?"
    assert ok(http.post(url, json={"punct": ".", "greeting": "Bye", "name": "bo"})) == "Bye, bo."
    assert ok(http.post(f"/rpc/{service}/list_items", json={"order": "price"})) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]


def test_gaps_get_the_published_default_and_trailing_defaults_are_left_out(
    http: httpx.Client,
) -> None:
    # probe(a, b="b-default", c=<an object msgpack cannot carry>) says what it received.
    assert ok(http.post("/rpc/extra/probe", json={"a": 1, "b": 2})) == [1, 2, True]
    assert ok(http.post("/rpc/extra/probe", json={"a": 1})) == [1, "b-default", True]
    assert ok(http.post("/rpc/extra/probe", json={"a": 1, "c": 3})) == [1, "b-default", False]


def test_an_empty_body_is_no_arguments(http: httpx.Client) -> None:
    assert ok(http.post("/rpc/shop/list_items")) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]
    assert ok(http.post("/rpc/shop/list_items", content=b"  \n")) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]


def test_an_empty_body_is_checked_like_an_empty_array(http: httpx.Client) -> None:
    # No arguments for a method that requires two: wrong arity, 400 (never a backend 500).
    assert arg_errors(http.post("/rpc/shop/add", json=[])) == [
        {"loc": ["body", 0], "msg": "missing required argument 'a'", "type": "missing_argument"},
        {"loc": ["body", 1], "msg": "missing required argument 'b'", "type": "missing_argument"},
    ]
    answer = http.post("/rpc/shop/add")
    errors = arg_errors(answer)
    assert [error["type"] for error in errors] == ["missing_argument", "missing_argument"]
    assert "'a', 'b'" in answer.json()["detail"]


def test_unknown_and_missing_named_arguments_are_each_reported(http: httpx.Client) -> None:
    answer = http.post("/rpc/shop/greet", json={"greeting": "Hi", "bogus": 1, "zz": 2})
    doc = problem(answer, 400, "invalid_argument")
    assert doc["rpc"] == {"service": "shop", "method": "greet"}
    assert doc["errors"] == [
        {"loc": ["body", "name"], "msg": "missing required argument", "type": "missing_argument"},
        {"loc": ["body", "bogus"], "msg": "unexpected argument", "type": "unexpected_argument"},
        {"loc": ["body", "zz"], "msg": "unexpected argument", "type": "unexpected_argument"},
    ]
    assert "'name'" in doc["detail"]
    assert "'bogus', 'zz'" in doc["detail"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            [1],
            [
                {
                    "loc": ["body", 1],
                    "msg": "missing required argument 'b'",
                    "type": "missing_argument",
                }
            ],
        ),
        (
            [1, 2, 3],
            [
                {
                    "loc": ["body", 2],
                    "msg": "unexpected extra argument",
                    "type": "unexpected_argument",
                }
            ],
        ),
    ],
)
def test_wrong_arity_is_400(http: httpx.Client, body: list[int], errors: list[Any]) -> None:
    assert arg_errors(http.post("/rpc/shop/add", json=body)) == errors


@pytest.mark.parametrize(
    ("content", "what"),
    [(b"5", "a number"), (b'"x"', "a string"), (b"true", "a boolean")],
)
def test_a_body_that_is_neither_array_nor_object_is_400(
    http: httpx.Client, content: bytes, what: str
) -> None:
    answer = http.post("/rpc/shop/add", content=content)
    assert arg_errors(answer) == [
        {
            "loc": ["body"],
            "msg": f"must be an array or an object, not {what}",
            "type": "invalid_type",
        }
    ]


def test_malformed_json_is_400(http: httpx.Client) -> None:
    answer = http.post(
        "/rpc/shop/add", content=b"[1, 2", headers={"content-type": "application/json"}
    )
    [error] = arg_errors(answer)
    assert (error["loc"], error["type"]) == (["body"], "malformed_body")


def test_an_object_body_on_zerorpc_063_asks_for_an_array(http: httpx.Client) -> None:
    doc = problem(http.post("/rpc/shop-z/greet", json={"name": "ann"}), 400, "invalid_argument")
    assert doc["errors"] == [
        {
            "loc": ["body", "name"],
            "msg": "argument names are unknown",
            "type": "argument_names_unknown",
        }
    ]
    assert "send a JSON array" in doc["detail"]
    assert ok(http.post("/rpc/shop-z/greet", json=["ann"])) == "Hello, ann!"


# -- what is exposed -----------------------------------------------------------------------


@pytest.mark.parametrize("service", ALL_SHOPS)
def test_an_unknown_method_is_404_unimplemented(http: httpx.Client, service: str) -> None:
    doc = problem(http.post(f"/rpc/{service}/nope", json=[]), 404, "unimplemented")
    assert doc["rpc"] == {"service": service, "method": "nope"}


def test_an_unknown_service_is_404(http: httpx.Client) -> None:
    problem(http.post("/rpc/nosuch/add", json=[1, 2]), 404, "unimplemented")
    problem(http.get("/rpc/nosuch"), 404, "unimplemented")


@pytest.mark.parametrize("service", ALL_SHOPS)
@pytest.mark.parametrize("name", PRIVATE)
def test_private_names_are_never_callable(http: httpx.Client, service: str, name: str) -> None:
    problem(http.post(f"/rpc/{service}/{name}", json=[]), 404, "unimplemented")
    problem(http.post(f"/rpc/{service}/{name}"), 404, "unimplemented")
    problem(http.get(f"/rpc/{service}/{name}"), 404, "unimplemented")
    encoded = "%5F" + name[1:]
    problem(http.post(f"/rpc/{service}/{encoded}", json=[]), 404, "unimplemented")
    call = {"jsonrpc": "2.0", "method": f"{service}.{name}", "params": [], "id": 7}
    answer = ok(http.post("/jsonrpc", json=call))
    assert answer["error"]["code"] == -32601
    assert answer["error"]["data"]["code"] == "unimplemented"


def test_private_names_are_absent_from_the_catalog(http: httpx.Client) -> None:
    catalog = ok(http.get("/rpc"))
    for service in catalog["services"].values():
        assert not [name for name in service["methods"] if name.startswith("_")]


def test_a_route_cannot_name_a_private_method() -> None:
    text = (
        "services:\n"
        + service_config("shop", ["tcp://127.0.0.1:4242"])
        + '\nroutes:\n  - {method: GET, path: "/h", call: shop._hidden}\n'
    )
    with pytest.raises(ConfigError, match=r"routes.*call"):
        parse_config(text)


@pytest.mark.parametrize("name", ["slow", "fail", "fail_after", "greet", "echo"])
def test_excluded_methods_are_404_everywhere(http: httpx.Client, name: str) -> None:
    # limited: include get_*, list_*, add, slow, fail*; exclude slow, fail*; safe: *.
    problem(http.post(f"/rpc/limited/{name}", json=[1]), 404, "unimplemented")
    problem(http.get(f"/rpc/limited/{name}?seconds=1"), 404, "unimplemented")  # not 405
    problem(http.put(f"/rpc/limited/{name}"), 404, "unimplemented")
    call = {"jsonrpc": "2.0", "method": f"limited.{name}", "params": [1], "id": 1}
    assert ok(http.post("/jsonrpc", json=call))["error"]["code"] == -32601
    assert name not in ok(http.get("/rpc/limited"))["methods"]


def test_the_catalog_of_a_filtered_service_lists_only_exposed_methods(http: httpx.Client) -> None:
    assert set(ok(http.get("/rpc/limited"))["methods"]) == {"add", "get_item", "list_items"}
    assert ok(http.post("/rpc/limited/add", json=[1, 2])) == 3


def test_a_route_to_an_excluded_method_is_404(http: httpx.Client) -> None:
    doc = problem(http.post("/limited/slow", json={"seconds": 0}), 404, "unimplemented")
    assert doc["rpc"] == {"service": "limited", "method": "slow"}
    assert ok(http.get("/limited/items/pear")) == {"name": "pear", "price": 0.75}


# -- GET for safe methods, and wrong verbs -----------------------------------------------


def test_get_calls_a_safe_method_with_query_values(http: httpx.Client) -> None:
    assert ok(http.get("/rpc/shop/get_item?name=apple")) == {"name": "apple", "price": 0.5}
    assert ok(http.get("/rpc/shop/get_item", params={"name": '"pear"'})) == {
        "name": "pear",
        "price": 0.75,
    }
    assert ok(http.get("/rpc/shop/add?a=1&b=2")) == 3  # JSON numbers
    assert ok(http.get("/rpc/shop/add?a=x&b=y")) == "xy"  # not JSON: strings
    assert ok(http.get("/rpc/shop/add", params={"a": '"1"', "b": '"2"'})) == "12"  # JSON strings
    assert ok(http.get("/rpc/shop/add", params={"a": "[1]", "b": "[2,3]"})) == [1, 2, 3]
    assert ok(http.get("/rpc/shop/list_items?order=price")) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]
    assert ok(http.get("/rpc/shop/list_items")) == [
        {"name": "apple", "price": 0.5},
        {"name": "pear", "price": 0.75},
    ]


def test_get_with_bad_query_arguments_is_400(http: httpx.Client) -> None:
    assert arg_errors(http.get("/rpc/shop/add?a=1")) == [
        {"loc": ["query", "b"], "msg": "missing required argument", "type": "missing_argument"}
    ]
    assert arg_errors(http.get("/rpc/shop/add?a=1&b=2&c=3")) == [
        {"loc": ["query", "c"], "msg": "unexpected argument", "type": "unexpected_argument"}
    ]
    assert arg_errors(http.get("/rpc/shop/add?a=1&a=2&b=3")) == [
        {
            "loc": ["query", "a"],
            "msg": "given 2 times; send one value (a JSON array for a list)",
            "type": "repeated_argument",
        }
    ]


def test_get_on_a_method_that_is_not_safe_is_405(http: httpx.Client) -> None:
    answer = http.get("/rpc/shop/greet?name=ann")
    problem(answer, 405, None)
    assert answer.headers["allow"] == "POST"
    answer = http.get("/rpc/shop-z/greet?name=ann")
    problem(answer, 405, None)
    assert answer.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("verb", "path", "allow"),
    [
        ("PUT", "/rpc/shop/add", "GET, HEAD, POST"),
        ("DELETE", "/rpc/shop/add", "GET, HEAD, POST"),
        ("PUT", "/rpc/shop/greet", "POST"),
        ("PATCH", "/rpc/shop-z/greet", "POST"),
    ],
)
def test_other_verbs_are_405_with_allow(
    http: httpx.Client, verb: str, path: str, allow: str
) -> None:
    answer = http.request(verb, path, json=[1, 2])
    problem(answer, 405, None)
    assert answer.headers["allow"] == allow


# -- REST routes -------------------------------------------------------------------------


def test_a_get_route_maps_path_and_query_to_named_arguments(http: httpx.Client) -> None:
    assert ok(http.get("/items/apple")) == {"name": "apple", "price": 0.5}
    assert ok(http.get("/sum/1?b=2")) == 3
    assert ok(http.get("/sum/x?b=y")) == "xy"


def test_a_post_route_maps_path_query_and_body(http: httpx.Client) -> None:
    assert ok(http.post("/greetings/ann")) == "Hello, ann!"
    assert ok(http.post("/greetings/ann?greeting=Hi", json={"punct": "?"})) == "Hi, ann?"
    assert ok(http.post("/greetings/bo", json={"greeting": "Bye"})) == "Bye, bo!"


def test_a_name_given_in_two_places_is_400_conflict(http: httpx.Client) -> None:
    assert arg_errors(http.post("/greetings/ann?name=bob")) == [
        {"loc": ["query", "name"], "msg": "also given in the path", "type": "conflicting_argument"}
    ]
    assert arg_errors(http.post("/greetings/ann", json={"name": "bob"})) == [
        {"loc": ["body", "name"], "msg": "also given in the path", "type": "conflicting_argument"}
    ]
    assert arg_errors(http.post("/greetings/ann?greeting=Hi", json={"greeting": "Yo"})) == [
        {
            "loc": ["body", "greeting"],
            "msg": "also given in the query",
            "type": "conflicting_argument",
        }
    ]


def test_route_argument_problems_are_400(http: httpx.Client) -> None:
    assert arg_errors(http.get("/sum/1")) == [
        {"loc": ["body", "b"], "msg": "missing required argument", "type": "missing_argument"}
    ]
    assert arg_errors(http.post("/greetings/ann", json=["Hi"])) == [
        {"loc": ["body"], "msg": "must be an object of named arguments", "type": "invalid_type"}
    ]
    assert arg_errors(http.post("/z/greetings/ann")) == [
        {
            "loc": ["path", "name"],
            "msg": "argument names are unknown",
            "type": "argument_names_unknown",
        }
    ]


def test_a_route_maps_backend_errors_and_verbs(http: httpx.Client) -> None:
    doc = problem(http.get("/items/nope"), 404, "not_found")
    assert doc["remote"] == {"name": "KeyError", "message": "'nope'"}
    answer = http.post("/items/apple")
    problem(answer, 405, None)
    assert set(answer.headers["allow"].split(", ")) == {"GET", "HEAD"}
    problem(http.get("/no/such/route"), 404, "unimplemented")


# -- the catalog -----------------------------------------------------------------------------


def _arg(name: str, schema: dict[str, Any] | None = None, **default: Any) -> dict[str, Any]:
    arg: dict[str, Any] = {"name": name, **default}
    if schema is not None:
        arg["schema"] = schema
    return arg


INT: Final = {"type": "integer"}
STR: Final = {"type": "string"}
NUM: Final = {"type": "number"}


def test_the_catalog_of_a_service(http: httpx.Client) -> None:
    entry = ok(http.get("/rpc/shop"))
    assert set(entry) == {"doc", "methods"}
    assert entry["doc"] == (
        "A small shop, for the gateway's end-to-end tests.\n\n"
        "It has typed methods, a stream, methods that raise and a slow one."
    )
    methods = entry["methods"]
    assert set(methods) == SHOP_METHODS
    assert methods["add"] == {
        "args": [_arg("a", INT), _arg("b", INT)],
        "doc": "Add two integers.",
        "stream": False,
        "safe": True,
    }
    assert methods["greet"] == {
        "args": [
            _arg("name", STR),
            _arg("greeting", STR, default="Hello"),
            _arg("punct", STR, default="!"),
        ],
        "doc": "Greet someone.",
        "stream": False,
    }
    assert methods["count"] == {
        "args": [_arg("n", INT)],
        "doc": "Stream 0 .. n - 1.",
        "stream": True,
    }
    assert methods["echo"] == {
        "args": [_arg("value")],
        "doc": "Return the value as received.",
        "stream": False,
    }
    assert methods["nan"] == {"args": [], "doc": "A value JSON cannot hold.", "stream": False}
    assert methods["list_items"]["args"] == [
        _arg("order", {"enum": ["name", "price"]}, default="name")
    ]
    assert methods["slow"]["args"] == [_arg("seconds", NUM)]
    for name, method in methods.items():
        assert set(method) <= {"args", "doc", "stream", "safe"}, name
        assert all(arg["name"] != "self" for arg in method["args"]), name
        assert method.get("safe", False) is (name in SAFE), name


def test_the_catalog_of_a_zerorpc_063_service(http: httpx.Client) -> None:
    entry = ok(http.get("/rpc/shop-z"))
    shop = ok(http.get("/rpc/shop"))
    assert set(entry["methods"]) == SHOP_METHODS
    for name, method in entry["methods"].items():
        safe = {"safe": True} if name in SAFE else {}
        assert method == {
            "args": None,
            "doc": shop["methods"][name]["doc"],
            "stream": None,
            **safe,
        }


def test_the_catalog_of_every_service(http: httpx.Client) -> None:
    catalog = ok(http.get("/rpc"))
    assert set(catalog) == {"services"}
    assert set(catalog["services"]) == {
        "shop",
        "shop-aio",
        "shop-z",
        "plain",
        "limited",
        "quick",
        "metered",
        "extra",
    }
    for name, entry in catalog["services"].items():
        assert entry == ok(http.get(f"/rpc/{name}")), name
    assert catalog["services"]["shop-aio"] == catalog["services"]["shop"]
    assert catalog["services"]["extra"]["methods"]["probe"]["args"][:2] == [
        {"name": "a"},
        {"name": "b", "default": "b-default"},
    ]


# -- backend errors ------------------------------------------------------------------------


@pytest.mark.parametrize("service", ALL_SHOPS)
def test_mapped_exceptions_get_their_status_and_code(http: httpx.Client, service: str) -> None:
    doc = problem(http.post(f"/rpc/{service}/get_item", json=["nope"]), 404, "not_found")
    assert doc["remote"] == {"name": "KeyError", "message": "'nope'"}
    assert doc["rpc"] == {"service": service, "method": "get_item"}
    doc = problem(http.post(f"/rpc/{service}/fail", json=["bad input"]), 400, "invalid_argument")
    assert doc["remote"] == {"name": "ValueError", "message": "bad input"}
    assert doc["detail"] == "ValueError: bad input"


def test_an_unmapped_exception_is_500_without_traceback(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    answer = http.post("/rpc/plain/fail", json=["secret detail"])
    doc = problem(answer, 500, "unknown")
    assert doc["remote"] == {"name": "ValueError", "message": "secret detail"}
    assert doc["rpc"] == {"service": "plain", "method": "fail"}
    assert "Traceback" not in answer.text
    assert "backends.py" not in answer.text
    trace_id = answer.headers["x-trace-id"]

    def logged() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "zerogate.gateway" and trace_id in r.getMessage()
        ]

    [record] = eventually(logged, 2, "the remote error in the gateway log")
    message = record.getMessage()
    assert "plain.fail raised ValueError: secret detail" in message
    assert "Traceback (most recent call last)" in message
    assert "raise ValueError(message)" in message


def test_a_type_error_of_the_backend_is_500(http: httpx.Client) -> None:
    doc = problem(http.post("/rpc/shop/add", json=["a", 1]), 500, "unknown")
    assert doc["remote"] == {
        "name": "TypeError",
        "message": 'can only concatenate str (not "int") to str',
    }


def test_expose_tracebacks_puts_the_remote_traceback_in_the_problem(
    shared: Shared,
) -> None:
    config = "gateway:\n  expose_tracebacks: true\nservices:\n" + service_config(
        "shop", [shared.endpoints["green"]]
    )
    with Gateway(config) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as http:
        doc = problem(http.post("/rpc/shop/fail", json=["shown"]), 500, "unknown")
        assert set(doc["remote"]) == {"name", "message", "traceback"}
        assert (doc["remote"]["name"], doc["remote"]["message"]) == ("ValueError", "shown")
        assert "Traceback (most recent call last)" in doc["remote"]["traceback"]
        assert "raise ValueError(message)" in doc["remote"]["traceback"]


# -- results -------------------------------------------------------------------------------


@pytest.mark.parametrize("service", OURS)
def test_bytes_become_text_or_base64(http: httpx.Client, service: str) -> None:
    assert ok(http.post(f"/rpc/{service}/blob", json=[3])) == {"$base64": "////"}
    assert ok(http.post(f"/rpc/{service}/blob", json=[0])) == ""
    utf8 = http.post(
        f"/rpc/{service}/echo", content=packb(["héllo".encode()]), headers={"content-type": MSGPACK}
    )
    assert ok(utf8) == "héllo"


def test_bytes_from_zerorpc_063_become_base64(http: httpx.Client) -> None:
    assert ok(http.post("/rpc/shop-z/blob", json=[3])) == {"$base64": "////"}


@pytest.mark.parametrize("service", OURS)
def test_map_keys_become_strings(http: httpx.Client, service: str) -> None:
    value = {1: "one", 2.5: "x", False: "f", None: "n", b"k": [{3: b"\xff"}]}
    answer = http.post(
        f"/rpc/{service}/echo", content=packb([value]), headers={"content-type": MSGPACK}
    )
    assert ok(answer) == {
        "1": "one",
        "2.5": "x",
        "false": "f",
        "null": "n",
        "k": [{"3": {"$base64": "/w=="}}],
    }


def test_nan_is_an_error_that_points_to_msgpack(http: httpx.Client) -> None:
    doc = problem(http.post("/rpc/shop/nan"), 502, "internal")
    assert "NaN" in doc["detail"]
    assert "Accept: application/msgpack" in doc["detail"]


def test_the_nan_problem_names_the_call(http: httpx.Client) -> None:
    # DESIGN.md: problems carry rpc: {service, method}; this one is about a resolved call.
    doc = problem(http.post("/rpc/shop/nan"), 502, "internal")
    assert doc["rpc"] == {"service": "shop", "method": "nan"}


@pytest.mark.parametrize("service", OURS)
def test_accept_msgpack_keeps_bytes_and_nan(http: httpx.Client, service: str) -> None:
    answer = http.post(f"/rpc/{service}/blob", json=[3], headers={"accept": MSGPACK})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == MSGPACK
    assert unpackb(answer.content) == b"\xff\xff\xff"
    answer = http.post(f"/rpc/{service}/nan", headers={"accept": MSGPACK})
    assert answer.status_code == 200
    assert math.isnan(unpackb(answer.content))


@pytest.mark.parametrize("service", OURS)
def test_a_msgpack_body_round_trips_bytes(http: httpx.Client, service: str) -> None:
    value = {"raw": b"\x00\xff\xfe", 7: [b"", b"\x80", "text", 1.5, None], b"\xc0": True}
    answer = http.post(
        f"/rpc/{service}/echo",
        content=packb([value]),
        headers={"content-type": MSGPACK, "accept": MSGPACK},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == MSGPACK
    assert unpackb(answer.content) == value


def test_a_msgpack_body_of_named_arguments(http: httpx.Client) -> None:
    answer = http.post(
        "/rpc/shop/echo",
        content=packb({"value": b"\x01\x02"}),
        headers={"content-type": MSGPACK, "accept": MSGPACK},
    )
    assert unpackb(answer.content) == b"\x01\x02"


def test_a_msgpack_body_to_zerorpc_063(http: httpx.Client) -> None:
    answer = http.post(
        "/rpc/shop-z/echo",
        content=packb([[b"\x00\xff", "s"]]),
        headers={"content-type": MSGPACK, "accept": MSGPACK},
    )
    assert answer.status_code == 200, answer.text
    assert unpackb(answer.content) == [b"\x00\xff", "s"]


def test_a_body_over_max_body_bytes_is_413(http: httpx.Client) -> None:
    doc = problem(http.post("/rpc/shop/echo", content=b"[" + b" " * 70_000 + b"1]"), 413, None)
    assert "65536" in doc["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'["'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"]'

    problem(http.post("/rpc/shop/echo", content=chunked()), 413, None)
    assert ok(http.post("/rpc/shop/echo", json=["x" * 60_000])) == "x" * 60_000


def test_an_unsupported_content_type_is_415(http: httpx.Client) -> None:
    answer = http.post("/rpc/shop/add", content=b"1 2", headers={"content-type": "text/plain"})
    problem(answer, 415, None)


# -- headers: trace context ----------------------------------------------------------------


def test_a_valid_traceparent_is_continued(http: httpx.Client) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = http.post(
        "/rpc/shop/add", json=[1, 2], headers={"traceparent": f"00-{trace_id}-{parent}-01"}
    )
    assert ok(answer) == 3
    assert answer.headers["x-trace-id"] == trace_id
    version, returned_trace, span, flags = answer.headers["traceparent"].split("-")
    assert (version, returned_trace, flags) == ("00", trace_id, "01")
    assert SPAN_ID.fullmatch(span)
    assert span != parent


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(http: httpx.Client, header: str) -> None:
    answer = http.post("/rpc/shop/add", json=[1, 2], headers={"traceparent": header})
    assert ok(answer) == 3
    trace_id = answer.headers["x-trace-id"]
    assert TRACE_ID.fullmatch(trace_id)
    assert trace_id not in header
    assert trace_id != "0" * 32
    assert answer.headers["traceparent"].split("-")[1] == trace_id


def test_every_answer_has_a_trace_id(http: httpx.Client) -> None:
    answers = [
        http.post("/rpc/shop/add", json=[1, 2]),  # 200
        http.get("/healthz"),
        http.get("/rpc"),
        http.post("/rpc/shop/nope"),  # 404 of the registry
        http.get("/no/such/path"),  # 404 of the router
        http.get("/rpc/shop/greet"),  # 405 of the endpoint
        http.get("/jsonrpc"),  # 405 of the router
        http.post("/rpc/shop/add", content=b"x" * 70_000),  # 413
        http.post("/rpc/shop/add", json=[1]),  # 400
        http.post("/rpc/shop/add", content=b"[]", headers={"content-type": "text/csv"}),  # 415
        http.post("/rpc/shop/fail", json=["x"]),  # 400 mapped
        http.post("/rpc/plain/fail", json=["x"]),  # 500
        http.post("/rpc/shop/nan"),  # 502
        http.post("/jsonrpc", json={"jsonrpc": "2.0", "method": "shop.add", "params": [1, 2]}),
    ]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 200, 200, 404, 404, 405, 405, 413, 400, 415, 400, 500, 502, 204]
    seen = set()
    for answer in answers:
        trace_id = answer.headers["x-trace-id"]
        assert TRACE_ID.fullmatch(trace_id), answer
        assert answer.headers["traceparent"].split("-")[1] == trace_id
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == PROBLEM
            assert answer.json()["trace_id"] == trace_id
        seen.add(trace_id)
    assert len(seen) == len(answers)


def test_the_router_405_lists_allow(http: httpx.Client) -> None:
    answer = http.get("/jsonrpc")
    problem(answer, 405, None)
    assert answer.headers["allow"] == "POST"


def test_the_trace_id_reaches_the_backend(http: httpx.Client) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    assert ok(http.post("/rpc/extra/trace", headers=headers)) == trace_id
    answer = http.post("/rpc/extra/trace")  # a new trace, still carried to the backend
    assert ok(answer) == answer.headers["x-trace-id"]
    call = {"jsonrpc": "2.0", "method": "extra.trace", "id": 1}
    answer = http.post("/jsonrpc", json=call, headers=headers)
    assert ok(answer) == {"jsonrpc": "2.0", "result": trace_id, "id": 1}


# -- headers: X-Timeout-Ms -------------------------------------------------------------------


def test_x_timeout_ms_lowers_the_timeout(http: httpx.Client) -> None:
    started = time.monotonic()
    answer = http.post("/rpc/shop/slow", json=[2], headers={"x-timeout-ms": "100"})
    elapsed = time.monotonic() - started
    doc = problem(answer, 504, "deadline_exceeded")
    assert doc["rpc"] == {"service": "shop", "method": "slow"}
    assert elapsed < 1.0
    # A timeout the call fits in is no problem.
    assert ok(http.post("/rpc/shop/slow", json=[0.05], headers={"x-timeout-ms": "5000"})) == 0.05


def test_x_timeout_ms_never_raises_the_service_timeout(http: httpx.Client) -> None:
    started = time.monotonic()
    answer = http.post("/rpc/quick/slow", json=[3], headers={"x-timeout-ms": "5000"})
    elapsed = time.monotonic() - started
    problem(answer, 504, "deadline_exceeded")
    assert 0.9 <= elapsed < 2.5


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "", "1e3"])
def test_an_invalid_x_timeout_ms_is_400(http: httpx.Client, value: str) -> None:
    answer = http.post("/rpc/shop/add", json=[1, 2], headers={"x-timeout-ms": value})
    assert arg_errors(answer) == [
        {
            "loc": ["header", "X-Timeout-Ms"],
            "msg": "not a positive integer",
            "type": "invalid_header",
        }
    ]


# -- POST /jsonrpc -------------------------------------------------------------------------


def test_jsonrpc_single_calls(http: httpx.Client) -> None:
    call = {"jsonrpc": "2.0", "method": "shop.add", "params": [1, 2], "id": 1}
    assert ok(http.post("/jsonrpc", json=call)) == {"jsonrpc": "2.0", "result": 3, "id": 1}
    call = {"jsonrpc": "2.0", "method": "shop.greet", "params": {"name": "ann"}, "id": "a"}
    assert ok(http.post("/jsonrpc", json=call)) == {
        "jsonrpc": "2.0",
        "result": "Hello, ann!",
        "id": "a",
    }
    call = {"jsonrpc": "2.0", "method": "shop-z.add", "params": [2, 2], "id": 2}
    assert ok(http.post("/jsonrpc", json=call)) == {"jsonrpc": "2.0", "result": 4, "id": 2}
    call = {"jsonrpc": "2.0", "method": "shop.list_items", "id": 3}  # params omitted
    assert ok(http.post("/jsonrpc", json=call))["result"][0] == {"name": "apple", "price": 0.5}


def test_jsonrpc_batch_answers_each_call(http: httpx.Client) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "shop.add", "params": [1, 2], "id": 1},
        {"jsonrpc": "2.0", "method": "shop.nope", "params": [], "id": 2},
        {"jsonrpc": "2.0", "method": "shop.add", "params": {"a": 1}, "id": 3},
        {"jsonrpc": "2.0", "method": "plain.fail", "params": ["boom"], "id": 4},
        {"jsonrpc": "2.0", "method": "shop.greet", "params": {"name": "x"}},  # notification
        {"jsonrpc": "2.0", "method": "shop.count", "params": [3], "id": 5},
        {"jsonrpc": "2.0", "method": "shop.fail", "params": ["mapped"], "id": 6},
        {"jsonrpc": "1.0", "method": "shop.add", "params": [1, 2], "id": 7},
        {"jsonrpc": "2.0", "method": "shop.blob", "params": [2], "id": 8},
        {"jsonrpc": "2.0", "method": "shop-z.greet", "params": {"name": "x"}, "id": 9},
        {"jsonrpc": "2.0", "method": "shop-z.greet", "params": ["z"], "id": 10},
    ]
    answer = http.post("/jsonrpc", json=batch)
    trace_id = answer.headers["x-trace-id"]
    got = ok(answer)
    assert [item["id"] for item in got] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert got[0] == {"jsonrpc": "2.0", "result": 3, "id": 1}
    assert got[1]["error"]["code"] == -32601
    assert got[1]["error"]["data"]["code"] == "unimplemented"
    assert got[2]["error"]["code"] == -32602
    assert got[2]["error"]["data"]["errors"] == [
        {"loc": ["body", "b"], "msg": "missing required argument", "type": "missing_argument"}
    ]
    assert got[3]["error"]["code"] == -32000
    data = got[3]["error"]["data"]
    assert (data["status"], data["code"]) == (500, "unknown")
    assert data["remote"] == {"name": "ValueError", "message": "boom"}
    assert data["rpc"] == {"service": "plain", "method": "fail"}
    assert "traceback" not in data["remote"]
    assert got[4] == {"jsonrpc": "2.0", "result": [0, 1, 2], "id": 5}
    assert got[5]["error"]["code"] == -32000  # a mapped backend exception is still -32000
    assert got[5]["error"]["data"]["status"] == 400
    assert got[6]["error"]["code"] == -32600
    assert got[7] == {"jsonrpc": "2.0", "result": {"$base64": "//8="}, "id": 8}
    assert got[8]["error"]["code"] == -32602  # 0.6.3 publishes no names
    assert got[8]["error"]["data"]["errors"][0]["type"] == "argument_names_unknown"
    assert got[9] == {"jsonrpc": "2.0", "result": "Hello, z!", "id": 10}
    for item in got:
        assert set(item) in ({"jsonrpc", "result", "id"}, {"jsonrpc", "error", "id"})
        if "error" in item:
            assert item["error"]["data"]["trace_id"] == trace_id
            assert item["error"]["message"] == item["error"]["data"]["detail"]


def test_jsonrpc_notifications_only_get_204(http: httpx.Client) -> None:
    notes = [
        {"jsonrpc": "2.0", "method": "shop.add", "params": [1, 2]},
        {"jsonrpc": "2.0", "method": "shop.nope"},
    ]
    answer = http.post("/jsonrpc", json=notes)
    assert (answer.status_code, answer.content) == (204, b"")
    answer = http.post("/jsonrpc", json=notes[0])
    assert (answer.status_code, answer.content) == (204, b"")
    assert TRACE_ID.fullmatch(answer.headers["x-trace-id"])


def test_jsonrpc_parse_error(http: httpx.Client) -> None:
    answer = http.post(
        "/jsonrpc", content=b'{"jsonrpc": "2.0", ', headers={"content-type": "application/json"}
    )
    got = ok(answer)
    assert set(got) == {"jsonrpc", "error", "id"}
    assert (got["jsonrpc"], got["id"], got["error"]["code"]) == ("2.0", None, -32700)
    assert got["error"]["data"]["trace_id"] == answer.headers["x-trace-id"]


def test_jsonrpc_timeout(http: httpx.Client) -> None:
    call = {"jsonrpc": "2.0", "method": "shop.slow", "params": [2], "id": 1}
    got = ok(http.post("/jsonrpc", json=call, headers={"x-timeout-ms": "100"}))
    assert got["error"]["code"] == -32001
    assert got["error"]["data"]["code"] == "deadline_exceeded"


# -- operations ------------------------------------------------------------------------------


def test_healthz_and_readyz(http: httpx.Client, shared: Shared) -> None:
    assert ok(http.get("/healthz")) == {"status": "ok"}
    ready = ok(http.get("/readyz"))
    assert ready["ready"] is True
    assert set(ready["services"]) == set(ok(http.get("/rpc"))["services"])
    shop = ready["services"]["shop-z"]
    assert (shop["ready"], shop["described"]) == (True, True)
    [endpoint] = shop["endpoints"]
    assert endpoint["endpoint"] == shared.endpoints["zerorpc"]
    assert endpoint["up"] is True


def http_endpoint(http: httpx.Client, service: str) -> str:
    endpoint: str = ok(http.get("/readyz"))["services"][service]["endpoints"][0]["endpoint"]
    return endpoint


def test_metrics_count_requests_by_service_method_and_status(http: httpx.Client) -> None:
    for _ in range(3):
        assert ok(http.post("/rpc/metered/add", json=[1, 1])) == 2
    arg_errors(http.post("/rpc/metered/add", json=[1]))
    problem(http.post("/rpc/metered/fail", json=["x"]), 500, "unknown")
    problem(http.post("/rpc/bogus-service-xyz/add"), 404, "unimplemented")
    problem(http.get("/bogus-path-xyz/1"), 404, "unimplemented")
    problem(http.put("/rpc/metered/add"), 405, None)

    endpoint = http_endpoint(http, "metered")
    expected = {
        sample("zerogate_requests_total", service="metered", method="add", status="200"): 3.0,
        sample("zerogate_requests_total", service="metered", method="add", status="400"): 1.0,
        sample("zerogate_requests_total", service="metered", method="add", status="405"): 1.0,
        sample("zerogate_requests_total", service="metered", method="fail", status="500"): 1.0,
        sample("zerogate_request_duration_seconds_count", service="metered", method="add"): 5.0,
        sample(
            "zerogate_request_errors_total",
            service="metered",
            method="fail",
            status="500",
            code="unknown",
        ): 1.0,
        sample("zerogate_endpoint_up", service="metered", endpoint=endpoint): 1.0,
        sample("zerogate_calls_in_flight", service="metered", endpoint=endpoint): 0.0,
    }

    def scraped() -> dict[Sample, float] | None:
        answer = http.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        found = samples(answer.text)
        return found if all(found.get(key) == value for key, value in expected.items()) else None

    found = eventually(scraped, 2, "the expected samples")
    metered = {key: v for key, v in found.items() if ("service", "metered") in key[1]}
    calls = {
        key
        for key in metered
        if key[0] == "zerogate_requests_total" and ("method", "(unrouted)") not in key[1]
    }
    assert len(calls) == 4  # no other label set for this service's methods
    for name, labels in found:
        for label, value in labels:
            assert "bogus" not in value, (name, label, value)
    unrouted = sample(
        "zerogate_requests_total", service="(unrouted)", method="(unrouted)", status="404"
    )
    assert found[unrouted] >= 2


def test_metrics_count_an_unknown_method_under_its_known_service(http: httpx.Client) -> None:
    # metrics.py: "a known service with method=None (an unknown method of it, its catalog)"
    # is recorded as method="(unrouted)" under that service.
    key_404 = sample("zerogate_requests_total", service="plain", method="(unrouted)", status="404")
    key_200 = sample("zerogate_requests_total", service="plain", method="(unrouted)", status="200")
    before = samples(http.get("/metrics").text)
    problem(http.post("/rpc/plain/bogus-method-xyz"), 404, "unimplemented")
    ok(http.get("/rpc/plain"))

    def counted() -> dict[Sample, float] | None:
        found = samples(http.get("/metrics").text)
        done = found.get(key_404, 0) - before.get(key_404, 0) == 1
        return found if done and found.get(key_200, 0) - before.get(key_200, 0) == 1 else None

    found = eventually(counted, 2, "the unknown method counted under its service")
    assert not [labels for _, labels in found if any("bogus" in v for _, v in labels)]


def test_metrics_errors_without_a_code_have_an_empty_code_label(http: httpx.Client) -> None:
    # metrics.py: code is "the problem document's code, empty when it had none" (405, 413).
    answer = http.put("/rpc/limited/add")
    problem(answer, 405, None)

    def scraped() -> dict[Sample, float]:
        found = samples(http.get("/metrics").text)
        return {
            key: value
            for key, value in found.items()
            if key[0] == "zerogate_request_errors_total"
            and ("service", "limited") in key[1]
            and ("status", "405") in key[1]
        }

    errors = eventually(scraped, 2, "the 405 in zerogate_request_errors_total")
    assert errors == {
        sample(
            "zerogate_request_errors_total",
            service="limited",
            method="add",
            status="405",
            code="",
        ): 1.0
    }


def test_the_access_log_has_one_json_line_per_request(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zerogate.access")
    answers = [
        http.post("/rpc/shop/add", json=[1, 2]),
        http.get("/no/such/path?x=1"),
        http.put("/rpc/shop/greet"),
        http.post("/jsonrpc", json={"jsonrpc": "2.0", "method": "shop.add", "params": [1, 1]}),
    ]
    expected = [
        ("POST", "/rpc/shop/add", 200, "shop.add"),
        ("GET", "/no/such/path", 404, None),
        ("PUT", "/rpc/shop/greet", 405, "shop.greet"),
        ("POST", "/jsonrpc", 204, None),
    ]
    for answer, (method, path, status, rpc) in zip(answers, expected, strict=True):
        trace_id = answer.headers["x-trace-id"]
        [line] = eventually(partial(access_records, caplog, trace_id), 2, "the access line")
        assert (line["method"], line["path"], line["status"]) == (method, path, status)
        assert line["trace_id"] == trace_id
        assert line.get("rpc") == rpc
        assert line["bytes"] == len(answer.content)
        assert line["duration_ms"] >= 0


# -- curl ----------------------------------------------------------------------------------


def test_curl_posts_json_arrays_and_objects(shared: Shared) -> None:
    # curl -d sends application/x-www-form-urlencoded: read as JSON all the same.
    assert curl("-d", "[2, 3]", f"{shared.url}/rpc/shop/add")[0::2] == (200, "5")
    status, headers, body = curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"name": "ann", "punct": "?"}',
        f"{shared.url}/rpc/shop/greet",
    )
    assert (status, body) == (200, '"Hello, ann?"')
    assert headers["content-type"] == "application/json"
    assert TRACE_ID.fullmatch(headers["x-trace-id"])
    status, headers, body = curl("-X", "POST", f"{shared.url}/rpc/shop/list_items")
    assert (status, json.loads(body)[0]["name"]) == (200, "apple")


def test_curl_get_put_and_a_form_body_that_is_not_json(shared: Shared) -> None:
    status, _, body = curl(f"{shared.url}/rpc/shop/get_item?name=apple")
    assert (status, json.loads(body)) == (200, {"name": "apple", "price": 0.5})
    status, headers, body = curl("-X", "PUT", f"{shared.url}/rpc/shop/greet")
    assert (status, headers["allow"], headers["content-type"]) == (405, "POST", PROBLEM)
    assert json.loads(body)["trace_id"] == headers["x-trace-id"]
    status, headers, body = curl("-d", "name=ann", f"{shared.url}/rpc/shop/greet")
    assert (status, headers["content-type"]) == (400, PROBLEM)
    assert "-H 'Content-Type: application/json'" in json.loads(body)["detail"]


# -- backends that come late, go away, or change ---------------------------------------------


def test_a_backend_that_comes_late(children: Children) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    config = "services:\n" + service_config("late", [endpoint], timeout=1, heartbeat=0.5, refresh=1)
    with Gateway(config) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert ok(http.get("/rpc/late")) == {"doc": None, "methods": {}, "available": False}
        answer = http.post("/rpc/late/add", json=[1, 2])
        doc = problem(answer, 503, "unavailable")
        assert answer.headers["retry-after"] == "1"
        assert doc["rpc"] == {"service": "late", "method": None}
        call = {"jsonrpc": "2.0", "method": "late.add", "params": [1, 2], "id": 1}
        assert ok(http.post("/jsonrpc", json=call))["error"]["code"] == -32002

        def not_ready() -> httpx.Response | None:
            answer = http.get("/readyz")
            return answer if answer.status_code == 503 else None

        answer = eventually(not_ready, 5, "/readyz 503")
        doc = problem(answer, 503, "unavailable")
        assert answer.headers["retry-after"] == "1"
        assert doc["ready"] is False
        assert doc["services"]["late"]["ready"] is False
        assert doc["services"]["late"]["endpoints"][0]["endpoint"] == endpoint
        assert doc["services"]["late"]["endpoints"][0]["up"] is False
        assert ok(http.get("/healthz")) == {"status": "ok"}  # alive, if not ready

        start_backend(children, "aio", port=port, heartbeat=0.5)
        # The periodic refresh (every second) describes it without any call.
        entry = eventually(
            lambda: ok(http.get("/rpc/late"))["methods"], 10, "the late service described"
        )
        assert set(entry) == SHOP_METHODS

        def called() -> bool:
            return http.post("/rpc/late/add", json=[1, 2]).status_code == 200

        eventually(called, 5, "a call to the late backend")
        assert ok(http.post("/rpc/late/greet", json={"name": "late"})) == "Hello, late!"
        assert ok(http.get("/readyz"))["ready"] is True


def test_a_method_gone_after_a_redeploy_is_404_and_the_service_is_described_again(
    children: Children, tmp_path: Path
) -> None:
    script = write_extra(tmp_path)
    port = free_port()
    first = start_extra(children, script, "v1", port)
    config = "services:\n" + service_config("app", [f"tcp://127.0.0.1:{port}"])
    with Gateway(config) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert ok(http.post("/rpc/app/old")) == "old"
        problem(http.post("/rpc/app/new"), 404, "unimplemented")
        assert set(ok(http.get("/rpc/app"))["methods"]) == {"old", "probe", "trace"}

        children.kill(first)
        start_extra(children, script, "v2", port)
        # The gateway still lists old(); the backend answers NameError: a 404 all the same,
        # and the gateway describes the service again (refresh is 30 s: not the timer).
        doc = problem(http.post("/rpc/app/old"), 404, "unimplemented")
        assert doc["rpc"] == {"service": "app", "method": "old"}
        methods = eventually(
            lambda: set(ok(http.get("/rpc/app"))["methods"]) == {"new", "probe", "trace"},
            5,
            "the service described again",
        )
        assert methods
        assert ok(http.post("/rpc/app/new")) == "new"
        problem(http.post("/rpc/app/old"), 404, "unimplemented")
