"""The ``zerogate`` command line.

Commands: ``zerogate demo`` (demo services and the gateway in front of them, ``demo``),
``zerogate serve`` (the gateway from a config file, ``serve``), ``zerogate rpc`` (the zerorpc
command line, ``rpc_command``), ``zerogate hub`` (the load-balancing hub, ``hub``),
``zerogate token`` (API tokens, ``token_command``), ``zerogate keys`` (CurveZMQ key pairs,
``keys_command``), ``zerogate collector`` (trace records, ``collector``) and ``zerogate
openapi`` (the OpenAPI document, ``openapi_command``). Each
command imports its runtime when it runs, so
``zerogate --help`` stays fast and never imports gevent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

DESCRIPTION: Final = (
    "zerogate: an HTTP gateway in front of ZeroRPC services, and the tools around it."
)
DEMO_PORT = 8080
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.port, auth=args.auth)


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, serve

    return serve(
        ServeOptions(
            config_path=args.config,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    )


def _hub(args: argparse.Namespace) -> int:
    from .hub import run_command

    return run_command(args)


def _openapi(args: argparse.Namespace) -> int:
    from .openapi_command import main as openapi_main

    return openapi_main(args)


# Commands that parse their own arguments (options anywhere, their own --help): the module
# whose main(argv) runs each, imported only when it runs, so `zerogate --help` stays fast and
# never imports gevent or the token stores.
PASS_THROUGH: Final = {
    "rpc": ("rpc_command", "the zerorpc command line: serve, list, call, inspect"),
    "token": ("token_command", "create, list, revoke and rotate API tokens"),
    "keys": ("keys_command", "generate a CurveZMQ key pair for the gateway-to-backend hop"),
    "collector": (
        "collector",
        "receive trace records and store them (memory or Redis); answer queries",
    ),
}


def _pass_through(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"{__package__}.{PASS_THROUGH[args.command][0]}")
    status: int = module.main(args.rest)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zerogate", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="demo services on loopback with the gateway in front; prints what to try",
        description="Start two demo RPC services (one on gevent, one on asyncio) on loopback, "
        "a trace collector, and the gateway in front of them on 127.0.0.1:PORT, then print "
        "URLs and curl lines to try. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--port", type=_port, default=DEMO_PORT, help=f"the gateway's port (default {DEMO_PORT})"
    )
    demo.add_argument(
        "--auth",
        action="store_true",
        help="ask for API tokens: a secret and a token store live in a temporary folder for "
        "the demo's life, and the banner shows a token of scope *:* for the curl lines",
    )
    demo.set_defaults(handler=_demo)
    _add_serve(commands)
    for name, (_, summary) in PASS_THROUGH.items():
        # An unused prefix char: every argument is collected as is, for the command's own parser.
        command = commands.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(handler=_pass_through)
    hub = commands.add_parser(
        "hub",
        help="load-balancing hub: clients connect to --in, workers to --out",
        description="Load-balancing ZeroRPC hub. Give a hub file (in, out, type: queue) "
        "or --in and --out.",
    )
    hub.add_argument("file", nargs="?", help="hub file (YAML: in, out, type: queue)")
    hub.add_argument("--in", dest="in_", metavar="ENDPOINT", help="endpoint clients connect to")
    hub.add_argument("--out", metavar="ENDPOINT", help="endpoint workers connect to")
    hub.add_argument(
        "--heartbeat", type=float, default=None, help="heartbeat period in seconds (default 5)"
    )
    hub.set_defaults(handler=_hub)
    openapi = commands.add_parser(
        "openapi",
        help="print the OpenAPI document of the configured services",
        description="Describe every service of the config, as the gateway does, and print the "
        "OpenAPI 3.1 document: JSON, or YAML with --yaml. Exits 1 when a service could not be "
        "described (the document lists it as unavailable), 2 when the config cannot be used.",
    )
    add_config_option(openapi)
    openapi.add_argument("--yaml", action="store_true", help="print YAML instead of JSON")
    openapi.set_defaults(handler=_openapi)
    return parser


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway from a config file",
        description="Run the gateway (uvicorn) from a config file. SIGTERM lets requests in "
        "flight finish for gateway.shutdown_grace seconds, then exits. Access lines (JSON) "
        "go to stdout, other logs to stderr.",
    )
    add_config_option(serve)
    serve.add_argument("--host", help="address to listen on (default: gateway.host)")
    serve.add_argument(
        "--port", type=_port, help="port to listen on, 0 for any free one (default: gateway.port)"
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="level of the stderr logs (access lines are always written); default info",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="believe X-Forwarded-For/-Proto only from these comma-separated proxy addresses "
        "('*': any); default: the headers are ignored",
    )
    serve.set_defaults(handler=_serve)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c FILE``, as every command reading the gateway config spells it."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="the config file (default: $ZEROGATE_CONFIG, else zerogate.yaml here)",
    )


def _port(text: str) -> int:
    port = _integer(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text}")
    return port


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
