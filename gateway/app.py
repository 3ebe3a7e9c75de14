"""The gateway's ASGI app: ``create_app(config)`` (DESIGN.md, "HTTP API").

    /rpc/{service}/{method}   POST (GET too for safe methods)  -> endpoints.RpcEndpoints
    /rpc, /rpc/{service}      GET catalogs
    /jsonrpc                  POST, JSON-RPC 2.0
    routes: of the config     REST paths onto methods
    /healthz /readyz /metrics operations

The lifespan opens one pool per service (one rpccore.aio socket per endpoint) and describes
every service; shutting down closes them. Every answer, the router's own 404 and 405
included, goes through ``observe.Observed`` (trace headers, metrics, access log), and every
error is a problem document.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

import rpccore.tracing
from auth.gate import scoped_catalog, scoped_service
from auth.wiring import Door
from openapi.cache import DocumentCache
from openapi.pages import docs_routes

from . import heap
from .access_log import AccessLog, LoggingAccessLog
from .config import AuthMode, Config
from .endpoints import RpcEndpoints
from .http_io import raw_route_path
from .metrics import Metrics
from .observe import Observed, request_info
from .payloads import JSON, ResultFormat, encode_result
from .problems import INTERNAL, Problem, not_found, unavailable
from .registry import Registry
from .responses import problem_response
from .trace_views import CollectorSource, trace_routes

log = logging.getLogger("zerogate.gateway")

_RPC_PREFIX: Final = "/rpc/"


class Gateway:
    """The app's state: the config, the registry of services and the metrics."""

    def __init__(self, config: Config, access_log: AccessLog, *, settle_heap: bool) -> None:
        self.config = config
        self.settle_heap = settle_heap
        self.access_log = access_log
        self.door = Door.from_config(config) if config.auth.mode is AuthMode.TOKEN else None
        self.registry = Registry(config)
        self.metrics = Metrics(
            lambda: [entry.pool.snapshot() for entry in self.registry.services.values()]
        )
        self.endpoints = RpcEndpoints(self.registry, config.gateway)
        self.document = DocumentCache.for_registry(self.registry, config)
        query = config.tracing.query
        self.trace_source = CollectorSource(query) if query is not None else None

    def __repr__(self) -> str:
        return f"<Gateway {self.registry!r}>"

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        collector = self.config.tracing.collector
        if collector is not None and not rpccore.tracing.is_enabled():
            rpccore.tracing.enable(collector, process_name="zerogate-gateway")
        await self.registry.open()
        if self.settle_heap:
            heap.settle()  # started: what exists now lives as long as the process
        try:
            yield
        finally:
            await self.registry.close()
            if self.door is not None:
                await self.door.aclose()
            if self.trace_source is not None:
                await self.trace_source.aclose()
            self.access_log.flush()

    def own_routes(self) -> list[BaseRoute]:
        """The gateway's own pages: health, metrics, the docs, the traces. Requests to them
        make no trace records (a health check every few seconds, or the statistics page
        refreshing itself, would bury the traces of API calls)."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
            *docs_routes(self.openapi_document, auth_on=self.config.auth.mode is AuthMode.TOKEN),
            *(trace_routes(self.trace_source) if self.trace_source is not None else []),
        ]

    def api_routes(self) -> list[BaseRoute]:
        """The catalogs, JSON-RPC and the config's REST routes (last: a built-in path wins);
        ``/rpc/{service}/{method}`` is ``FrontDoor``'s."""
        endpoints = self.endpoints
        rest = [
            Route(route.path, endpoints.route(route), methods=[route.method.value])
            for route in self.config.routes
        ]
        return [
            Route("/rpc", self.catalog, methods=["GET"]),
            Route("/rpc/{service}", self.service_catalog, methods=["GET"]),
            Route("/jsonrpc", endpoints.jsonrpc, methods=["POST"]),
            *rest,
        ]

    def openapi_document(self) -> tuple[bytes, str]:
        """The OpenAPI document (JSON) and its ETag, rebuilt when a description changes."""
        rendered = self.document.get()
        return rendered.body, rendered.etag

    # -- operations ---------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        services = {
            name: {
                "ready": entry.pool.ready,
                "described": entry.description is not None,
                "endpoints": entry.pool.snapshot()["endpoints"],
            }
            for name, entry in self.registry.services.items()
        }
        if self.registry.ready:
            return _json({"ready": True, "services": services})
        down = [name for name, state in services.items() if not state["ready"]]
        retry = min((e.config.heartbeat for e in self.registry.services.values()), default=1)
        problem = unavailable(
            f"no live endpoint for {', '.join(down)}", retry, ready=False, services=services
        )
        return problem_response(problem, request_info(request.scope))

    async def metrics_page(self, request: Request) -> Response:
        body, content_type = self.metrics.render(request.headers.get("accept"))
        return Response(body, 200, None, content_type)

    async def catalog(self, request: Request) -> Response:
        return _json(scoped_catalog(self.registry.catalog(), request_info(request.scope)))

    async def service_catalog(self, request: Request) -> Response:
        info = request_info(request.scope)
        try:
            entry = self.registry.get(request.path_params["service"])
        except Problem as problem:
            return problem_response(problem, info)
        info.service = entry.name
        return _json(scoped_service(entry.name, entry.catalog(), info))


def _json(value: Any) -> Response:
    return Response(encode_result(value, ResultFormat.JSON), 200, None, JSON)


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's own errors (no route: 404; wrong verb: 405 with Allow) as problems."""
    assert isinstance(exc, HTTPException)
    info = request_info(request.scope)
    if exc.status_code == 404:
        problem = not_found(f"no route for {request.url.path[:200]}")
    else:
        problem = Problem(exc.status_code, exc.detail, headers=exc.headers)
    return problem_response(problem, info)


async def _server_error(request: Request, exc: Exception) -> Response:
    """A bug: a 500 problem without internals (Observed logs it with the trace id)."""
    return _server_error_response(request.scope)


def _server_error_response(scope: Scope) -> Response:
    problem = Problem(500, "the gateway failed to handle this request", code=INTERNAL)
    return problem_response(problem, request_info(scope))


def _rpc_target(scope: Scope) -> tuple[str, str] | None:
    """(service, method) when the path is ``/rpc/{service}/{method}``, read from the raw
    path: ``/rpc/a%2Fb/c`` is the service ``a/b`` (a 404), never ``/rpc/a/b/c``, so a proxy
    rule on paths cannot be dodged with encoded slashes."""
    path = raw_route_path(scope)
    if not path.startswith(_RPC_PREFIX):
        return None
    service, slash, method = path[len(_RPC_PREFIX) :].partition("/")
    if not (service and slash and method) or "/" in method:
        return None
    if "%" in path:
        service, method = unquote(service), unquote(method)
    return service, method


class FrontDoor:
    """Sends ``/rpc/{service}/{method}``, every verb, straight to its endpoint (the hot
    path: no router, no Request object); everything else goes to the Starlette app."""

    def __init__(self, app: ASGIApp, endpoints: RpcEndpoints) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _rpc_target(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.endpoints.rpc(scope, receive, send, *target)
        except Exception:
            if request_info(scope).status == 0:  # nothing sent yet: answer 500
                await _server_error_response(scope)(scope, receive, send)
            raise  # Observed logs it with the trace id


def create_app(
    config: Config, *, access_log: AccessLog | None = None, settle_heap: bool = False
) -> Starlette:
    """The ASGI app for ``config``; run it under uvicorn (``zerogate serve``). Access-log
    lines go to ``access_log`` (default: the ``zerogate.access`` logger). ``settle_heap``:
    once started, tune this process's garbage collector for serving (``heap.settle``)."""
    gateway = Gateway(config, access_log or LoggingAccessLog(), settle_heap=settle_heap)
    own_routes = gateway.own_routes()
    app = Starlette(
        routes=[*own_routes, *gateway.api_routes()],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=gateway.lifespan,
    )
    # A trailing slash is another path, not a redirect: an API client would re-send a POST.
    router = app.router
    assert isinstance(router, Router)
    router.redirect_slashes = False
    app.state.gateway = gateway
    inner: ASGIApp = FrontDoor(app.build_middleware_stack(), gateway.endpoints)
    if gateway.door is not None:
        inner = gateway.door.gate(inner)
    origins = config.gateway.cors.allow_origins
    if origins:
        inner = CORSMiddleware(
            inner,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["*"],
            expose_headers=["X-Trace-Id", "traceparent", "Retry-After"],
        )
    app.middleware_stack = Observed(
        inner, gateway.metrics, gateway.access_log, unrecorded=own_routes
    )
    return app
