"""``zerogate rpc``: the zerorpc command line, on rpccore's gevent driver.

    zerogate rpc --server --bind tcp://127.0.0.1:1234 urllib.parse   # serve a module
    zerogate rpc tcp://127.0.0.1:1234                                 # list its methods
    zerogate rpc tcp://127.0.0.1:1234 quote "hello pycon"             # call a method
    zerogate rpc tcp://127.0.0.1:1234 quote_plus -?                   # signature and doc
    zerogate rpc --push tcp://127.0.0.1:5000 tick 1 '"a"'             # push a one-way event
    zerogate rpc --pub tcp://127.0.0.1:5000 tick 1                    # publish one
    zerogate rpc --server --pull --bind tcp://127.0.0.1:5000 mod      # receive them (--sub)
    zerogate rpc --server --curve-secret-key file:server.key --bind ... mod  # CurveZMQ
    zerogate rpc --curve-server-key file:server.pub tcp://127.0.0.1:1234 quote hi

Same flags and argument rules as zerorpc 0.6.3's tool (when --connect or --bind is given,
the first positional is the method), but options may come anywhere, parameters are JSON
when they are valid JSON, the client heartbeats actively (so a dead server is noticed)
and nothing crashes on modern Python. Exit codes: 0 success; 1 the remote method raised
(or -? found no such method); 2 a usage, connection, timeout or lost-remote error; 130
interrupted by Ctrl-C.

One-way events (``--push``/``--pub``) print nothing. A pushed event is delivered: we wait
(up to --timeout, else exit 2) until a puller has taken it from our queue, then
FLUSH_SECONDS more, because ZeroMQ cannot tell when a message has left its own pipe for
the wire and rpccore closes sockets with LINGER 0 (which drops what is still in the pipe).
A published event is best effort: PUB drops events while no subscriber is connected
and subscribed (the "slow joiner"), so we wait --settle seconds after linking before
publishing. ``--server --pull``/``--sub`` serve an object to pushed/published events,
printing nothing per event and the count when stopped (Ctrl-C or SIGTERM: exit 0).

CurveZMQ (keys from ``zerogate keys``): ``--server --curve-secret-key`` makes the server (or
the puller/subscriber) a CURVE server, ``--curve-authorized`` admits only the listed client
keys; a client (or a pusher/publisher) encrypts with ``--curve-server-key``, the server's
public key, and authenticates with ``--curve-secret-key`` (else a new pair each run). Keys
are Z85 text, ``file:PATH`` or ``env:NAME``; a secret key only ``file:`` or ``env:``, since
a command line is visible to every user of the machine. A failed handshake never reaches
the server: the call times out (exit 2), with the reason when the handshake was refused.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from time import monotonic
from typing import Any, Protocol

import gevent
import zmq

from rpccore import (
    CurveClientKeys,
    CurveKeyError,
    CurveServerKeys,
    LostRemote,
    RemoteError,
    RPCError,
    TimeoutExpired,
    load_key,
    load_keys,
    tracing,
)
from rpccore._curve import KEY_LENGTH
from rpccore._naming import ENV_VAR, NamingError, resolve
from rpccore.green import Client, Publisher, Puller, Pusher, Server, Stream, Subscriber

from . import rpc_format

PROG = "zerogate rpc"
EXIT_ERROR = 1  # the remote method raised, -? found no such method, stdout closed
EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130

# --pub: default seconds between linking and publishing, for subscribers to join.
SETTLE_SECONDS = 0.3
# --push/--pub: seconds between an event leaving our queue and closing the socket. ZeroMQ
# gives no "sent" notice, and our sockets close with LINGER 0; on loopback or a LAN an
# event reaches the wire within milliseconds of entering a connected pipe.
FLUSH_SECONDS = 0.2
_POLL = 0.01  # seconds between looks at a pusher's queue
SENDERS = ("pub", "push")
RECEIVERS = {"sub": "pub", "pull": "push"}  # receiver flag -> the sender flag it serves


class _Interrupted(Exception):
    """Thrown into the client's greenlet on SIGINT (a plain Exception, so gevent does
    not treat it as a system error and print a traceback)."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Call, list, inspect or serve ZeroRPC services (zerorpc's tool, on rpccore); "
        "push or publish one-way events, or serve an object to them.",
        epilog="PUB delivery is best effort: a publisher drops events while no subscriber is "
        "connected and subscribed (the slow joiner), hence --settle; --push waits until a "
        "puller takes the event. Exit codes: 0 success, 1 remote error, 2 usage, connection, "
        "timeout or lost remote, 130 interrupted.",
    )
    parser.set_defaults(server=False)
    add = parser.add_argument
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--client", action="store_const", const=False, dest="server", help="call (default)"
    )
    mode.add_argument(
        "--server",
        action="store_true",
        help="serve COMMAND: a module, module:attr or module.attr (classes are instantiated)",
    )
    add("--connect", action="append", default=[], metavar="ADDR", help="connect (repeatable)")
    add("--bind", action="append", default=[], metavar="ADDR", help="listen (repeatable)")
    add(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="call timeout; --push: how long to wait for a puller to take the event (default 30)",
    )
    add(
        "--heartbeat",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="period, as the server's (default 5)",
    )
    add("--name", help="--server: the service name (default: the object's name)")
    add(
        "--names",
        metavar="FILE",
        help=f"YAML naming file: service names to endpoints (default: ${ENV_VAR})",
    )
    add("--threaded", action="store_true", help="--server: run methods in threads")
    oneway = parser.add_mutually_exclusive_group()
    oneway.add_argument(
        "--push",
        action="store_const",
        const="push",
        dest="oneway",
        help="push the event COMMAND(PARAMS) instead of calling: exits once a puller has "
        "taken it (2 if none does within --timeout)",
    )
    oneway.add_argument(
        "--pub",
        action="store_const",
        const="pub",
        dest="oneway",
        help="publish the event COMMAND(PARAMS), best effort: subscribers not connected and "
        "subscribed by then miss it (see --settle)",
    )
    oneway.add_argument(
        "--pull",
        action="store_const",
        const="pull",
        dest="oneway",
        help="with --server: serve the object to pushed events (a puller), not calls",
    )
    oneway.add_argument(
        "--sub",
        action="store_const",
        const="sub",
        dest="oneway",
        help="with --server: serve the object to published events (a subscriber)",
    )
    add(
        "--settle",
        type=_seconds_or_zero,
        default=SETTLE_SECONDS,
        metavar="S",
        help=f"--pub: wait S seconds after connecting or binding, so subscribers can join, "
        f"before publishing (default {SETTLE_SECONDS:g})",
    )
    params = parser.add_mutually_exclusive_group()
    params.add_argument("--raw", action="store_true", help="send every parameter as a string")
    params.add_argument(
        "-j", "--json", action="store_true", help="parameters are JSON; print results as JSON"
    )
    add("-pj", "--print-json", action="store_true", help="print results as JSON")
    add("-?", "--inspect", action="store_true", help="signature and doc of COMMAND, or of all")
    add("--active-hb", action="store_true", help="ignored: heartbeats are always active")
    add(
        "--collector",
        metavar="ENDPOINT",
        help="ship trace records to `zerogate collector` at ENDPOINT (default: "
        "$ZEROGATE_COLLECTOR, if set)",
    )
    _add_curve_options(parser)
    add("-d", "--debug", action="store_true", help="debug logging and Python tracebacks")
    add(
        "address",
        nargs="?",
        help="endpoint or service name to connect to, unless --connect or --bind is given",
    )
    add(
        "command",
        nargs="?",
        help="the method to call (none: list them), the event to send, or what to serve",
    )
    add("params", nargs="*", help="the parameters: JSON when valid JSON, else strings")
    return parser


def _add_curve_options(parser: argparse.ArgumentParser) -> None:
    curve = parser.add_argument_group(
        "CurveZMQ",
        "Encrypt and authenticate with CurveZMQ (make keys with `zerogate keys`). KEY is Z85 "
        "text, file:PATH (a key or certificate file) or env:NAME; a secret key only file:PATH "
        "or env:NAME, never the key itself.",
    )
    curve.add_argument(
        "--curve-server-key",
        metavar="KEY",
        help="clients, --push, --pub: the server's public key; encrypts with CurveZMQ",
    )
    curve.add_argument(
        "--curve-secret-key",
        metavar="KEY",
        help="--server: the server's secret key, which turns CurveZMQ on; clients: their own "
        "secret key (default: a new key pair each run, enough unless the server lists "
        "authorized clients)",
    )
    curve.add_argument(
        "--curve-authorized",
        action="append",
        default=[],
        metavar="KEY",
        help="--server: admit only this client public key (repeatable; file:PATH may list "
        "one per line); default: any client that has the server's public key",
    )


KEY_OPTIONS = ("--curve-server-key", "--curve-secret-key", "--curve-authorized")
KEY_WORD_LENGTH = KEY_LENGTH // 2  # 20: longer than any option of ours


def attach_dashed_keys(argv: Sequence[str]) -> list[str]:
    """Write ``--curve-server-key KEY`` as ``--curve-server-key=KEY`` when KEY begins with ``-``.

    The Z85 alphabet includes ``-``, so one key in 85 begins with it, and argparse would take
    such a key for an option ("expected one argument"). A word of KEY_WORD_LENGTH characters or
    more after a key option is that option's value, a key or a mistyped one (which the key
    check then names); no option of ours is that long. An option may be shortened, as argparse
    allows (``--curve-serv``). Words after ``--`` are parameters.
    """
    words = list(argv)
    joined: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            return joined + words[index:]
        value = words[index + 1] if index + 1 < len(words) else ""
        if value.startswith("-") and len(value) >= KEY_WORD_LENGTH and _is_key_option(word):
            joined.append(f"{word}={value}")
            index += 2
        else:
            joined.append(word)
            index += 1
    return joined


def _is_key_option(word: str) -> bool:
    # Only the CURVE options begin with "--cu" (--client and --connect share "--c").
    return word.startswith("--cu") and sum(option.startswith(word) for option in KEY_OPTIONS) == 1


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(attach_dashed_keys(argv))
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    _check_curve_options(parser, args)
    if args.collector is not None:
        try:
            tracing.enable(args.collector)
        except (zmq.ZMQError, ValueError) as exc:
            return _fail(f'cannot ship trace records to "{args.collector}": {exc}')
    if args.oneway in RECEIVERS and not args.server:
        parser.error(f"--{args.oneway} serves an object to events: use it with --server")
    if args.oneway in SENDERS and args.server:
        receiver = next(flag for flag, sender in RECEIVERS.items() if sender == args.oneway)
        parser.error(f"--{args.oneway} sends an event; to receive them use --server --{receiver}")
    words = [w for w in (args.address, args.command) if w is not None] + args.params
    if not (args.connect or args.bind):  # else, like zerorpc, all positionals are the call
        if not words:
            parser.error("give the ADDRESS to connect to, or --connect/--bind")
        args.connect = [words.pop(0)]
    command = words.pop(0) if words else None
    if not _resolve_names(args):
        return EXIT_FAILURE
    try:
        args.curve = curve_keys(args)
    except CurveKeyError as exc:
        return _fail(str(exc))
    if args.server:
        if command is None:
            parser.error("--server needs the module or object to serve")
        return serve(args, command)
    if args.oneway in SENDERS:
        if command is None:
            parser.error(f"--{args.oneway} needs the event's method name")
        if args.inspect:
            parser.error(f"--{args.oneway}: one-way events cannot be inspected (-?)")
    mode = "json" if args.json else "raw" if args.raw else "auto"
    try:
        values = rpc_format.parse_params(words, mode=mode)
    except ValueError as exc:
        parser.error(str(exc))
    if args.oneway in SENDERS:
        assert command is not None
        return send_event(args, command, values)
    return run_client(args, command, values)


def _check_curve_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    secret = args.curve_secret_key
    if secret is not None and secret.partition(":")[0] not in ("file", "env"):
        # Not echoed: it may be the secret itself.
        parser.error(
            "--curve-secret-key takes file:PATH or env:NAME: a key on the command line is "
            "visible to every user of the machine"
        )
    if args.server:
        if args.curve_server_key is not None:
            parser.error(
                "--curve-server-key is the server's public key, for clients; a server "
                "takes --curve-secret-key"
            )
        if args.curve_authorized and secret is None:
            parser.error("--curve-authorized needs --curve-secret-key (the server's)")
    else:
        if args.curve_authorized:
            parser.error("--curve-authorized is for --server")
        if secret is not None and args.curve_server_key is None:
            parser.error("--curve-secret-key needs --curve-server-key (the server's public key)")


def curve_keys(args: argparse.Namespace) -> CurveServerKeys | CurveClientKeys | None:
    """The CurveZMQ keys the options ask for (None: no CURVE); CurveKeyError if unusable."""
    secret = args.curve_secret_key
    if args.server:
        if secret is None:
            return None
        authorized = None
        if args.curve_authorized:
            authorized = [
                key
                for source in args.curve_authorized
                for key in load_keys(source, what="--curve-authorized")
            ]
        return CurveServerKeys(
            secret_key=load_key(secret, kind="secret", what="--curve-secret-key"),
            authorized_clients=authorized,
        )
    if args.curve_server_key is None:
        return None
    return CurveClientKeys(
        server_key=load_key(args.curve_server_key, kind="public", what="--curve-server-key"),
        secret_key=None
        if secret is None
        else load_key(secret, kind="secret", what="--curve-secret-key"),
    )


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


class _Linkable(Protocol):
    def bind(self, endpoint: str) -> list[str]: ...
    def connect(self, endpoint: str) -> list[str]: ...


def _link(peer: _Linkable, args: argparse.Namespace) -> bool:
    """Bind and connect as asked, with zerorpc's progress lines on stderr."""
    for verb, endpoints in (("bind", args.bind), ("connect", args.connect)):
        for endpoint in endpoints:
            print(f'{verb}ing to "{endpoint}"', file=sys.stderr, flush=True)
            try:
                done = peer.bind(endpoint) if verb == "bind" else peer.connect(endpoint)
            except Exception as exc:
                _fail(f'cannot {verb} to "{endpoint}": {exc}')
                return False
            if done != [endpoint]:  # "tcp://host:*" picked a port
                print(f'bound to "{done[0]}"', file=sys.stderr, flush=True)
    return True


def _resolve_names(args: argparse.Namespace) -> bool:
    """Replace service names in --connect/--bind (and the address) by their endpoints."""
    for verb in ("bind", "connect"):
        endpoints: list[str] = []
        for target in getattr(args, verb):
            try:
                endpoints += resolve(target, args.names)
            except NamingError as exc:
                if args.debug:
                    traceback.print_exc()
                _fail(f'cannot {verb} to "{target}": {exc}')
                return False
        setattr(args, verb, endpoints)
    return True


# -- server ------------------------------------------------------------------------


def load_object(target: str) -> object:
    """``module``, ``module:attr.path`` or zerorpc's ``module.attr``, importable from the
    current directory. A class is instantiated (a function called) with no arguments."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = target.partition(":")
    if not attr:
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name != target or "." not in target:
                raise
            module_name, attr = target.rsplit(".", 1)
    obj: Any = importlib.import_module(module_name)
    for name in attr.split("."):
        obj = getattr(obj, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        obj = obj()
    return obj


def serve(args: argparse.Namespace, target: str) -> int:
    try:
        obj = load_object(target)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        return _fail(f'cannot load "{target}": {type(exc).__name__}: {exc}')
    server: Server | Puller | Subscriber
    curve = args.curve
    if args.oneway == "pull":
        server, role = Puller(obj, threaded=args.threaded, curve=curve), " (pulling events)"
    elif args.oneway == "sub":
        server = Subscriber(obj, threaded=args.threaded, curve=curve)
        role = " (subscribed to events)"
    else:
        server, role = (
            Server(
                obj, name=args.name, heartbeat=args.heartbeat, threaded=args.threaded, curve=curve
            ),
            "",
        )
    if curve is not None:
        role += " with CurveZMQ" + (
            "" if curve.authorized_clients is None else f", {_clients(curve)} authorized"
        )
    if not _link(server, args):
        server.stop()
        return EXIT_FAILURE
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f'serving "{target}"{role}', file=sys.stderr, flush=True)
    server.run()
    if not isinstance(server, Server):
        # Peers disconnecting is how one-way senders (this command's too) end: no problem.
        problems = ", ".join(
            f"{count} {kind}" for kind, count in server.problems.items() if kind != "disconnected"
        )
        print(
            f"stopped: {server.handled} events handled" + (f" ({problems})" if problems else ""),
            file=sys.stderr,
            flush=True,
        )
    return 0


# -- one-way events ----------------------------------------------------------------


def send_event(args: argparse.Namespace, method: str, values: list[Any]) -> int:
    """Push or publish ``method(*values)``; see the module docstring for the waits."""
    sender = Pusher(curve=args.curve) if args.oneway == "push" else Publisher(curve=args.curve)
    try:
        # A Pusher queues events until a puller has really connected (ZMQ_IMMEDIATE), so
        # an empty ``queued`` means the event has left for one.
        if not _link(sender, args):
            return EXIT_FAILURE
        job = gevent.Greenlet(_send_job, sender, args, method, values)
        gevent.signal_handler(signal.SIGINT, job.kill, _Interrupted, block=False)
        job.start()
        code: int = job.get()
        return code
    finally:
        sender.close()


def _send_job(
    sender: Pusher | Publisher, args: argparse.Namespace, method: str, values: list[Any]
) -> int:
    where = ", ".join(f'"{e}"' for e in [*args.connect, *args.bind])
    try:
        if isinstance(sender, Publisher):
            gevent.sleep(args.settle)  # the slow joiner: let subscribers connect first
        sender.emit(method, *values)
        deadline = monotonic() + args.timeout
        while sender.queued:  # only a Pusher queues: a Publisher drops instead
            if monotonic() >= deadline:
                return _fail(
                    f"timed out: no puller took the event from {where} within {args.timeout:g} s"
                )
            gevent.sleep(_POLL)
        gevent.sleep(FLUSH_SECONDS)  # let ZeroMQ write it out before the LINGER 0 close
        return 0
    except RPCError as exc:  # e.g. an integer msgpack cannot carry
        if args.debug:
            traceback.print_exc()
        return _fail(f"{type(exc).__name__}: {exc}")
    except _Interrupted:
        return EXIT_INTERRUPTED


# -- client ------------------------------------------------------------------------


def run_client(args: argparse.Namespace, command: str | None, values: list[Any]) -> int:
    client = Client(None, timeout=args.timeout, heartbeat=args.heartbeat, curve=args.curve)
    try:
        if not _link(client, args):
            return EXIT_FAILURE
        # The work runs in its own greenlet so Ctrl-C can stop it wherever it waits.
        job = gevent.Greenlet(_client_job, client, args, command, values)
        gevent.signal_handler(signal.SIGINT, job.kill, _Interrupted, block=False)
        job.start()
        code: int = job.get()
        return code
    finally:
        client.close()


def _client_job(
    client: Client, args: argparse.Namespace, command: str | None, values: list[Any]
) -> int:
    where = ", ".join(f'"{e}"' for e in [*args.connect, *args.bind])
    try:
        if command is None or args.inspect:
            return _show(client, args, command)
        return _call(client, args, command, values)
    except RemoteError as exc:
        print((exc.traceback or str(exc)).rstrip("\n"), file=sys.stderr, flush=True)
        return EXIT_ERROR
    except TimeoutExpired:
        return _fail(
            f"timed out: no answer from {where} within {args.timeout:g} s{_curve_why(client)}"
        )
    except LostRemote:
        return _fail(
            f"lost the remote: no heartbeat from {where} for {2 * args.heartbeat:g} s "
            + (_curve_why(client).strip() or "(is the server running?)")
        )
    except RPCError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    except _Interrupted:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout was closed (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _curve_why(client: Client) -> str:
    failure = client.curve_failure
    return "" if failure is None else f" (the CURVE handshake failed: {failure})"


def _clients(keys: CurveServerKeys) -> str:
    count = len(keys.authorized_clients or ())
    return f"{count} client key" + ("" if count == 1 else "s")


def _call(client: Client, args: argparse.Namespace, method: str, values: list[Any]) -> int:
    as_json = args.json or args.print_json
    result = client.call(method, *values)
    if not isinstance(result, Stream):
        print(rpc_format.format_result(result, as_json=as_json), flush=True)
        return 0
    with result:  # closes the stream on Ctrl-C or an error
        for item in result:
            print(rpc_format.format_result(item, as_json=as_json, one_line=True), flush=True)
    return 0


def _show(client: Client, args: argparse.Namespace, method: str | None) -> int:
    """List the methods (no method), or inspect one or all (-?)."""
    if args.json or args.print_json:
        try:
            answer: Any = client.call("_zerorpc_inspect")
        except RemoteError:  # zerorpc 0.6.3 on Python >= 3.11: describe() falls back
            answer = client.describe()
        if method is not None:
            methods = answer.get("methods") if isinstance(answer, dict) else None
            if not isinstance(methods, dict) or method not in methods:
                return _no_doc(rpc_format.service_name(answer), method)
            answer = {**answer, "methods": {method: methods[method]}}
        print(rpc_format.to_json(answer, indent=2), flush=True)
        return 0
    description = client.describe()
    if method is None:
        shown = rpc_format.all_details if args.inspect else rpc_format.listing
        print(shown(description), end="", flush=True)
        return 0
    detail = rpc_format.method_detail(description, method)
    if detail is None:
        return _no_doc(rpc_format.service_name(description), method)
    print(detail, end="", flush=True)
    return 0


def _no_doc(service: str, method: str) -> int:
    print(f'[{service}]\nNo documentation for "{method}".', flush=True)
    return EXIT_ERROR
