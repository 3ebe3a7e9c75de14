"""Shared by the OpenAPI tests: a typed service described by our real introspection, a
zerorpc 0.6.3-style description, configs, the validator, golden files and child processes.

Golden files: ``tests/openapi/golden/*.json`` hold the expected documents. After a deliberate
change to the document, regenerate them with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/openapi -k golden

and review the diff; without UPDATE_GOLDEN a document that differs fails its test.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NotRequired, Optional, TypedDict

from loopback import free_port, wait_for_port
from openapi_spec_validator import validate

from gateway.config import Config, parse_config
from gateway.registry import Description, exposed_description
from openapi import build_document, render_json
from rpccore import stream
from rpccore._describe import from_fallback, from_inspect
from rpccore._introspect import describe
from rpccore._service import is_stream, public_methods, service_doc

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent.parent
GOLDEN: Final = HERE / "golden"
UPDATE_ENV: Final = "UPDATE_GOLDEN"
VERSION: Final = "0.0.0-test"  # not the package's: a release must not change the goldens
START_TIMEOUT: Final = 20.0


# -- a typed service ----------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(TypedDict):
    street: str
    city: str
    zip: NotRequired[str]


@dataclasses.dataclass
class Order:
    id: int
    items: list[str]
    color: Color = Color.RED
    note: str | None = None
    address: Address | None = None


class Shop:
    """A typed shop for the OpenAPI tests.

    It uses every kind of annotation our servers publish a schema for."""

    def get_order(self, order_id: int) -> Order:
        """Fetch one order.

        Raises KeyError when there is no such order."""
        return Order(order_id, [])

    def get_status(self) -> str:
        """Whether the shop is open."""
        return "open"

    def place(
        self, items: list[str], color: Color = Color.GREEN, address: Address | None = None
    ) -> Order:
        """Place an order."""
        return Order(1, items, color, address=address)

    def tally(self, counts: dict[str, int], *extra: int) -> int:
        """Add up counts and any extra numbers."""
        return sum(counts.values()) + sum(extra)

    def pick(self, mode: Literal["fast", "slow"], limit: Optional[int] = None) -> list[Color]:  # noqa: UP045 - Optional is one of the annotations under test
        """Pick colors."""
        return list(Color)[:limit]

    def checksum(self, data: bytes, seed: bytes = b"\xff") -> bytes:
        """A checksum of some bytes."""
        return data[:4] + seed

    def pair(self, point: tuple[int, str]) -> tuple[float, ...]:
        """Tuples both ways."""
        return (1.0,)

    def watch(self, order_id: int, every: float = 1.0) -> Iterable[Order]:
        """Stream an order as it changes."""
        yield Order(order_id, [])

    @stream
    def count(self, n: int) -> Iterator[int]:
        """Stream numbers (Iterator[int]: its items are integers)."""
        return iter(range(n))

    def nothing(self) -> None:
        """Return nothing."""

    def untyped(self, a, b=2):  # type: ignore[no-untyped-def]
        """No annotations at all."""
        return a

    def secret(self) -> str:
        """Hidden by the config's exclude globs."""
        return "no"


def typed_description(config: Config, name: str = "shop", obj: object | None = None) -> Description:
    """``obj`` (default: a ``Shop``) as the gateway sees it: our server's real
    ``_zerorpc_inspect`` answer, normalised, then filtered by the service's config."""
    obj = Shop() if obj is None else obj
    methods = public_methods(obj)
    streams = [n for n, m in methods.items() if is_stream(m)]
    answer = describe(name, methods, streams, service_doc(obj))
    return exposed_description(config.services[name], from_inspect(answer))


TYPED_CONFIG: Final = """\
services:
  shop:
    endpoints: [tcp://127.0.0.1:4242]
    safe: ["get_*", "pick"]
    methods: {include: ["*"], exclude: ["_*", "secret"]}
    errors: {KeyError: 404, ValueError: 400, PermissionError: 403, LookupError: 409}
routes:
  - {method: GET,  path: "/orders/{order_id}",   call: shop.get_order}
  - {method: POST, path: "/orders",              call: shop.place}
  - {method: PUT,  path: "/tallies/{counts}",    call: shop.tally}
  - {method: GET,  path: "/status",              call: shop.get_status}
"""


# -- a zerorpc 0.6.3 backend ---------------------------------------------------------------

# What _zerorpc_help answers on 0.6.3: the raw docstrings, indentation included.
LEGACY_DOCS: Final[dict[str, Any]] = {
    "add": "Add two numbers.\n\n        Any numbers.\n        ",
    "get_item": "One item of the stock; KeyError when there is none.",
    "count": None,
}

FALLBACK_CONFIG: Final = """\
services:
  legacy:
    endpoints: [tcp://127.0.0.1:4243]
    safe: ["get_*"]
    errors: {KeyError: 404}
  ledger:
    endpoints: [tcp://127.0.0.1:4244]
routes:
  - {method: GET,  path: "/legacy/{name}", call: legacy.get_item}
  - {method: POST, path: "/legacy/add",    call: legacy.add}
  - {method: GET,  path: "/ledger",        call: ledger.total}
auth:
  mode: token
  secret: env:ZEROGATE_SECRET
  public: [/healthz, /readyz, /legacy/add]
"""


def fallback_description(config: Config, name: str = "legacy") -> Description:
    """What the registry makes of a zerorpc 0.6.3 backend (``_zerorpc_list`` + ``_help``)."""
    return exposed_description(config.services[name], from_fallback(name, LEGACY_DOCS))


# -- documents ----------------------------------------------------------------------------


def typed_document(config_text: str = TYPED_CONFIG) -> dict[str, Any]:
    config = parse_config(config_text)
    return build_document({"shop": typed_description(config)}, config, version=VERSION)


def fallback_document(config_text: str = FALLBACK_CONFIG) -> dict[str, Any]:
    config = parse_config(config_text)
    services = {"legacy": fallback_description(config), "ledger": None}
    return build_document(services, config, version=VERSION)


def valid(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """``document``, after openapi-spec-validator found it valid (it raises otherwise)."""
    validate(document)
    return document


def operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, verb, operation) of every operation."""
    for path, item in document["paths"].items():
        for verb, op in item.items():
            yield path, verb, op


def check_golden(name: str, document: Mapping[str, Any], *, update: bool | None = None) -> None:
    """Compare ``document`` with ``golden/{name}.json``; rewrite it instead when ``update``
    (default: the UPDATE_GOLDEN environment variable is 1)."""
    path = GOLDEN / f"{name}.json"
    text = render_json(document, indent=2).decode()
    if update is None:
        update = os.environ.get(UPDATE_ENV) == "1"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if text != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), text.splitlines(), "expected", "built", lineterm="", n=2
        )
        shown = "\n".join(list(diff)[:80])
        raise AssertionError(
            f"the document differs from {path}; if the change is meant, "
            f"regenerate it: {UPDATE_ENV}=1 .venv/bin/python -m pytest tests/openapi -k golden"
            f"\n{shown}"
        )


# -- child processes ----------------------------------------------------------------------


class Children:
    """Child processes of one test, each killed by its PID at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *argv: str) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def demo_backend(self, name: str) -> str:
        """A ``gateway.demo_backends`` service; its endpoint (the one line it prints)."""
        proc = self.start("-m", "gateway.demo_backends", name, "--until-stdin-closes")
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("tcp://"), f"{name} printed {endpoint!r}"
        return endpoint

    def zerorpc_backend(self) -> str:
        """The real zerorpc 0.6.3 serving the gateway tests' ``Shop``; its endpoint."""
        port = free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        self.start(str(REPO / "tests" / "gateway" / "backends.py"), "zerorpc", endpoint)
        wait_for_port(port)
        return endpoint

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
