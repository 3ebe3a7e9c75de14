"""``zerogate serve``: the gateway app under uvicorn, from a config file.

    zerogate serve [-c FILE] [--host H] [--port P] [--workers N]

The config comes from ``-c``, else ``$ZEROGATE_CONFIG``, else ``zerogate.yaml`` in the working
directory; a missing or wrong file prints every problem and exits 2 before anything starts.
We bind the listening socket ourselves, so a port in use is one clear line (exit 2) rather
than a uvicorn log record, and so that every worker shares it.

With ``--workers N > 1`` uvicorn starts N processes, each importing the app on its own: the
factory ``app_from_environment`` reads the file ``$ZEROGATE_CONFIG`` names, which ``serve``
sets to the absolute path of the file it checked (so ``uvicorn --factory
gateway.serve:app_from_environment`` works the same way).

Logging: the app writes one JSON access line per request to stdout, one per line and nothing
else around them, ready for a log shipper (``access_log.StreamAccessLog``: batched writes, not
a LogRecord per request).
Everything else (uvicorn's messages, the gateway's warnings) goes to stderr, readable.

SIGTERM (or Ctrl-C) stops accepting connections, lets requests in flight finish for up to
``gateway.shutdown_grace`` seconds, cancels what is left, closes the backend pools, exits 0.
"""

from __future__ import annotations

import logging
import logging.config
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from .access_log import StreamAccessLog
from .app import create_app
from .config import ENV_VAR, Config, ConfigError, default_config_path, load_config
from .http_protocol import uvicorn_http

APP_FACTORY: Final = "gateway.serve:app_from_environment"
ACCESS_LOGGER: Final = "zerogate.access"
BACKLOG: Final = 2048  # uvicorn's default
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2  # a usage, config or bind problem: nothing was started

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What the command line asks for; None means "as the config says"."""

    config_path: Path | None = None
    host: str | None = None
    port: int | None = None
    workers: int = 1
    log_level: str = "info"
    forwarded_allow_ips: str | None = None  # None: X-Forwarded-* headers are ignored


def app_from_environment() -> Starlette:
    """The app of one worker process, from the config file ``$ZEROGATE_CONFIG`` names (else
    ``zerogate.yaml``): uvicorn calls it in each worker (``factory=True``)."""
    config = load_config(default_config_path())
    return create_app(config, access_log=StreamAccessLog(sys.stdout), settle_heap=True)


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn (its ``log_config``, so workers get it too):
    access lines bare on stdout, everything else readable on stderr."""
    readable = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {"format": "%(message)s"},  # already a JSON document
            "default": {"format": readable},
        },
        "handlers": {
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            # Access lines are the gateway's record of traffic: kept whatever --log-level says.
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            # The app logs each request itself, with more to say (service, method, trace id).
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level.upper()},
    }


def uvicorn_config(
    app: Starlette | str,
    *,
    host: str,
    port: int,
    shutdown_grace: float,
    workers: int = 1,
    log_level: str = "info",
    forwarded_allow_ips: str | None = None,
) -> uvicorn.Config:
    """The uvicorn settings of ``zerogate serve`` (and of ``zerogate demo``)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        factory=isinstance(app, str),
        workers=workers,
        loop="auto",  # uvloop when installed
        **uvicorn_http(),  # httptools when installed, with a bound on request heads
        lifespan="on",  # the lifespan opens the backend pools: failing there must stop us
        access_log=False,
        server_header=False,  # no "server: uvicorn": nothing to tell a scanner, one header less
        log_config=logging_config(log_level),
        log_level=log_level,
        # Behind a proxy, X-Forwarded-For and -Proto are only believed from the addresses
        # given; by default from nobody, so a client cannot forge its address in the logs.
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        # uvicorn annotates an int, but only hands the value to asyncio.wait_for.
        timeout_graceful_shutdown=shutdown_grace,  # type: ignore[arg-type]
    )


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: any free port); raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: restarting must not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening at once: a client that comes while the app starts waits in the backlog
        # rather than being refused. uvicorn listens again with its own backlog.
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)  # handed to worker processes
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why ``host:port`` cannot be listened on."""
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {reason.lower()}"


class StopSignals:
    """Until uvicorn takes over SIGINT and SIGTERM, they only set ``requested``.

    uvicorn restores the previous handlers when it has shut down and then raises the signal
    that stopped it again, so an embedding program can react; here the shutdown is done, and
    exiting 0 is the reaction, not a traceback or a death by signal.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()

    def __repr__(self) -> str:
        return f"<StopSignals requested={self.requested.is_set()}>"

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested.set()


def read_config(path: Path | None) -> Config | None:
    """The checked config, or None after printing every problem on stderr."""
    try:
        return load_config(path if path is not None else default_config_path())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def serve(options: ServeOptions) -> int:
    """Run the gateway until SIGTERM or SIGINT; the exit status."""
    config = read_config(options.config_path)
    if config is None:
        return EXIT_USAGE
    # Configured now for create_app's messages; uvicorn configures the same again.
    logging.config.dictConfig(logging_config(options.log_level))
    host = options.host if options.host is not None else config.gateway.host
    port = options.port if options.port is not None else config.gateway.port
    stop = StopSignals()
    stop.install()
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"zerogate serve: {bind_error(host, port, exc)}", file=sys.stderr)
        return EXIT_USAGE
    with sock:
        try:
            app = _app(config, options.workers)
        except ConfigError as exc:  # e.g. auth on and the secret missing
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EXIT_USAGE
        settings = uvicorn_config(
            app,
            host=host,
            port=sock.getsockname()[1],
            shutdown_grace=config.gateway.shutdown_grace,
            workers=options.workers,
            log_level=options.log_level,
            forwarded_allow_ips=options.forwarded_allow_ips,
        )
        _log_start(settings, config)
        if stop.requested.is_set():
            return EXIT_OK
        if options.workers > 1:
            return _run_workers(settings, sock)
        return _run_one(settings, sock)


def _app(config: Config, workers: int) -> Starlette | str:
    if workers == 1:
        return create_app(config, access_log=StreamAccessLog(sys.stdout), settle_heap=True)
    # Each worker process builds its own app from the file, found through the environment.
    assert config.source is not None  # it was read from a file
    os.environ[ENV_VAR] = str(config.source.absolute())
    return APP_FACTORY


def _log_start(settings: uvicorn.Config, config: Config) -> None:
    where = f"{settings.host}:{settings.port}"
    if ":" in settings.host:
        where = f"[{settings.host}]:{settings.port}"
    workers = f", {settings.workers} workers" if settings.workers > 1 else ""
    logger.info("zerogate serving on http://%s (config %s%s)", where, config.source, workers)


def _run_one(settings: uvicorn.Config, sock: socket.socket) -> int:
    server = uvicorn.Server(settings)
    server.run(sockets=[sock])
    return EXIT_OK if server.started else EXIT_FAILED


def _run_workers(settings: uvicorn.Config, sock: socket.socket) -> int:
    supervisor = Multiprocess(settings, sockets=[sock])
    supervisor.run()
    # uvicorn stops every worker when one of them cannot start (a broken app or config).
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return EXIT_FAILED if failed else EXIT_OK
