"""The gateway config (gateway.config): the DESIGN.md example, every default, every kind of
problem with its exact line and key path, all problems of a file at once, relative paths."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    ENV_VAR,
    AuthConfig,
    AuthMode,
    Config,
    ConfigError,
    CorsConfig,
    CurveConfig,
    DocsAccess,
    EnvSecret,
    FileSecret,
    GatewaySettings,
    HttpMethod,
    MemoryStore,
    MethodFilter,
    RateLimitConfig,
    RedisStore,
    RouteConfig,
    ServiceConfig,
    SqliteStore,
    TracingConfig,
    default_config_path,
    load_config,
    parse_config,
)
from rpccore import CurveKeyError, curve_keypair

ENDPOINTS = "tcp://host:port, ipc://path or inproc://name"

# DESIGN.md's example, verbatim but for the `users` service its routes call.
DESIGN_EXAMPLE = """\
gateway:
  host: 127.0.0.1
  port: 8080
  max_body_bytes: 10485760        # larger bodies get 413
  expose_tracebacks: false        # remote tracebacks never reach HTTP clients unless true
  cors: {allow_origins: []}
services:
  calc:
    endpoints: [tcp://127.0.0.1:4242, tcp://127.0.0.1:4243]   # one socket per endpoint
    timeout: 30                   # seconds per call
    heartbeat: 5                  # seconds; lost after 2 missed
    methods: {include: ["*"], exclude: ["_*"]}
    safe: ["get_*", "list_*"]     # methods also callable with GET
    errors: {KeyError: 404, ValueError: 400, PermissionError: 403}
  users:
    endpoints: tcp://127.0.0.1:5000
routes:                           # REST paths beyond the canonical /rpc ones
  - {method: GET,  path: "/users/{user_id}", call: users.get_user}
  - {method: POST, path: "/users",           call: users.create_user}
auth:
  mode: token                     # or none
  store: sqlite:///zerogate-tokens.db   # or redis://127.0.0.1:6379/0
  secret: env:ZEROGATE_SECRET     # key for the token hashes: env:NAME or file:PATH
  public: [/healthz, /readyz]     # open without a token
  docs: public                    # or token: /docs and /openapi.json need a token
rate_limit: {per_token: 100/s, burst: 200, store: memory}   # or redis://...
tracing: {collector: tcp://127.0.0.1:5570, store: memory, ttl: 86400}   # or store: redis://...
"""


def test_design_example(tmp_path: Path) -> None:
    path = tmp_path / "zerogate.yaml"
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    assert load_config(path) == Config(
        gateway=GatewaySettings(
            host="127.0.0.1",
            port=8080,
            max_body_bytes=10485760,
            expose_tracebacks=False,
            cors=CorsConfig(allow_origins=()),
        ),
        services={
            "calc": ServiceConfig(
                name="calc",
                endpoints=("tcp://127.0.0.1:4242", "tcp://127.0.0.1:4243"),
                timeout=30.0,
                heartbeat=5.0,
                methods=MethodFilter(include=("*",), exclude=("_*",)),
                safe=("get_*", "list_*"),
                errors={"KeyError": 404, "ValueError": 400, "PermissionError": 403},
                refresh=30.0,
            ),
            "users": ServiceConfig(name="users", endpoints=("tcp://127.0.0.1:5000",)),
        },
        routes=(
            RouteConfig(method=HttpMethod.GET, path="/users/{user_id}", call="users.get_user"),
            RouteConfig(method=HttpMethod.POST, path="/users", call="users.create_user"),
        ),
        auth=AuthConfig(
            mode=AuthMode.TOKEN,
            store=SqliteStore(tmp_path / "zerogate-tokens.db"),
            secret=EnvSecret("ZEROGATE_SECRET"),
            public=("/healthz", "/readyz"),
            docs=DocsAccess.PUBLIC,
        ),
        rate_limit=RateLimitConfig(per_token=100.0, burst=200, store=MemoryStore()),
        tracing=TracingConfig(
            collector="tcp://127.0.0.1:5570",
            store=MemoryStore(),
            ttl=86400,
            query="tcp://127.0.0.1:5571",
            max_traces=10000,
        ),
        source=path,
    )


def test_the_defaults_are_design_md_values() -> None:
    assert Config() == Config(
        gateway=GatewaySettings(
            host="127.0.0.1",
            port=8080,
            max_body_bytes=10485760,
            expose_tracebacks=False,
            cors=CorsConfig(allow_origins=()),
            shutdown_grace=10.0,
        ),
        services={},
        routes=(),
        auth=AuthConfig(
            mode=AuthMode.NONE,
            store=SqliteStore(Path("zerogate-tokens.db")),
            secret=None,
            public=("/healthz", "/readyz"),
            docs=DocsAccess.PUBLIC,
        ),
        rate_limit=RateLimitConfig(per_token=100.0, burst=200, store=MemoryStore()),
        tracing=TracingConfig(
            collector=None, store=MemoryStore(), ttl=86400, query=None, max_traces=10000
        ),
        source=None,
    )
    assert ServiceConfig(name="calc", endpoints=("inproc://calc",)) == ServiceConfig(
        name="calc",
        endpoints=("inproc://calc",),
        timeout=30.0,
        heartbeat=5.0,
        methods=MethodFilter(include=("*",), exclude=("_*",)),
        safe=(),
        errors={},
        refresh=30.0,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# nothing but a comment\n",
        "gateway: {}\nservices: {}\nroutes: []\nauth: {}\nrate_limit: {}\ntracing: {}\n",
        "gateway:\nservices:\nroutes:\nauth:\nrate_limit:\ntracing:\n",
    ],
)
def test_omitted_or_empty_sections_are_the_defaults(text: str) -> None:
    assert parse_config(text) == Config()


def test_a_service_with_only_endpoints_gets_the_defaults() -> None:
    config = parse_config("services:\n  calc:\n    endpoints: inproc://calc\n")
    assert config.services == {"calc": ServiceConfig(name="calc", endpoints=("inproc://calc",))}


def getter(*names: str) -> Callable[[Config], Any]:
    def get(config: Config) -> Any:
        value: Any = config
        for name in names:
            value = value[name] if isinstance(value, dict) else getattr(value, name)
        return value

    return get


CALC = "services:\n  calc:\n    endpoints: inproc://calc\n"


@pytest.mark.parametrize(
    ("text", "get", "expected"),
    [
        ("gateway: {port: 0}", getter("gateway", "port"), 0),
        ("gateway: {port: 0x1f90}", getter("gateway", "port"), 8080),
        ("gateway: {host: '::'}", getter("gateway", "host"), "::"),
        ("gateway: {expose_tracebacks: true}", getter("gateway", "expose_tracebacks"), True),
        ("gateway: {shutdown_grace: 0}", getter("gateway", "shutdown_grace"), 0.0),
        ("gateway: {shutdown_grace: 2.5}", getter("gateway", "shutdown_grace"), 2.5),
        ("gateway: {shutdown_grace: 30}", getter("gateway", "shutdown_grace"), 30.0),
        (
            "gateway: {cors: {allow_origins: ['*', 'https://app.example:8443']}}",
            getter("gateway", "cors", "allow_origins"),
            ("*", "https://app.example:8443"),
        ),
        (
            "services: {calc: {endpoints: ['ipc:///tmp/calc.sock', 'tcp://[::1]:4242']}}",
            getter("services", "calc", "endpoints"),
            ("ipc:///tmp/calc.sock", "tcp://[::1]:4242"),
        ),
        (CALC + "    timeout: 2.5\n", getter("services", "calc", "timeout"), 2.5),
        (CALC + "    heartbeat: 1\n", getter("services", "calc", "heartbeat"), 1.0),
        (CALC + "    refresh: 600\n", getter("services", "calc", "refresh"), 600.0),
        (
            CALC + "    methods: {include: ['get_*']}\n",
            getter("services", "calc", "methods"),
            MethodFilter(include=("get_*",), exclude=("_*",)),
        ),
        (
            "services: {calc: {endpoints: inproc://c}, my-svc_2: {endpoints: inproc://m}}",
            lambda config: list(config.services),
            ["calc", "my-svc_2"],
        ),
        ("services: {}", getter("services"), {}),
        (
            CALC + "routes: [{method: DELETE, path: '/calc/{a}/{b}', call: calc.drop}]\n",
            lambda config: config.routes[0],
            RouteConfig(method=HttpMethod.DELETE, path="/calc/{a}/{b}", call="calc.drop"),
        ),
        ("auth: {mode: none}", getter("auth", "mode"), AuthMode.NONE),
        ("auth: {docs: token}", getter("auth", "docs"), DocsAccess.TOKEN),
        ("auth: {public: []}", getter("auth", "public"), ()),
        (
            "auth: {mode: token, secret: 'file:/etc/zerogate/secret'}",
            getter("auth", "secret"),
            FileSecret(Path("/etc/zerogate/secret")),
        ),
        (
            "auth: {store: 'sqlite:////var/lib/zerogate/tokens.db'}",
            getter("auth", "store"),
            SqliteStore(Path("/var/lib/zerogate/tokens.db")),
        ),
        (
            "auth: {store: 'redis://127.0.0.1:6379/0'}",
            getter("auth", "store"),
            RedisStore("redis://127.0.0.1:6379/0"),
        ),
        ("rate_limit: {per_token: 60/m}", getter("rate_limit", "per_token"), 1.0),
        ("rate_limit: {per_token: 2.5/s}", getter("rate_limit", "per_token"), 2.5),
        ("rate_limit: {burst: 1}", getter("rate_limit", "burst"), 1),
        (
            "rate_limit: {store: 'rediss://cache.internal'}",
            getter("rate_limit", "store"),
            RedisStore("rediss://cache.internal"),
        ),
        (
            "tracing: {collector: 'ipc:///run/zerogate/collector', ttl: 60}",
            lambda config: (config.tracing.collector, config.tracing.ttl),
            ("ipc:///run/zerogate/collector", 60),
        ),
        (
            "tracing: {collector: 'tcp://10.0.0.5:6000'}",
            getter("tracing", "query"),
            "tcp://10.0.0.5:6001",
        ),
        (
            "tracing: {collector: 'tcp://[::1]:6000'}",
            getter("tracing", "query"),
            "tcp://[::1]:6001",
        ),
        (
            "tracing: {collector: 'ipc:///run/zerogate/collector'}",
            getter("tracing", "query"),
            "ipc:///run/zerogate/collector.query",
        ),
        (
            "tracing: {collector: 'tcp://127.0.0.1:65535', query: 'tcp://127.0.0.1:7000'}",
            getter("tracing", "query"),
            "tcp://127.0.0.1:7000",
        ),
        (
            "tracing: {query: 'tcp://127.0.0.1:7000'}",
            getter("tracing", "query"),
            "tcp://127.0.0.1:7000",
        ),
        ("tracing: {}", getter("tracing", "query"), None),
        ("tracing: {max_traces: 50}", getter("tracing", "max_traces"), 50),
        (
            "tracing: {store: 'redis://127.0.0.1:6379/2'}",
            getter("tracing", "store"),
            RedisStore("redis://127.0.0.1:6379/2"),
        ),
    ],
)
def test_values(text: str, get: Callable[[Config], Any], expected: object) -> None:
    assert get(parse_config(text)) == expected


# (yaml, the one problem it has). Each message names the file, the line and the key path.
PROBLEMS = [
    # keys
    ("gateway:\n  prot: 80\n", "line 2: gateway.prot: unknown key (did you mean 'port'?)"),
    ("servics: {}\n", "line 1: servics: unknown key (did you mean 'services'?)"),
    (
        "gateway:\n  tls: true\n",
        "line 2: gateway.tls: unknown key "
        "(known keys: host, port, max_body_bytes, expose_tracebacks, cors, shutdown_grace)",
    ),
    ("gateway:\n  port: 1\n  port: 2\n", "line 3: gateway.port: given twice (first on line 2)"),
    (
        CALC + "  calc:\n    endpoints: inproc://other\n",
        "line 4: services.calc: given twice (first on line 2)",
    ),
    ("1: one\n", "line 1: a key must be a string, got 1"),
    ("gateway: {5: x}\n", "line 1: gateway: a key must be a string, got 5"),
    # the top level and section types
    (
        "- gateway\n",
        "line 1: the top level must be a mapping of sections "
        "(gateway, services, routes, auth, rate_limit, tracing), got a list",
    ),
    (
        "hello\n",
        "line 1: the top level must be a mapping of sections "
        "(gateway, services, routes, auth, rate_limit, tracing), got 'hello'",
    ),
    ("gateway: [1]\n", "line 1: gateway: expected a mapping, got a list"),
    ("services: [calc]\n", "line 1: services: expected a mapping, got a list"),
    ("routes: {a: 1}\n", "line 1: routes: expected a list, got a mapping"),
    # gateway
    (
        "gateway:\n  port: http\n",
        "line 2: gateway.port: expected an integer from 0 to 65535, got 'http'",
    ),
    (
        "gateway: {port: 70000}\n",
        "line 1: gateway.port: expected an integer from 0 to 65535, got 70000",
    ),
    (
        "gateway: {port: '8080'}\n",
        "line 1: gateway.port: expected an integer from 0 to 65535, got '8080'",
    ),
    ("gateway: {host: ''}\n", "line 1: gateway.host: expected a host name or address, got ''"),
    (
        "gateway: {max_body_bytes: 1.5}\n",
        "line 1: gateway.max_body_bytes: expected an integer >= 1, got 1.5",
    ),
    (
        "gateway: {expose_tracebacks: maybe}\n",
        "line 1: gateway.expose_tracebacks: expected true or false, got 'maybe'",
    ),
    (
        "gateway: {expose_tracebacks: 1}\n",
        "line 1: gateway.expose_tracebacks: expected true or false, got 1",
    ),
    *(
        (
            f"gateway:\n  shutdown_grace: {grace}\n",
            f"line 2: gateway.shutdown_grace: expected a number of seconds >= 0, got {shown}",
        )
        for grace, shown in [("-1", "-1"), ("soon", "'soon'"), (".inf", ".inf"), ("", "null")]
    ),
    (
        "gateway:\n  cors:\n    allow_origins: ['https://app.example/']\n",
        "line 3: gateway.cors.allow_origins[0]: "
        "expected an origin (* or http[s]://host[:port]), got 'https://app.example/'",
    ),
    (
        "gateway: {cors: {origins: []}}\n",
        "line 1: gateway.cors.origins: unknown key (did you mean 'allow_origins'?)",
    ),
    # services
    (
        "gateway:\n  host: 127.0.0.1\n  port: 8080\nservices:\n  calc:\n"
        "    endpoints: [tcp://127.0.0.1:4242]\n    timeout: soon\n",
        "line 7: services.calc.timeout: expected a number > 0, got 'soon'",
    ),
    (CALC + "    heartbeat: 0\n", "line 4: services.calc.heartbeat: expected a number > 0, got 0"),
    (CALC + "    refresh: -1\n", "line 4: services.calc.refresh: expected a number > 0, got -1"),
    (
        CALC + "    timeout: .inf\n",
        "line 4: services.calc.timeout: expected a number > 0, got .inf",
    ),
    (CALC + "    timeout:\n", "line 4: services.calc.timeout: expected a number > 0, got null"),
    (
        CALC + "    timout: 5\n",
        "line 4: services.calc.timout: unknown key (did you mean 'timeout'?)",
    ),
    (
        "services:\n  calc:\n    timeout: 5\n",
        "line 2: services.calc.endpoints: required (a list of ZeroMQ endpoints, or one)",
    ),
    (
        "services:\n  calc:\n",
        "line 2: services.calc.endpoints: required (a list of ZeroMQ endpoints, or one)",
    ),
    (
        "services:\n  calc:\n    endpoints: []\n",
        "line 3: services.calc.endpoints: expected at least one entry, got an empty list",
    ),
    (
        "services:\n  calc:\n    endpoints: http://calc\n",
        f"line 3: services.calc.endpoints: expected a ZeroMQ endpoint to connect to ({ENDPOINTS}), "
        "got 'http://calc'",
    ),
    (
        "services:\n  calc:\n    endpoints: 4242\n",
        f"line 3: services.calc.endpoints: expected a ZeroMQ endpoint to connect to ({ENDPOINTS}) "
        "or a list of them, got 4242",
    ),
    (
        "services:\n  calc:\n    endpoints:\n      - tcp://127.0.0.1:4242\n      - tcp://*:4243\n",
        "line 5: services.calc.endpoints[1]: "
        f"expected a ZeroMQ endpoint to connect to ({ENDPOINTS}), got 'tcp://*:4243'",
    ),
    (
        "services:\n  calc:\n    endpoints: ['tcp://calc:70000']\n",
        "line 3: services.calc.endpoints[0]: "
        f"expected a ZeroMQ endpoint to connect to ({ENDPOINTS}), got 'tcp://calc:70000'",
    ),
    (
        "services:\n  calc:\n    endpoints: [inproc://calc, inproc://calc]\n",
        "line 3: services.calc.endpoints[1]: "
        "'inproc://calc' is listed twice (first as endpoints[0])",
    ),
    (
        CALC + "    methods: {include: ['']}\n",
        "line 4: services.calc.methods.include[0]: "
        "expected a glob (a non-empty pattern without spaces), got ''",
    ),
    (
        CALC + "    methods:\n      exclude: [_*, 'get user']\n",
        "line 5: services.calc.methods.exclude[1]: "
        "expected a glob (a non-empty pattern without spaces), got 'get user'",
    ),
    (CALC + "    safe: get_*\n", "line 4: services.calc.safe: expected a list, got 'get_*'"),
    (
        CALC + "    errors: {KeyError: 200}\n",
        "line 4: services.calc.errors.KeyError: expected an integer from 400 to 599, got 200",
    ),
    (
        CALC + "    errors: {Key Error: 404}\n",
        "line 4: services.calc.errors: expected an exception name (a Python identifier), "
        "got 'Key Error'",
    ),
    (
        "services:\n  my calc:\n    endpoints: inproc://calc\n",
        "line 2: services: expected a service name (letters, digits, '_' and '-'), got 'my calc'",
    ),
    # routes
    (
        CALC + "routes:\n  - {method: get, path: /calc, call: calc.add}\n",
        "line 5: routes[0].method: expected one of GET, POST, PUT, PATCH, DELETE, got 'get'",
    ),
    (
        CALC + "routes:\n  - {method: GET, path: calc, call: calc.add}\n",
        "line 5: routes[0].path: expected a path starting with '/' whose {placeholders} are "
        "distinct names, got 'calc'",
    ),
    *(
        (
            CALC + f"routes:\n  - {{method: GET, path: '{path}', call: calc.add}}\n",
            "line 5: routes[0].path: expected a path starting with '/' whose {placeholders} are "
            f"distinct names, got '{path}'",
        )
        for path in [
            "/calc/{a b}",
            "/calc/{1}",
            "/calc/{}",
            "/calc/{a}/{a}",
            "/calc/a}",
            "/calc/{a",
        ]
    ),
    (
        CALC + "routes:\n  - {method: GET, path: /calc, call: calc}\n",
        "line 5: routes[0].call: "
        "expected service.method (a method not starting with _), got 'calc'",
    ),
    (
        CALC + "routes:\n  - {method: GET, path: /calc, call: calc._secret}\n",
        "line 5: routes[0].call: expected service.method (a method not starting with _), "
        "got 'calc._secret'",
    ),
    (
        CALC + "routes:\n  - {method: GET, path: /users, call: users.list}\n",
        "line 5: routes[0].call: no service 'users' in services (calc)",
    ),
    (
        "routes:\n  - {method: GET, path: /users, call: users.list}\n",
        "line 2: routes[0].call: no service 'users' in services (none configured)",
    ),
    (
        CALC + "routes:\n  - {method: GET, path: /calc}\n",
        "line 5: routes[0].call: required (service.method)",
    ),
    (
        CALC + "routes:\n  - {method: GET, path: /calc, call: calc.add, scope: admin}\n",
        "line 5: routes[0].scope: unknown key (known keys: method, path, call)",
    ),
    (CALC + "routes:\n  - /calc\n", "line 5: routes[0]: expected a mapping, got '/calc'"),
    (
        CALC + "routes:\n  - {method: GET, path: '/calc/{a}', call: calc.get}\n"
        "  - {method: GET, path: '/calc/{b}', call: calc.other}\n",
        "line 6: routes[1].path: GET /calc/{b} takes the same requests as routes[0]",
    ),
    # auth
    ("auth: {mode: tokens}\n", "line 1: auth.mode: expected none or token, got 'tokens'"),
    (
        "auth:\n  mode: token\n",
        "line 1: auth.secret: required when mode is token (env:NAME or file:PATH)",
    ),
    (
        "auth: {secret: hunter2}\n",
        "line 1: auth.secret: expected env:NAME or file:PATH, got 'hunter2'",
    ),
    (
        "auth: {secret: 'env:1NAME'}\n",
        "line 1: auth.secret: expected env:NAME or file:PATH, got 'env:1NAME'",
    ),
    (
        "auth: {secret: 'file:'}\n",
        "line 1: auth.secret: expected env:NAME or file:PATH, got 'file:'",
    ),
    (
        "auth: {store: 'postgres://db/tokens'}\n",
        "line 1: auth.store: expected sqlite:///PATH or redis://HOST:PORT/DB, got 'postgres://db/tokens'",
    ),
    (
        "auth: {store: 'sqlite:///'}\n",
        "line 1: auth.store: expected sqlite:///PATH or redis://HOST:PORT/DB, got 'sqlite:///'",
    ),
    (
        "auth: {public: [healthz]}\n",
        "line 1: auth.public[0]: expected a path starting with '/', got 'healthz'",
    ),
    ("auth: {docs: private}\n", "line 1: auth.docs: expected public or token, got 'private'"),
    # rate_limit
    *(
        (
            f"rate_limit: {{per_token: {rate}}}\n",
            f"line 1: rate_limit.per_token: expected a rate like 100/s or 600/m, got {shown}",
        )
        for rate, shown in [
            ("100", "100"),
            ("0/s", "'0/s'"),
            ("5/h", "'5/h'"),
            ("'-1/s'", "'-1/s'"),
        ]
    ),
    ("rate_limit: {burst: 0}\n", "line 1: rate_limit.burst: expected an integer >= 1, got 0"),
    *(
        (
            f"rate_limit: {{store: '{store}'}}\n",
            f"line 1: rate_limit.store: expected memory or redis://HOST:PORT/DB, got '{store}'",
        )
        for store in ["disk", "redis://", "redis://cache:port", "redis://cache:6379/zero"]
    ),
    # tracing
    (
        "tracing: {collector: 5570}\n",
        "line 1: tracing.collector: "
        f"expected a ZeroMQ endpoint to connect to ({ENDPOINTS}), got 5570",
    ),
    ("tracing: {ttl: 0}\n", "line 1: tracing.ttl: expected an integer >= 1, got 0"),
    (
        "tracing: {max_traces: 0}\n",
        "line 1: tracing.max_traces: expected an integer >= 1, got 0",
    ),
    (
        "tracing:\n  collector: tcp://127.0.0.1:5570\n  query: tcp://*:5571\n",
        "line 3: tracing.query: "
        f"expected a ZeroMQ endpoint to connect to ({ENDPOINTS}), got 'tcp://*:5571'",
    ),
    (
        "tracing:\n  collector: tcp://127.0.0.1:5570\n  query: tcp://127.0.0.1:5570\n",
        "line 3: tracing.query: must differ from tracing.collector",
    ),
    (
        "tracing:\n  collector: tcp://127.0.0.1:65535\n",
        "line 2: tracing.collector: has no next port for the query endpoint: give tracing.query",
    ),
    (
        "tracing: {store: sqlite:///traces.db}\n",
        "line 1: tracing.store: expected memory or redis://HOST:PORT/DB, got 'sqlite:///traces.db'",
    ),
    # YAML itself
    (
        "gateway:\n  port: [8080\n",
        "line 3: malformed YAML: while parsing a flow sequence, "
        "expected ',' or ']', but got '<stream end>'",
    ),
    (
        "gateway:\n\tport: 8080\n",
        "line 2: malformed YAML: while scanning for the next token, "
        "found character '\\t' that cannot start any token",
    ),
    (
        "gateway: {}\n---\nservices: {}\n",
        "line 2: malformed YAML: "
        "expected a single document in the stream, but found another document",
    ),
]


@pytest.mark.parametrize(("text", "problem"), PROBLEMS)
def test_each_problem_names_file_line_and_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "zerogate.yaml")
    assert caught.value.problems == (f"zerogate.yaml {problem}",)
    assert str(caught.value) == f"zerogate.yaml {problem}"


def test_every_problem_of_a_file_is_reported_at_once_in_line_order() -> None:
    text = textwrap.dedent(
        """\
        auth: {mode: token}
        gateway:
          prot: 80
          port: eighty
        services:
          calc:
            endpoints: tcp://calc
            timeout: soon
        routes:
          - {method: GET, path: /users, call: users.list}
        rate_limit: {burst: 0}
        """
    )
    expected = (
        "zerogate.yaml line 1: auth.secret: required when mode is token (env:NAME or file:PATH)",
        "zerogate.yaml line 3: gateway.prot: unknown key (did you mean 'port'?)",
        "zerogate.yaml line 4: gateway.port: expected an integer from 0 to 65535, got 'eighty'",
        f"zerogate.yaml line 7: services.calc.endpoints: expected a ZeroMQ endpoint to connect to "
        f"({ENDPOINTS}), got 'tcp://calc'",
        "zerogate.yaml line 8: services.calc.timeout: expected a number > 0, got 'soon'",
        "zerogate.yaml line 10: routes[0].call: no service 'users' in services (calc)",
        "zerogate.yaml line 11: rate_limit.burst: expected an integer >= 1, got 0",
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "zerogate.yaml")
    assert caught.value.problems == expected
    assert str(caught.value) == "\n".join(expected)


def test_config_error_is_a_value_error_that_pickles() -> None:
    error = ConfigError("a.yaml line 1: x: first", "a.yaml line 2: y: second")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.problems, str(copy)) == (ConfigError, error.problems, str(error))


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (
            "{store: 'sqlite:///data/tokens.db', secret: 'file:keys/secret'}",
            ("conf/data/tokens.db", "conf/keys/secret"),
        ),
        (
            "{store: 'sqlite:////srv/tokens.db', secret: 'file:/srv/secret'}",
            ("/srv/tokens.db", "/srv/secret"),
        ),
        ("{}", ("conf/zerogate-tokens.db", None)),
    ],
)
def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str, expected: tuple[str, str | None]
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "zerogate.yaml").write_text(f"auth: {auth}\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config("../conf/zerogate.yaml")
    store, secret = expected
    assert isinstance(config.auth.store, SqliteStore)
    assert config.auth.store.path.resolve() == (tmp_path / store).resolve()
    assert config.auth.store.path.is_absolute()
    if secret is None:
        assert config.auth.secret is None
    else:
        assert isinstance(config.auth.secret, FileSecret)
        assert config.auth.secret.path.resolve() == (tmp_path / secret).resolve()
    assert config.source == Path("../conf/zerogate.yaml")


def test_parse_config_joins_relative_paths_to_base_dir_or_leaves_them(tmp_path: Path) -> None:
    text = "auth: {store: 'sqlite:///tokens.db', secret: 'file:secret'}"
    assert parse_config(text, base_dir=tmp_path).auth == AuthConfig(
        store=SqliteStore(tmp_path / "tokens.db"), secret=FileSecret(tmp_path / "secret")
    )
    assert parse_config(text).auth == AuthConfig(
        store=SqliteStore(Path("tokens.db")), secret=FileSecret(Path("secret"))
    )


def test_load_config_problems_name_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("zerogate.yaml").write_text("gateway:\n  prot: 80\n", encoding="utf-8")
    Path("latin1.yaml").write_bytes(b"gateway: {host: caf\xe9}\n")
    cases = [
        ("zerogate.yaml", "zerogate.yaml line 2: gateway.prot: unknown key (did you mean 'port'?)"),
        ("missing.yaml", "missing.yaml: no such config file"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == message
    with pytest.raises(ConfigError, match=r"^latin1\.yaml: cannot read the config file: .*utf-8"):
        load_config("latin1.yaml")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, Path("zerogate.yaml")),
        ("", Path("zerogate.yaml")),
        ("/etc/zerogate/gateway.yaml", Path("/etc/zerogate/gateway.yaml")),
    ],
)
def test_default_config_path(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: Path
) -> None:
    if env is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, env)
    assert default_config_path() == expected


@pytest.mark.parametrize(
    ("methods", "name", "exposed"),
    [
        (MethodFilter(), "add", True),
        (MethodFilter(), "_private", False),
        (MethodFilter(include=("get_*",)), "get_user", True),
        (MethodFilter(include=("get_*",)), "delete_user", False),
        (MethodFilter(exclude=("admin_*",)), "admin_reset", False),
        (MethodFilter(include=("*",), exclude=()), "_zerorpc_inspect", False),
    ],
)
def test_method_filter(methods: MethodFilter, name: str, exposed: bool) -> None:
    assert methods.exposes(name) is exposed


def test_service_safe_methods_and_route_parts() -> None:
    service = ServiceConfig(name="users", endpoints=("inproc://u",), safe=("get_*", "list_*"))
    assert [service.is_safe(name) for name in ("get_user", "list_users", "create_user")] == [
        True,
        True,
        False,
    ]
    route = RouteConfig(method=HttpMethod.GET, path="/users/{org}/{user_id}", call="users.get_user")
    assert (route.service, route.rpc_method, route.params) == (
        "users",
        "get_user",
        ("org", "user_id"),
    )


# -- services.NAME.curve: CurveZMQ between the gateway and the backends ----------------------

CURVE_PUBLIC, CURVE_SECRET = curve_keypair()  # a real pair: the keys are checked
CLIENT_PUBLIC, CLIENT_SECRET = curve_keypair()


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        (f'{{server_key: "{CURVE_PUBLIC}"}}', CurveConfig(server_key=CURVE_PUBLIC)),
        (
            f'{{server_key: "{CURVE_PUBLIC}", secret_key: env:ZG_CURVE, '
            f'public_key: "{CLIENT_PUBLIC}"}}',
            CurveConfig(
                server_key=CURVE_PUBLIC,
                secret_key=EnvSecret("ZG_CURVE"),
                public_key=CLIENT_PUBLIC,
            ),
        ),
        (
            "{server_key: 'file:/etc/zerogate/backend.pub', secret_key: 'file:/etc/zg/gw.key'}",
            CurveConfig(
                server_key=FileSecret(Path("/etc/zerogate/backend.pub")),
                secret_key=FileSecret(Path("/etc/zg/gw.key")),
            ),
        ),
        ("{server_key: 'env:BACKEND_PUB'}", CurveConfig(server_key=EnvSecret("BACKEND_PUB"))),
        ("null", None),
    ],
)
def test_curve_values(curve: str, expected: CurveConfig | None) -> None:
    assert parse_config(CALC + f"    curve: {curve}\n").services["calc"].curve == expected


def test_a_service_without_curve_is_plain() -> None:
    assert parse_config(CALC).services["calc"].curve is None


CURVE_PROBLEMS = [
    (
        f'    curve: {{server_key: "{CURVE_PUBLIC}", secret: env:K}}\n',
        "line 4: services.calc.curve.secret: unknown key (did you mean 'secret_key'?)",
    ),
    (
        "    curve: {server_key: abc}\n",
        "line 4: services.calc.curve.server_key: "
        "expected a public key (40 Z85 characters), file:PATH or env:NAME, got 'abc'",
    ),
    (
        "    curve: {server_key: '" + "~" * 40 + "'}\n",
        "line 4: services.calc.curve.server_key: "
        f"expected a public key (40 Z85 characters), file:PATH or env:NAME, got '{'~' * 40}'",
    ),
    (
        f'    curve:\n      server_key: "{CURVE_PUBLIC}"\n      secret_key: env:K\n'
        f'      public_key: "{CURVE_PUBLIC[:-1]}"\n',
        "line 7: services.calc.curve.public_key: "
        f"expected a public key (40 Z85 characters), file:PATH or env:NAME, "
        f"got '{CURVE_PUBLIC[:-1]}'",
    ),
    (
        "    curve: {server_key: 'env:1BAD'}\n",
        "line 4: services.calc.curve.server_key: "
        "expected a public key (40 Z85 characters), file:PATH or env:NAME, got 'env:1BAD'",
    ),
    (
        "    curve: {secret_key: env:K}\n",
        "line 4: services.calc.curve.server_key: "
        "required (the backends' public key: Z85 text, file:PATH or env:NAME)",
    ),
    (
        f'    curve: {{server_key: "{CURVE_PUBLIC}", public_key: "{CLIENT_PUBLIC}"}}\n',
        "line 4: services.calc.curve.public_key: "
        "needs secret_key: it is the public half of the gateway's secret key",
    ),
    ("    curve: 5\n", "line 4: services.calc.curve: expected a mapping, got 5"),
]


@pytest.mark.parametrize(("lines", "problem"), CURVE_PROBLEMS)
def test_curve_problems_name_file_line_and_key(lines: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CALC + lines, "zerogate.yaml")
    assert caught.value.problems == (f"zerogate.yaml {problem}",)


@pytest.mark.parametrize("secret", [CLIENT_SECRET, "s3cr3t", "file:"])
def test_a_literal_curve_secret_key_is_refused_and_never_echoed(secret: str) -> None:
    text = CALC + f'    curve:\n      server_key: "{CURVE_PUBLIC}"\n      secret_key: "{secret}"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "zerogate.yaml")
    assert caught.value.problems == (
        "zerogate.yaml line 6: services.calc.curve.secret_key: "
        "expected env:NAME or file:PATH (a secret key is never written in the config)",
    )
    assert CLIENT_SECRET not in str(caught.value)


def test_curve_key_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "zerogate.yaml"
    path.write_text(
        CALC + "    curve: {server_key: 'file:keys/backend.pub', secret_key: 'file:gw.key'}\n",
        encoding="utf-8",
    )
    curve = load_config(path).services["calc"].curve
    assert curve == CurveConfig(
        server_key=FileSecret(tmp_path / "keys" / "backend.pub"),
        secret_key=FileSecret(tmp_path / "gw.key"),
    )


def test_curve_client_keys_reads_the_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "backend.pub").write_text(f"# the backend\n{CURVE_PUBLIC}\n", encoding="utf-8")
    monkeypatch.setenv("ZG_GATEWAY_KEY", CLIENT_SECRET)
    curve = CurveConfig(
        server_key=FileSecret(tmp_path / "backend.pub"),
        secret_key=EnvSecret("ZG_GATEWAY_KEY"),
        public_key=CLIENT_PUBLIC,
    )
    keys = curve.client_keys("services.calc.curve")
    assert (keys.server_key, keys.public_key, keys.secret_key) == (
        CURVE_PUBLIC,
        CLIENT_PUBLIC,
        CLIENT_SECRET,
    )
    # Without a secret key, a new pair each time.
    fresh = CurveConfig(server_key=CURVE_PUBLIC).client_keys()
    assert fresh.server_key == CURVE_PUBLIC
    assert fresh.public_key != CurveConfig(server_key=CURVE_PUBLIC).client_keys().public_key


@pytest.mark.parametrize(
    ("curve", "message"),
    [
        (
            CurveConfig(server_key=CURVE_PUBLIC, secret_key=EnvSecret("ZG_UNSET_CURVE_KEY")),
            "services.calc.curve.secret_key: the environment variable ZG_UNSET_CURVE_KEY is "
            "not set",
        ),
        (
            CurveConfig(server_key=FileSecret(Path("/nonexistent/backend.pub"))),
            "services.calc.curve.server_key: cannot read the key file "
            "/nonexistent/backend.pub: No such file or directory",
        ),
        (
            CurveConfig(
                server_key=CURVE_PUBLIC,
                secret_key=EnvSecret("ZG_CURVE_KEY"),
                public_key=CURVE_PUBLIC,
            ),
            "services.calc.curve: client public_key is not the public half of its secret_key",
        ),
    ],
)
def test_curve_client_keys_problems(
    monkeypatch: pytest.MonkeyPatch, curve: CurveConfig, message: str
) -> None:
    monkeypatch.delenv("ZG_UNSET_CURVE_KEY", raising=False)
    monkeypatch.setenv("ZG_CURVE_KEY", CLIENT_SECRET)
    with pytest.raises(CurveKeyError) as caught:
        curve.client_keys("services.calc.curve")
    assert str(caught.value) == message
    assert CLIENT_SECRET not in str(caught.value)


def test_a_tracing_config_built_in_code_derives_its_query_endpoint() -> None:
    assert TracingConfig(collector="tcp://127.0.0.1:5570").query == "tcp://127.0.0.1:5571"
    assert TracingConfig(collector="inproc://traces").query == "inproc://traces.query"
    assert TracingConfig(collector="tcp://127.0.0.1:65535").query is None
    assert TracingConfig().query is None
    explicit = TracingConfig(collector="tcp://127.0.0.1:5570", query="ipc:///tmp/q")
    assert explicit.query == "ipc:///tmp/q"
