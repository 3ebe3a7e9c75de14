"""The ``zerogate`` command line.

Commands so far: ``zerogate demo`` (an rpccore demo server on loopback that prints how to
call it), ``zerogate rpc`` (the zerorpc command line, ``rpc_command``) and ``zerogate hub``
(the load-balancing hub, ``hub``). The gateway, token and other commands of DESIGN.md arrive
with their issues.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 4242


def _demo(args: argparse.Namespace) -> int:
    import signal

    import gevent

    from rpccore.green import Server

    from .demo import Calc

    endpoint = f"tcp://{args.host}:{args.port}"
    # threaded: the demo's slow() really blocks, and heartbeats must keep flowing meanwhile.
    server = Server(Calc(), name="calc", threaded=True)
    try:
        server.bind(endpoint)
    except Exception as exc:
        print(f"zerogate demo: cannot bind {endpoint}: {exc}", file=sys.stderr)
        return 2
    gevent.signal_handler(signal.SIGINT, server.stop)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    python = sys.executable
    print(
        f"zerogate demo: serving the 'calc' service (rpccore, gevent driver) on {endpoint}\n"
        "\n"
        "Call it from Python on gevent:\n"
        f'  {python} -c "from rpccore.green import Client; '
        f"print(Client('{endpoint}').add(1, 2))\"\n"
        "Or on asyncio:\n"
        f'  {python} -c "import asyncio; from rpccore.aio import Client; '
        f"print(asyncio.run(Client('{endpoint}').call('greet', 'pycon')))\"\n"
        "A stream:\n"
        f'  {python} -c "from rpccore.green import Client; '
        f"print(list(Client('{endpoint}').count(5)))\"\n"
        "\n"
        "Methods: add, greet, midpoint, count (stream), divide (raises on 0), slow.\n"
        "Ctrl-C stops.",
        flush=True,
    )
    server.run()
    print("zerogate demo: stopped", file=sys.stderr)
    return 0


def _rpc(args: argparse.Namespace) -> int:
    from .rpc_command import main as rpc_main

    return rpc_main(args.rpc_args)


def _hub(args: argparse.Namespace) -> int:
    from .hub import run_command

    return run_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zerogate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="serve the demo RPC service on loopback")
    demo.add_argument("--host", default=DEMO_HOST, help=f"address to bind (default {DEMO_HOST})")
    demo.add_argument("--port", type=int, default=DEMO_PORT, help=f"port (default {DEMO_PORT})")
    demo.set_defaults(handler=_demo)
    # gateway.rpc_command parses these itself (options anywhere, like zerorpc's tool); here
    # an unused prefix char only collects them, so `zerogate --help` never imports gevent.
    rpc = commands.add_parser(
        "rpc",
        help="the zerorpc command line: serve, list, call, inspect",
        add_help=False,
        prefix_chars="\0",
    )
    rpc.add_argument("rpc_args", nargs=argparse.REMAINDER)
    rpc.set_defaults(handler=_rpc)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
