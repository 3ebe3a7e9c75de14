"""The pooled async client of one service: one ``rpccore.aio.Client`` per backend endpoint.

Like httpcore's connection pool, the decision of which endpoint serves a call is a pure
function (``choose``) over plain state (``EndpointState``); ``ServicePool`` only does the I/O
around it. One DEALER socket per endpoint, never one connected to several servers: ZeroMQ
would deal a channel's heartbeats and stream credit round-robin across them.

    pool = ServicePool(config.services["calc"])
    await pool.open()  # the app's lifespan
    await pool.call("add", [1, 2])  # a value, or a PooledStream for a stream method
    await pool.close()  # idempotent

Health: a call that fails with ``LostRemote`` takes its endpoint down. Every endpoint has a
background probe: every heartbeat period, a down endpoint, or an up one with no call in
flight, is sent ``_zerorpc_ping`` (timeout: two heartbeat periods). An answer puts it up;
``TimeoutExpired`` or ``LostRemote`` puts it down. Endpoints start up (optimistically) and are
probed at once. A call is never retried once sent: it may have reached a backend.

With ``curve`` in the service's config, every client speaks CurveZMQ; an endpoint whose
handshake fails (a wrong server key, the gateway's key not authorized) never answers a probe,
so it stays down, and its ``last_error`` says why the handshake failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rpccore import LostRemote, RemoteError, RPCError, TimeoutExpired
from rpccore.aio import AsyncStream, Client

from .config import ServiceConfig

PING_METHOD: Final = "_zerorpc_ping"
PING_TIMEOUT_HEARTBEATS: Final = 2.0  # a probe waits this many heartbeat periods for a pong
TASK_PREFIX: Final = "zerogate.pool"  # background probe tasks are named "zerogate.pool SVC EP"


class NoBackendAvailable(RPCError):
    """No endpoint of the service is up (or the pool is not open); nothing was sent.

    ``retry_after`` is a hint in seconds (the probe period) for a ``Retry-After`` header.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True, eq=False)
class EndpointState:
    """What the pool knows about one endpoint; ``choose`` decides on these alone."""

    endpoint: str
    up: bool = True
    in_flight: int = 0  # user calls sent and not finished (a stream: until it ends or closes)
    last_error: str | None = None  # the last failure seen, kept after recovery for ops


def choose(endpoints: Sequence[EndpointState]) -> EndpointState | None:
    """The up endpoint with the fewest calls in flight, the first in ``endpoints`` order on
    ties; None when none is up. Pure: no I/O, no mutation."""
    best: EndpointState | None = None
    for state in endpoints:
        if state.up and (best is None or state.in_flight < best.in_flight):
            best = state
    return best


def effective_timeout(service_timeout: float, requested: float | None) -> float:
    """The call's timeout: ``requested`` may lower the service's, never raise it."""
    return service_timeout if requested is None else min(requested, service_timeout)


class _Backend:
    """One endpoint: its client, its state, its probe task."""

    __slots__ = ("client", "downs", "state", "task")

    def __init__(self, endpoint: str, client: Client) -> None:
        self.state = EndpointState(endpoint)
        self.client = client
        self.task: asyncio.Task[None] | None = None
        self.downs = 0  # times marked down; a probe started before a mark-down cannot undo it

    def mark_down(self, error: BaseException) -> None:
        self.state.up = False
        self.state.last_error = f"{type(error).__name__}: {error}"
        self.downs += 1


class PooledStream(AsyncIterator[Any]):
    """A stream reply whose call stays counted in flight until it ends, fails or is closed."""

    def __init__(self, pool: ServicePool, backend: _Backend, stream: AsyncStream) -> None:
        self._pool, self._backend, self._stream = pool, backend, stream
        self._counted = True

    def __repr__(self) -> str:
        return f"<PooledStream {self._backend.state.endpoint} {self._stream!r}>"

    def __aiter__(self) -> PooledStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._release()
            raise
        except BaseException as exc:
            self._pool._failed(self._backend, exc)
            self._release()
            raise

    def close(self) -> None:
        self._stream.close()
        self._release()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> PooledStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self._backend.state.in_flight -= 1


class ServicePool:
    """The endpoints of one service, their health and their calls in flight."""

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self._endpoints = tuple(dict.fromkeys(service.endpoints))  # one client per endpoint
        self._backends: dict[str, _Backend] = {}
        self._turn = 0  # where the search for an endpoint starts: round-robin among equals
        self._opened = self._closed = False
        self._single: _Backend | None = None  # the backend, when there is only one

    def __repr__(self) -> str:
        status = "closed" if self._closed else "open" if self._opened else "new"
        parts = ", ".join(
            f"{s.endpoint} {'up' if s.up else 'down'} in_flight={s.in_flight}"
            for s in self._states()
        )
        return f"<ServicePool {self.service.name} {status} [{parts}]>"

    @property
    def ready(self) -> bool:
        """At least one endpoint is up (always False unless open)."""
        return self._opened and not self._closed and any(s.up for s in self._states())

    def snapshot(self) -> dict[str, Any]:
        """The pool's state as plain data, for /readyz and /metrics."""
        return {
            "service": self.service.name,
            "endpoints": [
                {
                    "endpoint": s.endpoint,
                    "up": s.up,
                    "in_flight": s.in_flight,
                    "last_error": s.last_error,
                }
                for s in self._states()
            ],
        }

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the clients and start the probes, on the running loop."""
        if self._closed:
            raise RuntimeError(f"the pool of {self.service.name} is closed")
        if self._opened:
            return
        curve = self.service.curve
        # Read here, not at config load: the secret is never kept in the config. A key that
        # cannot be read fails the open (the app's start) with a CurveKeyError saying why.
        keys = None if curve is None else curve.client_keys(f"services.{self.service.name}.curve")
        self._opened = True
        for endpoint in self._endpoints:
            client = Client(
                endpoint, timeout=self.service.timeout, heartbeat=self.service.heartbeat, curve=keys
            )
            client.remote_name = self.service.name  # trace records name the service
            backend = self._backends[endpoint] = _Backend(endpoint, client)
            self._single = backend if len(self._endpoints) == 1 else None
            backend.task = asyncio.create_task(
                self._probe_loop(backend), name=f"{TASK_PREFIX} {self.service.name} {endpoint}"
            )

    async def close(self) -> None:
        """Stop the probes and close every client (calls still waiting fail). Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [b.task for b in self._backends.values() if b.task is not None]
        for task in tasks:
            task.cancel()
        for backend in self._backends.values():
            backend.client.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ServicePool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls --------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        args: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call ``method`` on the up endpoint with the fewest calls in flight.

        Returns the value, or a ``PooledStream`` for a stream reply. ``timeout`` may only lower
        the service's; ``metadata`` goes in the call's header (the caller's API token). Raises
        ``NoBackendAvailable`` (nothing sent) or whatever the call raised (``RemoteError``,
        ``TimeoutExpired``, ``LostRemote``...): never retried.
        """
        backend = self._pick()
        limit = effective_timeout(self.service.timeout, timeout)
        state = backend.state
        state.in_flight += 1
        try:
            result = await backend.client.call(method, *args, timeout=limit, metadata=metadata)
        except BaseException as exc:
            state.in_flight -= 1
            self._failed(backend, exc)
            raise
        if isinstance(result, AsyncStream):
            return PooledStream(self, backend, result)
        state.in_flight -= 1
        return result

    async def describe(self, timeout: float) -> dict[str, Any]:
        """Describe the service (``Client.describe``) through the best up endpoint, within
        ``timeout`` seconds. Raises like ``call`` does, ``TimeoutExpired`` included."""
        backend = self._pick()
        state = backend.state
        state.in_flight += 1
        try:
            async with asyncio.timeout(timeout):
                return await backend.client.describe()
        except TimeoutError:
            raise TimeoutExpired(f"describing {self.service.name} took over {timeout} s") from None
        except BaseException as exc:
            self._failed(backend, exc)
            raise
        finally:
            state.in_flight -= 1

    def _pick(self) -> _Backend:
        if not self._opened or self._closed:
            raise NoBackendAvailable(
                f"the pool of {self.service.name} is not open", self.service.heartbeat
            )
        if self._single is not None:  # one endpoint (the usual case): nothing to choose
            if self._single.state.up:
                return self._single
            raise NoBackendAvailable(
                f"no endpoint of {self.service.name} is up", self.service.heartbeat
            )
        states = self._states()
        turn, self._turn = self._turn, self._turn + 1
        start = turn % len(states) if states else 0
        chosen = choose(states[start:] + states[:start])
        if chosen is None:
            raise NoBackendAvailable(
                f"no endpoint of {self.service.name} is up", self.service.heartbeat
            )
        return self._backends[chosen.endpoint]

    def _failed(self, backend: _Backend, exc: BaseException) -> None:
        if isinstance(exc, LostRemote):
            backend.mark_down(exc)

    def _states(self) -> list[EndpointState]:
        return [b.state for b in self._backends.values()]

    # -- health -------------------------------------------------------------------------

    async def _probe_loop(self, backend: _Backend) -> None:
        period = self.service.heartbeat
        while True:
            state = backend.state
            if not state.up or state.in_flight == 0:
                await self._probe(backend)
            await asyncio.sleep(period)

    async def _probe(self, backend: _Backend) -> None:
        downs = backend.downs
        try:
            await backend.client.call(
                PING_METHOD, timeout=PING_TIMEOUT_HEARTBEATS * self.service.heartbeat
            )
        except (TimeoutExpired, LostRemote) as exc:
            backend.mark_down(exc)
            return
        except RemoteError:
            pass  # it answered, so it is alive (a server without the ping method)
        except RPCError:
            return  # the client was closed: the pool is closing
        if backend.downs == downs:
            backend.state.up = True
