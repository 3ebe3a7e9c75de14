"""The OpenAPI 3.1 document of a gateway: a pure function of its services' descriptions and
its config (no I/O: fetching descriptions is the registry's job).

    document = build_document(
        {name: entry.description for name, entry in registry.services.items()},
        config,
        version=package_version(),
    )

Every configured service is a tag (its docstring, or a note that it is unavailable while it
has no description). Sorted services and methods and the config's route order make the
document the same for the same inputs, byte for byte once rendered.

Left out on purpose: routes the gateway never reaches (a path ``FrontDoor`` or one of the
app's own routes takes first), routes whose method is not exposed (the gateway answers 404,
and documenting them would tell what the exposure globs hide), routes to a service not
described yet, and the ``405`` of a wrong verb (it answers no documented operation).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Final

from gateway.config import AuthMode, Config, RouteConfig
from gateway.registry import Description

from ._components import (
    BUILTIN_SCHEMAS,
    PARAMETERS,
    SECURITY,
    SECURITY_SCHEMES,
    header_components,
    response_components,
)
from ._methods import Method, method_of
from ._operations import JSONRPC_TAG, Operations, rpc_path
from ._schemas import Components

OPENAPI_VERSION: Final = "3.1.0"
DEFAULT_TITLE: Final = "zerogate"
PACKAGE: Final = "zerogate"

_PLACEHOLDER: Final = re.compile(r"\{[^{}]*\}")
# (verb, path shape) pairs the app's own routes answer before any route of the config.
_APP_ROUTES: Final = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/rpc"),
        ("GET", "/rpc/{}"),
        ("POST", "/jsonrpc"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/assets/{}"),
        ("GET", "/redoc"),
    }
)

_INTRO: Final = """\
An HTTP gateway in front of ZeroRPC services.

**Calls.** `POST /rpc/{service}/{method}` takes a JSON array (positional arguments), a JSON \
object (named arguments; defaults are filled in) or an empty body (no arguments); \
`application/msgpack` bodies are accepted too, and `Accept: application/msgpack` answers in \
msgpack, for bytes and map keys JSON cannot hold. Safe methods also answer `GET`, with their \
arguments as query parameters. `POST /jsonrpc` speaks JSON-RPC 2.0 with \
`method: "service.method"`.

**Results.** 200 with the result as bare JSON: bytes become a string when they are UTF-8, \
else `{"$base64": "..."}`; map keys become strings. A streaming method answers NDJSON \
(`{"result": item}` per line) or, with `Accept: text/event-stream`, server-sent events.

**Errors.** Every error is an RFC 9457 problem document (`application/problem+json`, the \
`Problem` schema) with a `code`, the `trace_id` and, for a backend exception, `remote`. A \
wrong HTTP verb is a 405 with `Allow`.

**Headers.** `X-Timeout-Ms` lowers a call's timeout; `traceparent` joins a W3C trace; every \
answer carries `X-Trace-Id` and `traceparent`."""

_AUTH_INTRO: Final = """

**Authentication.** Send an API token as `Authorization: Bearer <token>` or \
`X-API-Key: <token>`. Scopes are `service:method` globs; each token is rate limited."""


def package_version() -> str:
    """The installed zerogate's version (reads the package metadata: call it once)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0+unknown"


def build_document(
    services: Mapping[str, Description | None],
    config: Config,
    *,
    version: str,
    title: str = DEFAULT_TITLE,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``config``'s services, described by ``services`` (a
    service missing there, or None, is not described yet). A new dict on every call."""
    auth = config.auth.mode is AuthMode.TOKEN
    components = Components()
    for name, schema in BUILTIN_SCHEMAS:
        components.add(name, schema)
    operations = Operations(components, auth=auth, public=config.auth.public)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[dict[str, Any]] = []
    methods: dict[tuple[str, str], Method] = {}

    for name in sorted(config.services):
        service = config.services[name]
        description = services.get(name)
        tags.append(_tag(name, description))
        exposed = description.methods if description is not None else {}
        for method_name in sorted(exposed):
            method = method_of(exposed[method_name])
            methods[name, method_name] = method
            if not _callable_by_path(method_name):
                continue
            item = paths.setdefault(rpc_path(method), {})
            item["post"] = operations.rpc_post(method, service)
            if method.safe:
                item["get"] = operations.rpc_get(method, service)

    paths["/jsonrpc"] = {"post": operations.jsonrpc([f"{s}.{m}" for s, m in methods])}
    tags.append(
        {
            "name": JSONRPC_TAG,
            "description": "Every exposed method, called through one JSON-RPC 2.0 endpoint.",
        }
    )
    _add_routes(paths, config, methods, operations)

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": _INTRO + (_AUTH_INTRO if auth else ""),
        },
        "tags": tags,
        "paths": paths,
        "components": _components(components, auth),
    }
    if auth:
        document["security"] = list(SECURITY)
    # Parts of it come from module constants: the caller may do as it likes with the copy.
    return copy.deepcopy(document)


def _tag(name: str, description: Description | None) -> dict[str, Any]:
    if description is None:
        text = (
            "Unavailable: the gateway has not been able to describe this service yet, so its "
            "methods are not listed; they appear once a backend answers."
        )
    else:
        text = description.doc or f"The {name} service."
        if description.introspection == "fallback":
            text += (
                "\n\nIts backend publishes no argument names or types (zerorpc 0.6.3): "
                "methods take a JSON array of positional arguments."
            )
    return {"name": name, "description": text}


def _callable_by_path(method: str) -> bool:
    # FrontDoor splits /rpc/{service}/{method} on "/": such a method is only reachable
    # through /jsonrpc.
    return bool(method) and "/" not in method


def _add_routes(
    paths: dict[str, dict[str, Any]],
    config: Config,
    methods: Mapping[tuple[str, str], Method],
    operations: Operations,
) -> None:
    # OpenAPI treats /items/{id} and /items/{sku} as one path, so a route whose template
    # equals a documented one under other names is documented under the first spelling.
    keys: dict[str, str] = {_shape(path): path for path in paths}
    for route in config.routes:
        method = methods.get((route.service, route.rpc_method))
        if method is None or _shadowed(route):
            continue
        key = keys.setdefault(_shape(route.path), route.path)
        verb = route.method.value.lower()
        item = paths.setdefault(key, {})
        if verb not in item:  # the first route of a path and verb answers (Starlette's order)
            service = config.services[route.service]
            item[verb] = operations.route(route, key, method, service)


def _shape(path: str) -> str:
    return _PLACEHOLDER.sub("{}", path)


def _shadowed(route: RouteConfig) -> bool:
    """Whether the app answers every request of ``route`` before the route could."""
    shape = _shape(route.path)
    if (route.method.value, shape) in _APP_ROUTES:
        return True
    # FrontDoor takes every /rpc/{service}/{method}, whatever the verb.
    service, slash, method = shape.removeprefix("/rpc/").partition("/")
    return shape.startswith("/rpc/") and bool(service and slash and method) and "/" not in method


def _components(components: Components, auth: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schemas": components.schemas,
        "responses": response_components(auth),
        "parameters": dict(PARAMETERS),
        "headers": header_components(auth),
    }
    if auth:
        out["securitySchemes"] = dict(SECURITY_SCHEMES)
    return out


__all__ = ["DEFAULT_TITLE", "OPENAPI_VERSION", "build_document", "package_version"]
