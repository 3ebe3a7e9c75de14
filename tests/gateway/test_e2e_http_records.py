"""The gateway's trace record of each HTTP request, through a real uvicorn: named after the
route that matched, never after the raw path (the collector counts statistics per name, so a
caller must not be able to invent names); none for a request that matched no API route (a
scanner's 404s must not push real traces out of the recent list), nor for the gateway's own
pages."""

from __future__ import annotations

from typing import Any

import httpx
from e2e_support import Children, Gateway, service_config, start_backend, wait_until
from loopback import free_port
from trace_capture import recording

# (verb, path, JSON body or None) -> the record's name
API_CALLS: list[tuple[tuple[str, str, Any], str]] = [
    (("POST", "/rpc/shop/add", [2, 3]), "POST /rpc/shop/add"),
    (("GET", "/shop/sum/2/3", None), "GET /shop/sum/{a}/{b}"),
    (("GET", "/rpc", None), "GET /rpc"),
    (("GET", "/rpc/shop", None), "GET /rpc/{service}"),
    (("PUT", "/rpc", None), "PUT /rpc"),  # 405: the route matched the path only
    (
        ("POST", "/jsonrpc", {"jsonrpc": "2.0", "method": "shop.add", "params": [1, 1], "id": 1}),
        "POST /jsonrpc",
    ),
]
# Not found (no API route matched): no record.
NOT_FOUND: list[tuple[str, str, Any]] = [
    ("POST", "/rpc/shop/no_such_method", []),
    ("POST", "/rpc/shop/_hidden", []),
    ("POST", "/rpc/no_such_service/add", []),
    ("GET", "/wp-admin/setup-config.php", None),
    ("GET", "/shop/9f1c2e7a-random-id", None),
    ("GET", "/favicon.ico", None),  # every browser asks
    ("PROPFIND", "/no/such/path", None),
]
OWN_PAGES = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc", "/traces/x"]


def test_http_records_are_named_by_route_and_unmatched_requests_and_own_pages_make_none(
    children: Children,
) -> None:
    endpoint, _ = start_backend(children, "green")
    config = (
        "services:\n"
        + service_config("shop", [endpoint])
        + '\nroutes:\n  - {method: GET, path: "/shop/sum/{a}/{b}", call: shop.add}\n'
        + f"tracing: {{query: 'tcp://127.0.0.1:{free_port()}'}}\n"
    )
    with (
        recording("gw") as records,
        Gateway(config) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10) as http,
    ):
        # First: the records of one process leave in order, so once the API calls' records
        # are in, any of these would be too.
        for path in OWN_PAGES:
            answer = http.get(path)
            assert answer.status_code in (200, 400), (path, answer.status_code, answer.text)
        for verb, path, body in NOT_FOUND:
            answer = http.request(verb, path, json=body)
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
            assert answer.headers["x-trace-id"]  # still a trace id for the caller's logs
        trace_ids = {}
        for (verb, path, body), name in API_CALLS:
            answer = http.request(verb, path, json=body)
            assert answer.status_code < 500, (path, answer.status_code, answer.text)
            trace_ids[answer.headers["x-trace-id"]] = name
        other = http.request("PROPFIND", "/rpc/shop/add")
        trace_ids[other.headers["x-trace-id"]] = "_OTHER"

        def http_records() -> list[dict[str, Any]]:
            return [r for r in records.records if r["side"] == "http"]

        wait_until(
            lambda: None if len(http_records()) >= len(trace_ids) else f"{len(http_records())}",
            5.0,
            "the HTTP records",
        )
    named = {r["tid"]: r["m"] for r in http_records()}
    assert named.keys() == trace_ids.keys()  # one record per API request, no other
    for tid, expected in trace_ids.items():
        if expected == "_OTHER":  # a verb outside HTTP's own, whatever the route
            assert named[tid].split(" ")[0] == "_OTHER", named[tid]
        else:
            assert named[tid] == expected, (expected, named[tid])
    assert {r["svc"] for r in http_records()} == {"http"}
