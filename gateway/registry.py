"""What the gateway knows about its services: their pools and their descriptions.

Each configured service has a ``ServicePool`` and, once a backend has answered, a
description (``rpccore._describe``: ``_zerorpc_inspect``, or the ``_zerorpc_list`` +
``_zerorpc_help`` fallback of a zerorpc 0.6.3 backend). Descriptions are fetched at start,
every ``refresh`` seconds, on demand when a call arrives for a service not described yet,
and again when a backend answers ``NameError`` for a method it listed (a redeploy).

Only exposed methods are ever visible: a name that starts with ``_`` never is, and the
service's include/exclude globs apply everywhere (catalog, calls, OpenAPI). A hidden
method is indistinguishable from a missing one (404), so the globs leak nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from rpccore import RPCError

from .config import Config, ServiceConfig
from .pool import NoBackendAvailable, ServicePool
from .problems import Problem, not_found, problem_from_rpc_error, unavailable

log = logging.getLogger("zerogate.registry")

DESCRIBE_TIMEOUT: Final = 5.0  # seconds a description may take (several calls on 0.6.3)
REDESCRIBE_AFTER_NAMEERROR: Final = 1.0  # at most one NameError-triggered refresh per second


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One exposed method, as the router and the argument mapper need it."""

    service: str
    name: str
    entry: Mapping[str, Any]  # the description entry: args, doc, stream, varargs, returns
    safe: bool  # also callable with GET

    @property
    def streams(self) -> bool | None:
        value = self.entry.get("stream")
        return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Description:
    """A service's exposed methods at one point in time."""

    name: Any  # what the backend calls itself (``_zerorpc_name``)
    doc: str | None
    introspection: str  # "inspect" or "fallback"
    methods: Mapping[str, MethodInfo]


def exposed_description(service: ServiceConfig, described: Mapping[str, Any]) -> Description:
    """Keep only what the config exposes of a ``describe()`` answer."""
    methods: dict[str, MethodInfo] = {}
    raw_methods = described.get("methods")
    for name, entry in (raw_methods if isinstance(raw_methods, Mapping) else {}).items():
        if isinstance(name, str) and not name.startswith("_") and service.methods.exposes(name):
            methods[name] = MethodInfo(service.name, name, entry, service.is_safe(name))
    doc = described.get("doc")
    return Description(
        described.get("name"),
        doc if isinstance(doc, str) else None,
        str(described.get("introspection", "inspect")),
        methods,
    )


def public_args(entry: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The caller-visible arguments of a method (never the bound ``self``)."""
    args = entry.get("args")
    if not isinstance(args, list):
        return None
    visible: list[dict[str, Any]] = []
    for index, arg in enumerate(args):
        if not isinstance(arg, Mapping):
            continue
        kind = arg.get("kind")
        if kind == "self" or (kind is None and index == 0 and arg.get("name") == "self"):
            continue
        visible.append({k: v for k, v in arg.items() if k != "kind"})
    return visible


class ServiceEntry:
    """One configured service: its pool, its current description and how to refresh it."""

    def __init__(self, service: ServiceConfig, changed: Callable[[], None] | None = None) -> None:
        self.config = service
        self._changed = changed  # called after the description changes, however it was fetched
        self.pool = ServicePool(service)
        self.description: Description | None = None
        self.described_at: float | None = None  # time.monotonic() of the last description
        self.last_error: str | None = None  # why the last description failed
        self._describing: asyncio.Task[Description | None] | None = None
        self._last_nameerror_refresh = -REDESCRIBE_AFTER_NAMEERROR

    def __repr__(self) -> str:
        methods = "undescribed" if self.description is None else len(self.description.methods)
        return f"<ServiceEntry {self.config.name} methods={methods} {self.pool!r}>"

    @property
    def name(self) -> str:
        return self.config.name

    async def describe(self) -> Description | None:
        """Describe now (joining a description already under way); None when it failed."""
        return await asyncio.shield(self._start_describing())

    def _start_describing(self) -> asyncio.Task[Description | None]:
        """The description under way, started if there is none."""
        if self._describing is None or self._describing.done():
            self._describing = asyncio.create_task(
                self._describe(), name=f"zerogate.describe {self.name}"
            )
        return self._describing

    async def _describe(self) -> Description | None:
        timeout = min(DESCRIBE_TIMEOUT, self.config.timeout)
        try:
            described = await self.pool.describe(timeout)
        except (RPCError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot describe service %s: %s", self.name, self.last_error)
            return None
        description = exposed_description(self.config, described)
        changed = self.description != description
        self.description, self.described_at, self.last_error = description, time.monotonic(), None
        if changed:
            log.info(
                "service %s: %d exposed methods (%s)",
                self.name,
                len(description.methods),
                description.introspection,
            )
            if self._changed is not None:
                self._changed()
        return description

    async def method(self, name: str) -> MethodInfo:
        """The exposed method ``name``; a 404 ``Problem`` when there is no such method, a
        503 when the service has never been described and cannot be now."""
        description = self.description
        if description is None:
            description = await self.describe()
            if description is None:
                raise self.unavailable_problem()
        info = description.methods.get(name)
        if info is None:
            raise not_found(f"{self.name} has no method {name}", self.name, name)
        return info

    def unavailable_problem(self) -> Problem:
        detail = f"the {self.name} service cannot be reached"
        if self.last_error:
            detail += f" ({self.last_error})"
        return unavailable(
            detail, self.config.heartbeat, rpc={"service": self.name, "method": None}
        )

    def method_vanished(self, name: str) -> None:
        """A backend answered NameError for a method we listed: describe again soon (at
        most once per REDESCRIBE_AFTER_NAMEERROR, so a flood of calls cannot cause a
        flood of descriptions)."""
        now = time.monotonic()
        if now - self._last_nameerror_refresh < REDESCRIBE_AFTER_NAMEERROR:
            return
        self._last_nameerror_refresh = now
        log.info("service %s no longer has %s: describing it again", self.name, name)
        self._start_describing()

    def catalog(self) -> dict[str, Any]:
        """This service's entry of ``GET /rpc`` (DESIGN.md, "Catalog")."""
        description = self.description
        if description is None:
            return {"doc": None, "methods": {}, "available": False}
        return {
            "doc": description.doc,
            "methods": {
                name: {
                    "args": public_args(info.entry),
                    "doc": info.entry.get("doc"),
                    "stream": info.streams,
                    **({"safe": True} if info.safe else {}),
                }
                for name, info in description.methods.items()
            },
        }


class Registry:
    """Every configured service, opened and closed together by the app's lifespan."""

    def __init__(self, config: Config) -> None:
        self.services: dict[str, ServiceEntry] = {
            name: ServiceEntry(service, self._notify) for name, service in config.services.items()
        }
        self._refreshers: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Registry {list(self.services.values())!r}>"

    def get(self, name: str) -> ServiceEntry:
        entry = self.services.get(name)
        if entry is None:
            raise not_found(f"there is no service {name}")
        return entry

    async def method(self, service: str, method: str) -> MethodInfo:
        return await self.get(service).method(method)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after any description changes (the OpenAPI cache)."""
        self._listeners.append(listener)

    async def open(self) -> None:
        """Open every pool, describe every service (failures are logged and retried) and
        start the periodic refresh."""
        for entry in self.services.values():
            await entry.pool.open()
        await asyncio.gather(*(entry.describe() for entry in self.services.values()))
        self._refreshers = [
            asyncio.create_task(self._refresh_loop(entry), name=f"zerogate.refresh {name}")
            for name, entry in self.services.items()
        ]

    async def close(self) -> None:
        for task in self._refreshers:
            task.cancel()
        await asyncio.gather(*self._refreshers, return_exceptions=True)
        for entry in self.services.values():
            if entry._describing is not None:
                entry._describing.cancel()
            await entry.pool.close()

    @property
    def ready(self) -> bool:
        return all(entry.pool.ready for entry in self.services.values())

    def catalog(self) -> dict[str, Any]:
        return {"services": {name: entry.catalog() for name, entry in self.services.items()}}

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    async def _refresh_loop(self, entry: ServiceEntry) -> None:
        while True:
            await asyncio.sleep(entry.config.refresh)
            await entry.describe()


def call_problem(
    exc: RPCError, info: MethodInfo, entry: ServiceEntry, *, expose_tracebacks: bool
) -> Problem:
    """The problem for a failed call; a NameError for a listed method triggers a refresh."""
    if isinstance(exc, NoBackendAvailable):
        return unavailable(
            str(exc), exc.retry_after, rpc={"service": info.service, "method": info.name}
        )
    problem = problem_from_rpc_error(
        exc,
        info.service,
        info.name,
        entry.config.errors,
        expose_tracebacks=expose_tracebacks,
    )
    if problem.status == 404 and problem.code == "unimplemented":
        entry.method_vanished(info.name)
    return problem
