"""The RPC endpoints: ``/rpc/{service}/{method}``, the REST routes of the config, and
``/jsonrpc``. Each resolves the request to an exposed method, maps its arguments, calls the
backend through the service's pool and answers with the result, a stream or a problem."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from auth.gate import authorize
from rpccore import RPCError

from .args import args_for_route, args_from_body
from .config import GatewaySettings, RouteConfig
from .http_io import TIMEOUT_HEADER, DisconnectWatch, read_body, requested_timeout
from .jsonrpc import handle_jsonrpc, parse_error_response
from .observe import CLIENT_CLOSED, RequestInfo, request_info
from .payloads import (
    JSON,
    ResultFormat,
    decode_body,
    encode_result,
    json_value,
    negotiate,
    negotiate_stream,
)
from .pool import PooledStream
from .problems import Problem, method_not_allowed
from .registry import MethodInfo, Registry, call_problem
from .responses import log_remote_error, problem_response, result_response, stream_response

log = logging.getLogger("zerogate.gateway")

JSONRPC_STREAM_LIMIT: Final = 10_000  # items a stream may give a JSON-RPC call (no streaming)
_READ_VERBS: Final = frozenset({"GET", "HEAD"})

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


_WANTED: Final = {
    b"content-type": "content-type",
    b"content-length": "content-length",
    b"accept": "accept",
    b"x-timeout-ms": TIMEOUT_HEADER,
}


def wanted_headers(scope: Scope) -> dict[str, str]:
    """The few request headers a call needs, in one pass (ASGI names are lowercase)."""
    found: dict[str, str] = {}
    wanted = _WANTED
    for name, value in scope["headers"]:
        key = wanted.get(name)
        if key is not None:
            found[key] = value.decode("latin-1")
    return found


def _closed() -> Response:
    """What a request whose client went away 'answers': nothing will read it."""
    return Response(b"", CLIENT_CLOSED)


class RpcEndpoints:
    def __init__(self, registry: Registry, settings: GatewaySettings) -> None:
        self.registry = registry
        self.settings = settings
        self.watch = DisconnectWatch()

    # -- the shared path --------------------------------------------------------------

    async def _resolve(self, service: str, method: str, info: RequestInfo) -> MethodInfo:
        # The scope check comes first: a token that may not call a method learns nothing
        # about whether it exists.
        authorize(info, service, method)
        entry = self.registry.get(service)
        info.service = entry.name  # a known service: metrics may name it
        target = await entry.method(method)
        info.method = target.name
        return target

    async def _call(
        self,
        target: MethodInfo,
        args: list[Any],
        timeout: float | None,
        receive: Receive,
        info: RequestInfo,
    ) -> Any:
        entry = self.registry.services[target.service]
        try:
            return await self.watch.until_disconnect(
                entry.pool.call(target.name, args, timeout=timeout, metadata=info.metadata),
                receive,
            )
        except RPCError as exc:
            raise self._failed(exc, target, info) from None

    def _failed(self, exc: RPCError, target: MethodInfo, info: RequestInfo) -> Problem:
        """Log what a call raised (always with its trace id) and give its problem."""
        log_remote_error(exc, target.service, target.name, info)
        entry = self.registry.services[target.service]
        return call_problem(exc, target, entry, expose_tracebacks=self.settings.expose_tracebacks)

    def _answer(
        self, result: Any, target: MethodInfo, accept: str | None, info: RequestInfo
    ) -> Response:
        if isinstance(result, PooledStream):
            entry = self.registry.services[target.service]
            return stream_response(
                result,
                negotiate_stream(accept),
                info,
                errors=dict(entry.config.errors),
                expose_tracebacks=self.settings.expose_tracebacks,
            )
        return result_response(result, negotiate(accept))

    async def _body(self, receive: Receive, headers: Mapping[str, str]) -> Any:
        data = await read_body(receive, headers.get("content-length"), self.settings.max_body_bytes)
        return decode_body(data, headers.get("content-type"))

    # -- /rpc/{service}/{method} ------------------------------------------------------

    async def rpc(
        self, scope: Scope, receive: Receive, send: Send, service: str, method: str
    ) -> None:
        """The canonical call path, on plain ASGI: it is the hot path, so it skips the
        router and the Request object (``app.FrontDoor`` routes here)."""
        info = request_info(scope)
        headers = wanted_headers(scope)
        try:
            target = await self._resolve(service, method, info)
            verb = scope["method"]
            if verb == "POST":
                body = await self._body(receive, headers)
                args = args_from_body(
                    target.entry, body, service=target.service, method=target.name
                )
            elif verb in _READ_VERBS and target.safe:
                args = args_for_route(
                    target.entry,
                    path={},
                    query=parse_qsl(
                        scope["query_string"].decode("latin-1"), keep_blank_values=True
                    ),
                    body=None,
                    service=target.service,
                    method=target.name,
                    missing_in="query",
                )
            else:
                raise method_not_allowed(["GET", "HEAD", "POST"] if target.safe else ["POST"])
            timeout = requested_timeout(headers.get(TIMEOUT_HEADER))
            result = await self._call(target, args, timeout, receive, info)
            response = self._answer(result, target, headers.get("accept"), info)
        except Problem as problem:
            response = problem_response(problem, info)
        except ClientDisconnect:
            return
        await response(scope, receive, send)

    # -- REST routes --------------------------------------------------------------------

    def route(self, route: RouteConfig) -> Endpoint:
        service, method = route.service, route.rpc_method
        reads_body = route.method not in _READ_VERBS

        async def endpoint(request: Request) -> Response:
            info = request_info(request.scope)
            headers = request.headers
            try:
                target = await self._resolve(service, method, info)
                body = await self._body(request.receive, headers) if reads_body else None
                args = args_for_route(
                    target.entry,
                    path=request.path_params,
                    query=request.query_params.multi_items(),
                    body=body,
                    service=target.service,
                    method=target.name,
                )
                timeout = requested_timeout(headers.get(TIMEOUT_HEADER))
                result = await self._call(target, args, timeout, request.receive, info)
                return self._answer(result, target, headers.get("accept"), info)
            except Problem as problem:
                return problem_response(problem, info)
            except ClientDisconnect:
                return _closed()

        endpoint.__name__ = f"route {route.method} {route.path}"
        return endpoint

    # -- /jsonrpc -----------------------------------------------------------------------

    async def jsonrpc(self, request: Request) -> Response:
        info = request_info(request.scope)
        headers = request.headers
        try:
            data = await read_body(
                request.receive, headers.get("content-length"), self.settings.max_body_bytes
            )
            try:
                payload = decode_body(data, headers.get("content-type"))
            except Problem as problem:
                if problem.status != 400:
                    raise
                failure = parse_error_response(problem.detail, trace_id=info.trace.trace_id)
                return self._jsonrpc_answer(failure)
            timeout = requested_timeout(headers.get(TIMEOUT_HEADER))

            async def call(service: str, method: str, params: Any) -> Any:
                authorize(info, service, method)
                target = await self.registry.method(service, method)
                args = args_from_body(target.entry, params, service=service, method=method)
                result = await self._call(target, args, timeout, request.receive, info)
                if not isinstance(result, PooledStream):
                    return json_value(result)
                try:
                    return await _collect(result, target)
                except RPCError as exc:  # the stream failed midway
                    raise self._failed(exc, target, info) from None

            answer = await handle_jsonrpc(payload, call, trace_id=info.trace.trace_id)
            if answer is None:
                return Response(b"", 204)
            return self._jsonrpc_answer(answer)
        except Problem as problem:
            return problem_response(problem, info)
        except ClientDisconnect:
            return _closed()

    @staticmethod
    def _jsonrpc_answer(answer: Any) -> Response:
        return Response(encode_result(answer, ResultFormat.JSON), 200, None, JSON)


async def _collect(stream: PooledStream, target: MethodInfo) -> list[Any]:
    """A stream's items as one array: JSON-RPC has no streaming (bounded, so a long stream
    cannot fill memory; /rpc streams it instead)."""
    items: list[Any] = []
    try:
        async for item in stream:
            if len(items) == JSONRPC_STREAM_LIMIT:
                raise Problem(
                    502,
                    f"{target.service}.{target.name} streamed more than {JSONRPC_STREAM_LIMIT} "
                    f"items; call POST /rpc/{target.service}/{target.name} to stream them",
                    code="resource_exhausted",
                )
            items.append(json_value(item))
    finally:
        stream.close()
    return items
