"""``zerogate openapi`` (gateway.openapi_command) and the validity of the documents of real
backends: the demo services (offline and live) and a real zerorpc 0.6.3 server."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_support import VERSION, Children, valid

from gateway.config import parse_config
from gateway.demo import DEMO_CONFIG
from gateway.demo_backends import Calc, Inventory
from gateway.openapi_command import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, main, run
from gateway.registry import exposed_description
from openapi import build_document
from rpccore._describe import from_inspect
from rpccore._service import Service


@pytest.fixture
def children() -> Iterator[Children]:
    procs = Children()
    try:
        yield procs
    finally:
        procs.stop_all()


def demo_config(calc: str, inventory: str) -> str:
    return DEMO_CONFIG.substitute(host="127.0.0.1", port=8080, calc=calc, inventory=inventory)


def run_command(tmp_path: Path, config_text: str, *, as_yaml: bool = False) -> tuple[int, str, str]:
    path = tmp_path / "zerogate.yaml"
    path.write_text(config_text)
    out, err = io.StringIO(), io.StringIO()
    code = run(path, as_yaml=as_yaml, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_demo_services_described_offline_give_a_valid_document() -> None:
    config = parse_config(demo_config("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"))
    services = {
        name: exposed_description(
            config.services[name], from_inspect(Service(obj, name=name)._inspect())
        )
        for name, obj in (("calc", Calc()), ("inventory", Inventory()))
    }
    document = valid(build_document(services, config, version=VERSION))
    assert {"/items", "/items/{sku}", "/items/{sku}/reserve"} <= set(document["paths"])
    assert "get" in document["paths"]["/rpc/inventory/list_items"]
    assert "Point" in document["components"]["schemas"]


def test_a_config_error_exits_2(tmp_path: Path) -> None:
    code, out, err = run_command(tmp_path, "services:\n  calc:\n    endpoint: tcp://x:1\n")
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("zerogate openapi: ")
    assert "line 3" in err


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert run(tmp_path / "nope.yaml", stderr=err) == EXIT_USAGE
    assert "no such config file" in err.getvalue()


def test_an_unreachable_service_is_listed_as_unavailable(tmp_path: Path) -> None:
    config = "services:\n  calc:\n    endpoints: [tcp://127.0.0.1:9]\n    timeout: 0.3\n"
    code, out, err = run_command(tmp_path, config)
    assert code == EXIT_INCOMPLETE
    document = valid(json.loads(out))
    assert document["tags"][0]["description"].startswith("Unavailable")
    assert "service calc could not be described (TimeoutExpired" in err


@pytest.mark.slow
def test_live_demo_services(tmp_path: Path, children: Children) -> None:
    calc, inventory = children.demo_backend("calc"), children.demo_backend("inventory")
    code, out, err = run_command(tmp_path, demo_config(calc, inventory))
    assert (code, err) == (EXIT_OK, "")
    document: dict[str, Any] = dict(valid(json.loads(out)))
    add = document["paths"]["/rpc/calc/add"]["post"]
    assert add["operationId"] == "calc.add"
    assert add["summary"] == "Add two integers."
    count = document["paths"]["/rpc/calc/count"]["post"]["responses"]["200"]["content"]
    assert set(count) == {"application/x-ndjson", "text/event-stream"}
    code, text, _ = run_command(tmp_path, demo_config(calc, inventory), as_yaml=True)
    assert code == EXIT_OK
    assert yaml.safe_load(text)["paths"].keys() == document["paths"].keys()


@pytest.mark.slow
def test_live_zerorpc_063_backend(tmp_path: Path, children: Children) -> None:
    endpoint = children.zerorpc_backend()
    config = (
        f"services:\n  shop:\n    endpoints: [{endpoint}]\n    safe: ['get_*']\n"
        "routes:\n  - {method: POST, path: /add, call: shop.add}\n"
    )
    code, out, err = run_command(tmp_path, config)
    assert (code, err) == (EXIT_OK, "")
    document = valid(json.loads(out))
    add = document["paths"]["/rpc/shop/add"]["post"]
    assert add["summary"] == "Add two integers."
    schema = add["requestBody"]["content"]["application/json"]["schema"]
    assert schema["type"] == "array"  # no names: positional arguments only
    assert "get" in document["paths"]["/rpc/shop/get_item"]
    assert "/add" in document["paths"]
    (tag,) = [t for t in document["tags"] if t["name"] == "shop"]
    assert "zerorpc 0.6.3" in tag["description"]


def test_main_takes_the_parsed_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``zerogate openapi -c FILE --yaml`` hands the command (``args.config``,
    ``args.yaml``)."""
    path = tmp_path / "bad.yaml"
    path.write_text("gateway: {prot: 1}\n")
    assert main(argparse.Namespace(config=path, yaml=True)) == EXIT_USAGE
    assert "unknown key" in capsys.readouterr().err
