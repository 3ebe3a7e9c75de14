"""The gateway's YAML configuration (DESIGN.md, "Configuration (YAML)"), checked at start.

``load_config(path)`` reads a file, ``parse_config(text)`` a string; both return a ``Config`` of
frozen value objects whose defaults are the constants below. Every section may be left out.
Anything wrong (malformed YAML, an unknown key, a wrong type, a bad endpoint, glob, path, rate,
store or secret reference, a route to a service that is not configured) is a ``ConfigError``
listing every problem of the file, one per line, each naming the file, the line and the key:

    zerogate.yaml line 3: gateway.prot: unknown key (did you mean 'port'?)
    zerogate.yaml line 7: services.calc.timeout: expected a number > 0, got 'soon'

Relative paths (a SQLite token store, a secret file) are relative to the config file's folder.
Secrets are only referenced here (``env:NAME``, ``file:PATH``), never read: a service's CurveZMQ
keys are read when its pool opens (``CurveConfig.client_keys``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import yaml

import rpccore
from rpccore._curve import CurveKeyError, KeyKind, check_key
from rpccore._naming import ENDPOINT_FORMS, is_endpoint

from ._yaml import (
    MalformedYaml,
    Problems,
    Section,
    _as_number,
    as_str,
    compose,
    describe,
    is_null,
    line_of,
    one_of,
)

ENV_VAR: Final = "ZEROGATE_CONFIG"
DEFAULT_FILE: Final = "zerogate.yaml"

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_MAX_BODY_BYTES: Final = 10 * 1024 * 1024
DEFAULT_SHUTDOWN_GRACE: Final = 10.0  # seconds SIGTERM leaves in-flight requests to finish
DEFAULT_TIMEOUT: Final = rpccore.DEFAULT_TIMEOUT  # 30 s
DEFAULT_HEARTBEAT: Final = rpccore.DEFAULT_HEARTBEAT  # 5 s, as zerorpc
DEFAULT_REFRESH: Final = 30.0
DEFAULT_INCLUDE: Final = ("*",)
DEFAULT_EXCLUDE: Final = ("_*",)
DEFAULT_TOKEN_DB: Final = "zerogate-tokens.db"
DEFAULT_PUBLIC: Final = ("/healthz", "/readyz")
DEFAULT_RATE: Final = 100.0  # calls per second per token
DEFAULT_BURST: Final = 200
DEFAULT_TRACE_TTL: Final = 86400
DEFAULT_MAX_TRACES: Final = 10_000  # traces the collector's memory store keeps at most

_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORIGIN: Final = re.compile(r"https?://[^/\s]+")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_RATE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*/\s*([sm])\s*")
_SQLITE: Final = "sqlite:///"


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` holds one message per problem."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)

    @property
    def problems(self) -> tuple[str, ...]:
        return self.args

    def __str__(self) -> str:
        return "\n".join(self.args)


class AuthMode(StrEnum):
    NONE = "none"
    TOKEN = "token"


class DocsAccess(StrEnum):
    PUBLIC = "public"
    TOKEN = "token"  # /docs and /openapi.json need a token


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class MemoryStore:
    """State kept in the process: lost on restart, not shared between workers."""


@dataclass(frozen=True, slots=True)
class SqliteStore:
    path: Path


@dataclass(frozen=True, slots=True)
class RedisStore:
    url: str


@dataclass(frozen=True, slots=True)
class EnvSecret:
    name: str


@dataclass(frozen=True, slots=True)
class FileSecret:
    path: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class CurveConfig:
    """CurveZMQ between the gateway and a service's backends. Public keys are given as Z85 text
    or referenced; the secret key only referenced."""

    server_key: str | EnvSecret | FileSecret  # the backends' public key
    secret_key: EnvSecret | FileSecret | None = None  # the gateway's; None: a new pair per start
    public_key: str | EnvSecret | FileSecret | None = None  # checked against secret_key

    def client_keys(self, where: str = "curve") -> rpccore.CurveClientKeys:
        """Read the referenced keys (files, environment variables) into the keys of a client;
        ``where`` (the config path) prefixes problems. Raises ``rpccore.CurveKeyError``."""
        secret = None
        if self.secret_key is not None:
            secret = _read_key(self.secret_key, "secret", f"{where}.secret_key")
        public = None
        if self.public_key is not None:
            public = _read_key(self.public_key, "public", f"{where}.public_key")
        server = _read_key(self.server_key, "public", f"{where}.server_key")
        try:
            return rpccore.CurveClientKeys(
                server_key=server,
                secret_key=secret,
                public_key=public,
            )
        except CurveKeyError as exc:  # "client public_key is not the public half..."
            raise CurveKeyError(f"{where}: {exc}") from None


def _read_key(source: str | EnvSecret | FileSecret, kind: KeyKind, what: str) -> str:
    if isinstance(source, EnvSecret):
        return rpccore.load_key(f"env:{source.name}", kind=kind, what=what)
    if isinstance(source, FileSecret):
        return rpccore.load_key(f"file:{source.path}", kind=kind, what=what)
    return source


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsConfig:
    allow_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger bodies get 413
    expose_tracebacks: bool = False
    cors: CorsConfig = field(default_factory=CorsConfig)
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE  # seconds SIGTERM waits for in-flight requests


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodFilter:
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def exposes(self, method: str) -> bool:
        """Whether ``method`` is reachable: included, not excluded, not starting with ``_``."""
        return (
            not method.startswith("_")
            and any(fnmatchcase(method, glob) for glob in self.include)
            and not any(fnmatchcase(method, glob) for glob in self.exclude)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    name: str
    endpoints: tuple[str, ...]  # one socket per endpoint
    timeout: float = DEFAULT_TIMEOUT  # seconds per call
    heartbeat: float = DEFAULT_HEARTBEAT  # seconds; lost after 2 missed
    methods: MethodFilter = field(default_factory=MethodFilter)
    safe: tuple[str, ...] = ()  # globs of methods also callable with GET
    errors: Mapping[str, int] = field(default_factory=dict)  # exception name -> HTTP status
    refresh: float = DEFAULT_REFRESH  # seconds between introspections
    curve: CurveConfig | None = None  # CurveZMQ to the backends; None: plain ZeroMQ

    def is_safe(self, method: str) -> bool:
        return any(fnmatchcase(method, glob) for glob in self.safe)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    method: HttpMethod
    path: str  # "/users/{user_id}"
    call: str  # "service.method"

    @property
    def service(self) -> str:
        return self.call.partition(".")[0]

    @property
    def rpc_method(self) -> str:
        return self.call.partition(".")[2]

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.path))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    mode: AuthMode = AuthMode.NONE
    store: SqliteStore | RedisStore = SqliteStore(Path(DEFAULT_TOKEN_DB))
    secret: EnvSecret | FileSecret | None = None  # required when mode is token
    public: tuple[str, ...] = DEFAULT_PUBLIC  # paths open without a token
    docs: DocsAccess = DocsAccess.PUBLIC


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitConfig:
    per_token: float = DEFAULT_RATE  # refill rate, calls per second
    burst: int = DEFAULT_BURST  # bucket size
    store: MemoryStore | RedisStore = MemoryStore()


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingConfig:
    """Where trace records go (``collector``), where the collector keeps them, and where it
    answers queries (``query``; when not given, ``default_query_endpoint(collector)``)."""

    collector: str | None = None  # the collector's endpoint; None: no records are shipped
    store: MemoryStore | RedisStore = MemoryStore()
    ttl: int = DEFAULT_TRACE_TTL  # seconds a stored trace lives
    query: str | None = None  # the collector's query endpoint (rpccore); see above
    max_traces: int = DEFAULT_MAX_TRACES  # traces kept at most (memory), or listed as recent

    def __post_init__(self) -> None:
        if self.query is None and self.collector is not None:
            object.__setattr__(self, "query", default_query_endpoint(self.collector))


def default_query_endpoint(collector: str) -> str | None:
    """The collector's query endpoint when the config names none: the next port for TCP
    (tcp://127.0.0.1:5570 -> tcp://127.0.0.1:5571), ``.query`` appended for ipc and inproc;
    None when there is no next port (65535, or a wildcard)."""
    if collector.startswith("tcp://"):
        address, _, port = collector.rpartition(":")
        if not port.isdigit() or int(port) >= 65535:
            return None
        return f"{address}:{int(port) + 1}"
    return collector + ".query"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    source: Path | None = None  # the file it was read from


def default_config_path() -> Path:
    """``$ZEROGATE_CONFIG``, else ``zerogate.yaml`` in the working directory."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_FILE)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the config file at ``path``; a ``ConfigError`` lists what is wrong."""
    where = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the config file: {exc}") from None
    config = parse_config(text, where, Path(path).absolute().parent)
    return replace(config, source=Path(path))


def parse_config(text: str, source_name: str = "<string>", base_dir: Path | None = None) -> Config:
    """Check the config in ``text``; ``source_name`` names it in messages. Relative paths are
    joined to ``base_dir``, or left relative (to the working directory) when it is None."""
    try:
        root = compose(text)
    except MalformedYaml as exc:
        line = f" line {exc.line}" if exc.line is not None else ""
        raise ConfigError(f"{source_name}{line}: malformed YAML: {exc}") from None
    problems = Problems(source_name)
    if root is not None and not isinstance(root, yaml.MappingNode):
        problems.add(
            line_of(root),
            "",
            f"the top level must be a mapping of sections ({', '.join(_TOP)}), "
            f"got {describe(root)}",
        )
        raise ConfigError(*problems.messages())
    top = Section(problems, "", 1, root, _TOP)
    services = _services(top.section("services", None), base_dir)
    config = Config(
        gateway=_gateway(top.section("gateway", _GATEWAY)),
        services=services,
        routes=_routes(top, services),
        auth=_auth(top.section("auth", _AUTH), base_dir),
        rate_limit=_rate_limit(top.section("rate_limit", _RATE_LIMIT)),
        tracing=_tracing(top.section("tracing", _TRACING)),
    )
    if messages := problems.messages():
        raise ConfigError(*messages)
    return config


_TOP: Final = ("gateway", "services", "routes", "auth", "rate_limit", "tracing")
_GATEWAY: Final = ("host", "port", "max_body_bytes", "expose_tracebacks", "cors", "shutdown_grace")
_SERVICE: Final = (
    "endpoints",
    "timeout",
    "heartbeat",
    "methods",
    "safe",
    "errors",
    "refresh",
    "curve",
)
_CURVE: Final = ("server_key", "secret_key", "public_key")
_ROUTE: Final = {  # each required
    "method": one_of([method.value for method in HttpMethod]),
    "path": "a path like /users/{user_id}",
    "call": "service.method",
}
_AUTH: Final = ("mode", "store", "secret", "public", "docs")
_RATE_LIMIT: Final = ("per_token", "burst", "store")
_TRACING: Final = ("collector", "store", "ttl", "query", "max_traces")

_AN_ENDPOINT: Final = f"a ZeroMQ endpoint to connect to ({ENDPOINT_FORMS})"
_A_GLOB: Final = "a glob (a non-empty pattern without spaces)"
_A_PATH: Final = "a path starting with '/'"
_A_STORE: Final = "memory or redis://HOST:PORT/DB"
_A_TOKEN_STORE: Final = "sqlite:///PATH or redis://HOST:PORT/DB"
_A_PUBLIC_KEY: Final = "a public key (40 Z85 characters), file:PATH or env:NAME"
_MEMORY: Final[MemoryStore | RedisStore] = MemoryStore()


def _gateway(section: Section) -> GatewaySettings:
    cors = section.section("cors", ("allow_origins",))
    return GatewaySettings(
        host=section.string("host", DEFAULT_HOST, _word, "a host name or address"),
        port=section.integer("port", DEFAULT_PORT, 0, 65535),
        max_body_bytes=section.integer("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1),
        expose_tracebacks=section.flag("expose_tracebacks", False),
        cors=CorsConfig(
            allow_origins=cors.strings(
                "allow_origins", (), _origin, "an origin (* or http[s]://host[:port])"
            )
        ),
        shutdown_grace=section.get(
            "shutdown_grace", DEFAULT_SHUTDOWN_GRACE, _grace, "a number of seconds >= 0"
        ),
    )


def _services(section: Section, base_dir: Path | None) -> dict[str, ServiceConfig]:
    services: dict[str, ServiceConfig] = {}
    for name in section.names():
        if _SERVICE_NAME.fullmatch(name) is None:
            section.refuse_name(name, "a service name (letters, digits, '_' and '-')")
        services[name] = _service(name, section.section(name, _SERVICE), base_dir)
    return services


def _service(name: str, section: Section, base_dir: Path | None) -> ServiceConfig:
    section.require("endpoints", "a list of ZeroMQ endpoints, or one")
    endpoints = section.strings(
        "endpoints", (), _endpoint, _AN_ENDPOINT, single=True, nonempty=True
    )
    methods = section.section("methods", ("include", "exclude"))
    errors = section.section("errors", None)
    statuses: dict[str, int] = {}
    for exception in errors.names():
        if not exception.isidentifier():
            errors.refuse_name(exception, "an exception name (a Python identifier)")
        if status := errors.integer(exception, 0, 400, 599):
            statuses[exception] = status
    return ServiceConfig(
        name=name,
        endpoints=endpoints,
        timeout=section.seconds("timeout", DEFAULT_TIMEOUT),
        heartbeat=section.seconds("heartbeat", DEFAULT_HEARTBEAT),
        methods=MethodFilter(
            include=methods.strings("include", DEFAULT_INCLUDE, _word, _A_GLOB),
            exclude=methods.strings("exclude", DEFAULT_EXCLUDE, _word, _A_GLOB),
        ),
        safe=section.strings("safe", (), _word, _A_GLOB),
        errors=statuses,
        refresh=section.seconds("refresh", DEFAULT_REFRESH),
        curve=_curve(section, base_dir),
    )


def _curve(service: Section, base_dir: Path | None) -> CurveConfig | None:
    node = service.node("curve")
    if node is None or is_null(node):
        return None
    section = service.section("curve", _CURVE)
    section.require("server_key", "the backends' public key: Z85 text, file:PATH or env:NAME")

    def public(text: str) -> str | EnvSecret | FileSecret | None:
        return _key_source(text, base_dir)

    server_key = section.string("server_key", None, public, _A_PUBLIC_KEY)
    public_key = section.string("public_key", None, public, _A_PUBLIC_KEY)
    secret_key = None
    secret_node = section.node("secret_key")
    if secret_node is not None:
        text = as_str(secret_node)
        secret_key = None if text is None else _secret(text, base_dir)
        if secret_key is None:
            # Never echoed, unlike other values: it may be the secret key itself.
            section.report(
                "secret_key",
                "expected env:NAME or file:PATH (a secret key is never written in the config)",
                secret_node,
            )
    if "public_key" in section and "secret_key" not in section:
        section.report(
            "public_key", "needs secret_key: it is the public half of the gateway's secret key"
        )
    if server_key is None:
        return None
    return CurveConfig(server_key=server_key, secret_key=secret_key, public_key=public_key)


def _routes(top: Section, services: Mapping[str, ServiceConfig]) -> tuple[RouteConfig, ...]:
    routes: list[RouteConfig] = []
    seen: dict[tuple[str, str], str] = {}
    for path, node in top.items("routes"):
        section = Section(top.problems, path, line_of(node), node, _ROUTE)
        given = [section.require(key, what) for key, what in _ROUTE.items()]
        route = RouteConfig(
            method=section.choice("method", HttpMethod.GET),
            path=section.string(
                "path", "", _route_path, f"{_A_PATH} whose {{placeholders}} are distinct names"
            ),
            call=section.string("call", "", _call, "service.method (a method not starting with _)"),
        )
        if route.call and route.service not in services:
            known = ", ".join(services) or "none configured"
            section.report("call", f"no service {route.service!r} in services ({known})")
        if all(given) and route.path:
            # /users/{id} and /users/{user_id} would answer the same requests.
            shape = (route.method.value, _PLACEHOLDER.sub("{}", route.path))
            if shape in seen:
                section.report(
                    "path", f"{route.method} {route.path} takes the same requests as {seen[shape]}"
                )
            else:
                seen[shape] = path
        routes.append(route)
    return tuple(routes)


def _auth(section: Section, base_dir: Path | None) -> AuthConfig:
    mode = section.choice("mode", AuthMode.NONE)
    secret = section.string(
        "secret", None, lambda text: _secret(text, base_dir), "env:NAME or file:PATH"
    )
    if mode is AuthMode.TOKEN and "secret" not in section:
        section.report("secret", "required when mode is token (env:NAME or file:PATH)")
    store: SqliteStore | RedisStore = SqliteStore(_relative(DEFAULT_TOKEN_DB, base_dir))
    return AuthConfig(
        mode=mode,
        store=section.string(
            "store", store, lambda text: _token_store(text, base_dir), _A_TOKEN_STORE
        ),
        secret=secret,
        public=section.strings("public", DEFAULT_PUBLIC, _path, _A_PATH),
        docs=section.choice("docs", DocsAccess.PUBLIC),
    )


def _rate_limit(section: Section) -> RateLimitConfig:
    return RateLimitConfig(
        per_token=section.string("per_token", DEFAULT_RATE, _rate, "a rate like 100/s or 600/m"),
        burst=section.integer("burst", DEFAULT_BURST, 1),
        store=section.string("store", _MEMORY, _state_store, _A_STORE),
    )


def _tracing(section: Section) -> TracingConfig:
    collector = section.string("collector", None, _endpoint, _AN_ENDPOINT)
    query = section.string("query", None, _endpoint, _AN_ENDPOINT)
    if query is None and collector is not None and default_query_endpoint(collector) is None:
        section.report("collector", "has no next port for the query endpoint: give tracing.query")
    if query is not None and query == collector:
        section.report("query", "must differ from tracing.collector", section.node("query"))
    return TracingConfig(
        collector=collector,
        store=section.string("store", _MEMORY, _state_store, _A_STORE),
        ttl=section.integer("ttl", DEFAULT_TRACE_TTL, 1),
        query=query,
        max_traces=section.integer("max_traces", DEFAULT_MAX_TRACES, 1),
    )


def _grace(node: yaml.Node) -> float | None:
    # Unlike timeouts, 0 makes sense here: stop at once, cancelling what is in flight.
    seconds = _as_number(node)
    return seconds if seconds is not None and seconds >= 0 else None


# Each reads one string value, or refuses it with None.


def _word(text: str) -> str | None:
    return text if text and not any(char.isspace() for char in text) else None


def _path(text: str) -> str | None:
    return text if text.startswith("/") and _word(text) else None


def _origin(text: str) -> str | None:
    return text if text == "*" or _ORIGIN.fullmatch(text) else None


def _endpoint(text: str) -> str | None:
    # Everything named here is connected to: a wildcard host or port only makes sense to bind.
    if not is_endpoint(text) or (text.startswith("tcp://") and ("*" in text)):
        return None
    return text


def _route_path(text: str) -> str | None:
    names = _PLACEHOLDER.findall(text)
    rest = _PLACEHOLDER.sub("", text)
    if not _path(text) or "{" in rest or "}" in rest or len(set(names)) != len(names):
        return None
    return text if all(name.isidentifier() for name in names) else None


def _call(text: str) -> str | None:
    service, dot, method = text.partition(".")
    ok = dot and _SERVICE_NAME.fullmatch(service) and method.isidentifier()
    return text if ok and not method.startswith("_") else None


def _rate(text: str) -> float | None:
    match = _RATE.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        return None
    return float(match[1]) / (60.0 if match[2] == "m" else 1.0)


def _redis(text: str) -> RedisStore | None:
    try:
        url = urlsplit(text)
        ok = url.scheme in ("redis", "rediss") and url.hostname and url.port != 0
    except ValueError:  # a port that is not a number
        return None
    database = url.path.strip("/")  # /0, or nothing
    return RedisStore(text) if ok and (database.isdigit() or not database) else None


def _state_store(text: str) -> MemoryStore | RedisStore | None:
    return MemoryStore() if text == "memory" else _redis(text)


def _token_store(text: str, base_dir: Path | None) -> SqliteStore | RedisStore | None:
    if text.startswith(_SQLITE):
        path = text.removeprefix(_SQLITE)  # sqlite:///relative.db, sqlite:////absolute.db
        return SqliteStore(_relative(path, base_dir)) if path else None
    return _redis(text)


def _secret(text: str, base_dir: Path | None) -> EnvSecret | FileSecret | None:
    kind, _, value = text.partition(":")
    if kind == "env" and _ENV_NAME.fullmatch(value):
        return EnvSecret(value)
    if kind == "file" and value:
        return FileSecret(_relative(value, base_dir))
    return None


def _key_source(text: str, base_dir: Path | None) -> str | EnvSecret | FileSecret | None:
    """A public key: a reference (env:NAME, file:PATH), or the key itself, checked."""
    if text.startswith(("env:", "file:")):
        return _secret(text, base_dir)
    try:
        return check_key(text, "")
    except CurveKeyError:
        return None


def _relative(path: str, base_dir: Path | None) -> Path:
    return Path(path) if base_dir is None else base_dir / path
