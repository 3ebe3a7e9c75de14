"""The gateway end to end against each kind of backend: one call, one stream, one error."""

from __future__ import annotations

import httpx
import pytest
from e2e_support import Children, Gateway, service_config, start_backend


@pytest.mark.parametrize("kind", ["green", "aio", "zerorpc"])
def test_call_stream_and_error_through_each_backend(children: Children, kind: str) -> None:
    endpoint, _ = start_backend(children, kind)
    config = "services:\n" + service_config("shop", [endpoint], errors="{ValueError: 400}")
    with Gateway(config) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as http:
        answer = http.post("/rpc/shop/add", json=[2, 3])
        assert (answer.status_code, answer.json()) == (200, 5)
        assert answer.headers["x-trace-id"] == answer.headers["traceparent"].split("-")[1]
        lines = http.post("/rpc/shop/count", json=[3]).text.splitlines()
        assert lines == ['{"result":0}', '{"result":1}', '{"result":2}']
        failed = http.post("/rpc/shop/fail", json=["no"])
        assert failed.status_code == 400
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.json()["remote"] == {"name": "ValueError", "message": "no"}
        named = http.post("/rpc/shop/greet", json={"name": "ann"})
        if kind == "zerorpc":  # 0.6.3 publishes no argument names: arrays only
            assert named.status_code == 400
            assert "array" in named.json()["detail"]
        else:
            assert (named.status_code, named.json()) == (200, "Hello, ann!")
