"""The operations of the document: ``POST /rpc/{service}/{method}`` for every exposed method,
``GET`` for the safe ones, one per REST route of the config, and ``POST /jsonrpc``.

Each says what the gateway really does (``gateway.args``, ``gateway.payloads``):

- A POST body is a JSON (or msgpack) array of positional arguments or an object of named
  ones; an empty body is no arguments. Without published names (zerorpc 0.6.3) only the
  array works, and it is not checked.
- Query and path values are read as JSON when they parse, else taken as strings; a value
  that is not a plain scalar must be sent as JSON, so such parameters are described with
  ``content: application/json`` rather than a serialisation style the gateway would refuse
  (``?ids=1&ids=2`` is a 400: a query key may not repeat).
- A plain result is JSON (bytes as text or ``{"$base64": ...}``) or msgpack; a stream is
  NDJSON (``{"result": item}`` lines, a last ``{"error": problem}`` line on failure) or SSE.
  A stream's schemas describe one part of it: the NDJSON schema one line, the SSE schema one
  event as a parser reads it (``{"event", "data"}``, the data JSON: ``contentSchema``), the
  way OpenAPI 3.2 describes events and tools read a 3.1 document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

from gateway.config import RouteConfig, ServiceConfig
from gateway.jsonrpc import DEFAULT_MAX_BATCH
from gateway.payloads import JSON, MSGPACK, NDJSON, SSE

from ._components import (
    AUTH_ERRORS,
    BAD_REQUEST,
    BODY_ERRORS,
    CALL_ERRORS,
    CALL_PARAMETERS,
    JSONRPC_REQUEST,
    JSONRPC_RESPONSE,
    MAPPED,
    RATE_LIMITED,
    SSE_END,
    SSE_ERROR,
    STREAM_ERROR,
    UNAUTHORIZED,
    ErrorResponse,
    ref,
    schema_ref,
    trace_headers,
)
from ._methods import Arg, Method, split_doc
from ._schemas import (
    MISSING,
    SCHEMAS_REF,
    Components,
    Context,
    JsonSchema,
    admits,
    clean,
    embed,
    local_refs,
)

QUERY_NOTE: Final = (
    "Read as JSON when the value parses as JSON (42, true, null, [1, 2], "
    '{"a": 1}, "text"), else taken as a plain string; quote a string that would parse '
    'as something else ("42").'
)
UNTYPED_NOTE: Final = (
    "This backend publishes no argument names or types (a zerorpc 0.6.3 server): send a "
    "JSON array of positional arguments; the gateway passes it on unchecked."
)
STREAM_UNKNOWN_NOTE: Final = (
    "The backend does not say whether this method streams: a plain result is JSON (or "
    "msgpack), a stream is NDJSON (or server-sent events)."
)
_ANY_VALUE: Final = "Any value: the backend publishes no type for it."
_SCALARS: Final = frozenset({"string", "integer", "number", "boolean", "null"})
# The items of an array of any values. Saying nothing would mean the same in JSON Schema, but
# SDK generators (openapi-python-client) refuse an array without items or prefixItems.
_ANY_ITEMS: Final[JsonSchema] = {}


class Operations:
    """Builds operations into ``components``; ``auth`` adds 401/403/429 to each."""

    def __init__(self, components: Components, *, auth: bool, public: Iterable[str]) -> None:
        self.components = components
        self.auth = auth
        self.public = frozenset(public)
        self._ids: set[str] = set()

    def __repr__(self) -> str:
        return f"<Operations ids={len(self._ids)} auth={self.auth}>"

    # -- /rpc/{service}/{method} ----------------------------------------------------------

    def rpc_post(self, method: Method, service: ServiceConfig) -> dict[str, Any]:
        notes = [UNTYPED_NOTE] if not method.typed else []
        if method.safe:
            notes.append(f"Also callable with GET (operation {method.service}.{method.name}.get).")
        op = self._operation(method, f"{method.service}.{method.name}", notes)
        op["parameters"] = list(CALL_PARAMETERS)
        op["requestBody"] = self._body(method, frozenset(), positional=True)
        path = rpc_path(method)
        op["responses"] = self._responses(method, service, path, reads_body=True)
        return self._secured(op, path)

    def rpc_get(self, method: Method, service: ServiceConfig) -> dict[str, Any]:
        notes = ["A safe method: GET calls it with its arguments as query parameters."]
        if not method.typed:
            notes.append(
                "This backend publishes no argument names (a zerorpc 0.6.3 server), so GET "
                "calls it without arguments; POST a JSON array to pass some."
            )
        op = self._operation(method, f"{method.service}.{method.name}.get", notes)
        op["parameters"] = [*self._parameters(method, "query", frozenset()), *CALL_PARAMETERS]
        path = rpc_path(method)
        op["responses"] = self._responses(method, service, path, reads_body=False)
        return self._secured(op, path)

    # -- REST routes -----------------------------------------------------------------------

    def route(
        self, route: RouteConfig, key: str, method: Method, service: ServiceConfig
    ) -> dict[str, Any]:
        """The operation of ``route``, documented under the path ``key`` (the route's path,
        or an equal template already documented under other placeholder names)."""
        verb = route.method.value
        placeholders = dict(zip(route.params, template_names(key), strict=True))
        taken = frozenset(placeholders)
        reads_body = verb not in ("GET", "HEAD")
        notes = [f"{verb} {route.path} calls {method.service}.{method.name}."]
        if not method.typed:
            notes.append(_untyped_route_note(bool(placeholders), reads_body))
        op = self._operation(method, self._route_id(route, method), notes)
        params = [self._path_parameter(method, name, shown) for name, shown in placeholders.items()]
        if not reads_body:
            params += self._parameters(method, "query", taken)
        op["parameters"] = [*params, *CALL_PARAMETERS]
        if reads_body and (body := self._route_body(method, taken)) is not None:
            op["requestBody"] = body
        op["responses"] = self._responses(method, service, route.path, reads_body=reads_body)
        return self._secured(op, route.path)

    def _route_id(self, route: RouteConfig, method: Method) -> str:
        slug = "".join(c if c.isalnum() else "_" for c in route.path).strip("_") or "root"
        while "__" in slug:
            slug = slug.replace("__", "_")
        return f"{method.service}.{method.name}.{route.method.value.lower()}_{slug}"

    def _route_body(self, method: Method, taken: frozenset[str]) -> dict[str, Any] | None:
        if not taken:
            return self._body(method, taken, positional=True)
        if not method.typed:
            return None
        rest = [a for a in method.args or () if a.name not in taken]
        if not rest and method.varargs is None:
            return None
        return self._body(method, taken, positional=False)

    # -- /jsonrpc --------------------------------------------------------------------------

    def jsonrpc(self, names: list[str]) -> dict[str, Any]:
        op: dict[str, Any] = {
            "tags": [JSONRPC_TAG],
            "summary": "Call methods with JSON-RPC 2.0",
            "description": _jsonrpc_description(names),
            "operationId": self._unique("jsonrpc"),
            "parameters": list(CALL_PARAMETERS),
            "requestBody": _jsonrpc_body(),
            "responses": {
                **_jsonrpc_answers(),
                # Everything else, a failed call included, is an error object in a 200;
                # a token without the scope too (-32003), so no 403 here.
                **self._errors(
                    (BAD_REQUEST, *BODY_ERRORS),
                    (),
                    "/jsonrpc",
                    auth_errors=(UNAUTHORIZED, RATE_LIMITED),
                ),
            },
        }
        return self._secured(op, "/jsonrpc")

    # -- pieces ----------------------------------------------------------------------------

    def _operation(self, method: Method, operation_id: str, notes: list[str]) -> dict[str, Any]:
        summary, rest = split_doc(method.doc)
        description = "\n\n".join(part for part in (rest, *notes) if part)
        op: dict[str, Any] = {"tags": [method.service]}
        op["summary"] = summary or f"{method.service}.{method.name}"
        if description:
            op["description"] = description
        op["operationId"] = self._unique(operation_id)
        return op

    def _unique(self, operation_id: str) -> str:
        # Method names come from backends and may hold dots ("a.get"); the first taker keeps
        # the plain id, so the ids of ordinary names never change.
        candidate, number = operation_id, 1
        while candidate in self._ids:
            number += 1
            candidate = f"{operation_id}_{number}"
        self._ids.add(candidate)
        return candidate

    def _needs_token(self, path: str) -> bool:
        return self.auth and path not in self.public  # auth.public: open without a token

    def _secured(self, op: dict[str, Any], path: str) -> dict[str, Any]:
        if self.auth and not self._needs_token(path):
            op["security"] = []  # overrides the document's
        return op

    def _embed(self, published: Any, context: Context, hint: str) -> JsonSchema:
        return embed(published, context, self.components, hint)

    def _arg_schema(self, method: Method, arg: Arg) -> JsonSchema:
        if arg.schema is None:
            schema: JsonSchema = {"description": _ANY_VALUE}
        else:
            schema = self._embed(arg.schema, Context.REQUEST, _hint(method, arg.name))
        if arg.default_repr is not None:
            note = (
                f"The method's default, {arg.default_repr}, is a value the gateway cannot "
                "send: leave this argument out only when no later one is given."
            )
        elif arg.default is not MISSING and admits(arg.schema, arg.default):
            return {**schema, "default": arg.default}
        elif arg.has_default:
            # No JSON form, or one the schema refuses (another server's stand-in).
            shown = "" if arg.default is MISSING else f": {arg.default}"
            note = f"Optional (the method has a default{shown})."
        else:
            return schema
        return {**schema, "description": f"{schema.get('description', '')} {note}".strip()}

    def _body(self, method: Method, taken: frozenset[str], *, positional: bool) -> dict[str, Any]:
        if method.args is None:
            forms = [_untyped_array()]
        else:
            forms = [self._object_form(method, taken)]
            if positional:
                forms.append(self._array_form(method))
        schema = forms[0] if len(forms) == 1 else {"oneOf": forms}
        return {
            "description": "The arguments; an empty body is no arguments. "
            "application/msgpack carries bytes and map keys of any type losslessly.",
            "required": bool(method.required(taken)),
            "content": {JSON: {"schema": schema}, MSGPACK: {"schema": schema}},
        }

    def _object_form(self, method: Method, taken: frozenset[str]) -> JsonSchema:
        properties = {
            arg.name: self._arg_schema(method, arg)
            for arg in method.args or ()
            if arg.name not in taken
        }
        if method.varargs is not None:
            properties[method.varargs] = _varargs_schema(method.varargs)
        schema: JsonSchema = {
            "type": "object",
            "title": "named arguments",
            "properties": properties,
            "additionalProperties": False,
        }
        if required := method.required(taken):
            schema["required"] = required
        if needed := method.needed_with(taken):
            schema["dependentRequired"] = needed
        return schema

    def _array_form(self, method: Method) -> JsonSchema:
        args = method.args or ()
        schema: JsonSchema = {"type": "array", "title": "positional arguments"}
        if args:
            schema["prefixItems"] = [{"title": a.name, **self._arg_schema(method, a)} for a in args]
        else:
            schema["items"] = _ANY_ITEMS
        # The gateway checks the count: every argument up to the last one without a
        # default must be given; more than the names only with a *varargs.
        required = [i for i, a in enumerate(args) if not a.has_default]
        if required:
            schema["minItems"] = required[-1] + 1
        if method.varargs is None:
            schema["maxItems"] = len(args)
        return schema

    def _parameters(
        self, method: Method, where: str, taken: frozenset[str]
    ) -> list[dict[str, Any]]:
        required = set(method.required(taken))
        params = [
            self._parameter(a.name, where, self._arg_schema(method, a), a.name in required)
            for a in method.args or ()
            if a.name not in taken
        ]
        if method.varargs is not None:
            params.append(
                self._parameter(method.varargs, where, _varargs_schema(method.varargs), False)
            )
        return params

    def _path_parameter(self, method: Method, name: str, shown: str) -> dict[str, Any]:
        arg = next((a for a in method.args or () if a.name == name), None)
        if arg is not None:
            param = self._parameter(shown, "path", self._arg_schema(method, arg), True)
        else:
            param = {"name": shown, "in": "path", "required": True, "schema": {}}
            param["description"] = (
                "The backend publishes no argument names, so the gateway cannot place this "
                "value: it refuses every call of this route (400)."
                if not method.typed
                else f"Not an argument of {method.service}.{method.name}: the gateway refuses "
                "every call of this route (400)."
            )
        if shown != name and arg is not None:
            param["description"] = f"The argument {name}. {param['description']}"
        return param

    def _parameter(
        self, name: str, where: str, schema: JsonSchema, required: bool
    ) -> dict[str, Any]:
        param: dict[str, Any] = {"name": name, "in": where, "required": required}
        param["description"] = QUERY_NOTE
        if self._plain(schema):
            param["schema"] = schema
        else:
            param["content"] = {JSON: {"schema": schema}}
        return param

    def _plain(self, schema: JsonSchema) -> bool:
        """Whether a value of ``schema`` is a scalar a client writes as it is (then the
        ``schema`` form is the friendlier description), rather than JSON it must encode."""
        target = schema.get("$ref")
        if isinstance(target, str) and target.startswith(SCHEMAS_REF):
            schema = self.components.schemas.get(target[len(SCHEMAS_REF) :], {})
        if any(k in schema for k in ("allOf", "not", "$ref")):
            return False
        members = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(members, list):  # Optional[int], Literal[...] | None
            return all(isinstance(m, dict) and self._plain(m) for m in members)
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if kind is not None:
            return all(k in _SCALARS for k in kinds)
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        return isinstance(values, list) and all(
            v is None or isinstance(v, (str, int, float, bool)) for v in values
        )

    # -- responses -------------------------------------------------------------------------

    def _responses(
        self, method: Method, service: ServiceConfig, path: str, *, reads_body: bool
    ) -> dict[str, Any]:
        ok: dict[str, Any] = {"headers": trace_headers(), "content": {}}
        if method.stream is not False:
            ok["content"].update(self._stream_content(method))
        if method.stream is not True:
            ok["content"] = {**self._result_content(method), **ok["content"]}
        ok = {"description": _ok_description(method.stream), **ok}
        errors = [*CALL_ERRORS, *(BODY_ERRORS if reads_body else ())]
        return {"200": ok, **self._errors(errors, service.errors.items(), path)}

    def _result_content(self, method: Method) -> dict[str, Any]:
        hint = _hint(method, "result")
        if method.returns is None:
            as_json: JsonSchema = {"description": _ANY_VALUE}
            as_msgpack: JsonSchema = {"description": _ANY_VALUE}
        else:
            as_json = self._embed(method.returns, Context.RESULT_JSON, hint)
            as_msgpack = self._embed(method.returns, Context.RESULT_MSGPACK, hint)
        return {JSON: {"schema": as_json}, MSGPACK: {"schema": as_msgpack}}

    def _stream_content(self, method: Method) -> dict[str, Any]:
        item = _item_schema(method.returns)
        if item is None:
            schema: JsonSchema = {"description": _ANY_VALUE}
        else:
            schema = self._embed(item, Context.RESULT_JSON, _hint(method, "item"))
        line = {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"result": schema},
                    "required": ["result"],
                    "additionalProperties": False,
                },
                schema_ref(STREAM_ERROR),
            ]
        }
        item_event = {
            "type": "object",
            "description": "One item (`data:` the item as JSON).",
            "properties": {
                "event": {"const": "message"},
                "data": {"type": "string", "contentMediaType": JSON, "contentSchema": schema},
            },
            "required": ["data"],
        }
        event = {"oneOf": [item_event, schema_ref(SSE_END), schema_ref(SSE_ERROR)]}
        return {NDJSON: {"schema": line}, SSE: {"schema": event}}

    def _errors(
        self,
        errors: Iterable[ErrorResponse],
        mapped: Iterable[tuple[str, int]],
        path: str,
        *,
        auth_errors: Iterable[ErrorResponse] = AUTH_ERRORS,
    ) -> dict[str, Any]:
        by_status = {e.status: e for e in errors}
        if self._needs_token(path):
            by_status.update({e.status: e for e in auth_errors})
        raised: dict[int, list[str]] = {}
        for name, status in sorted(mapped):
            raised.setdefault(status, []).append(name)
        out: dict[str, Any] = {}
        for status in sorted({*by_status, *raised}):
            error = by_status.get(status, MAPPED)
            response: dict[str, Any] = ref("responses", error.name)
            if status in raised:
                names = " or ".join(raised[status])
                also = f"The backend raised {names} (mapped to {status} by the config)."
                base = error.description if error is not MAPPED else ""
                response = {**response, "description": f"{base} {also}".strip()}
            out[str(status)] = response
        return out


JSONRPC_TAG: Final = "JSON-RPC 2.0"  # a space: no service name can take it


def rpc_path(method: Method) -> str:
    return f"/rpc/{quote(method.service, safe='')}/{quote(method.name, safe='')}"


def template_names(path: str) -> list[str]:
    names, rest = [], path
    while "{" in rest:
        _, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        names.append(name)
    return names


def _untyped_route_note(placeholders: bool, reads_body: bool) -> str:
    if placeholders:
        return (
            "This backend publishes no argument names (a zerorpc 0.6.3 server), so the "
            "gateway cannot place path parameters: every call is refused (400)."
        )
    if reads_body:
        return UNTYPED_NOTE
    return (
        "This backend publishes no argument names (a zerorpc 0.6.3 server), so this route "
        "calls the method without arguments."
    )


def _jsonrpc_description(names: list[str]) -> str:
    return (
        "method is service.method; params by position (array) or name (object), as for "
        f"POST /rpc/{{service}}/{{method}}. A batch (an array of at most {DEFAULT_MAX_BATCH} "
        "requests) is answered call by call, in order; requests without an id are "
        "notifications and get no answer. A call that fails is answered with an error "
        "object whose data is the problem document; a stream's items come back as one "
        "array. Methods: " + (", ".join(names) if names else "none available now") + "."
    )


def _jsonrpc_body() -> dict[str, Any]:
    request = schema_ref(JSONRPC_REQUEST)
    schema = {"oneOf": [request, {"type": "array", "items": request, "minItems": 1}]}
    return {"required": True, "content": {JSON: {"schema": schema}, MSGPACK: {"schema": schema}}}


def _jsonrpc_answers() -> dict[str, Any]:
    response = schema_ref(JSONRPC_RESPONSE)
    schema = {"oneOf": [response, {"type": "array", "items": response}]}
    return {
        "200": {
            "description": "The response, or an array of them for a batch.",
            "headers": trace_headers(),
            "content": {JSON: {"schema": schema}},
        },
        "204": {
            "description": "Only notifications were sent: nothing to answer.",
            "headers": trace_headers(),
        },
    }


def _hint(method: Method, part: str) -> str:
    return f"{method.service}.{method.name}.{part}"


def _varargs_schema(name: str) -> JsonSchema:
    return {
        "type": "array",
        "items": _ANY_ITEMS,
        "description": f"More positional arguments (*{name}), sent after all the named ones.",
    }


def _untyped_array() -> JsonSchema:
    return {
        "type": "array",
        "items": _ANY_ITEMS,
        "title": "positional arguments",
        "description": "Any positional arguments: the backend publishes no names or types.",
    }


def _item_schema(returns: Any) -> Any:
    """A stream's item schema: the ``items`` of its published ``returns`` (our servers
    publish ``Iterator[X]``, ``Generator[X, ...]``, their async forms and ``Iterable[X]`` as
    an array of ``X``). None when the backend published none, or an array without one."""
    if not isinstance(returns, Mapping):
        return None
    cleaned = clean(returns)
    if cleaned.get("type") != "array" or "items" not in cleaned or "prefixItems" in cleaned:
        return None
    # Pointers into the whole result schema would not resolve from its items alone.
    return None if local_refs(cleaned) else cleaned["items"]


def _ok_description(stream: bool | None) -> str:
    if stream is True:
        return (
            'A stream. NDJSON: one {"result": item} line per item as it arrives (the schema '
            'below describes one line), and a last {"error": problem} line if it fails after '
            "it started. With Accept: text/event-stream, server-sent events (the schema "
            "describes one event, as its data and event type): one `data:` event per item, "
            "the item as JSON, then `event: end`, or `event: error` whose data is the problem."
        )
    if stream is False:
        return "The result: JSON, or msgpack with Accept: application/msgpack."
    return STREAM_UNKNOWN_NOTE
