"""Tracing: one record per call and side, shipped to ``zerogate collector``.

    import rpccore.tracing
    rpccore.tracing.enable("tcp://127.0.0.1:5570")   # or: export ZEROGATE_COLLECTOR=...
    rpccore.tracing.on_error(lambda record, error: ...)

``$ZEROGATE_COLLECTOR`` turns tracing on in any rpccore process, at its first Server or
Client (``$ZEROGATE_PROCESS_NAME`` names the process in records); ``zerogate rpc
--collector ENDPOINT`` does it for the command line. Records are logged at INFO on the
``rpccore.trace`` logger (``record.zerogate_trace`` is the dict; see ``rpccore._tracing``
for its keys), so any logging handler can take them too. Calls made in threads or
greenlets a handler starts stay in its trace through ``rpccore.traced(fn)`` and
``rpccore.green.spawn_traced(fn, ...)``; asyncio tasks and ``asyncio.to_thread`` carry it
by themselves.
"""

from ._trace import are_trace_ids
from ._tracing import (
    ABANDONED,
    BATCH_VERSION,
    ENV_COLLECTOR,
    ENV_PROCESS_NAME,
    ERROR,
    LOGGER_NAME,
    LOST,
    MAX_RECORD_BYTES,
    OK,
    ROW_FIELDS,
    STREAM,
    TIMEOUT,
    CollectorHandler,
    collector_handler,
    disable,
    enable,
    is_enabled,
    on_error,
    traced,
    untraced,
    use_opentelemetry,
)

__all__ = [
    "ABANDONED",
    "BATCH_VERSION",
    "ENV_COLLECTOR",
    "ENV_PROCESS_NAME",
    "ERROR",
    "LOGGER_NAME",
    "LOST",
    "MAX_RECORD_BYTES",
    "OK",
    "ROW_FIELDS",
    "STREAM",
    "TIMEOUT",
    "CollectorHandler",
    "are_trace_ids",
    "collector_handler",
    "disable",
    "enable",
    "is_enabled",
    "on_error",
    "traced",
    "untraced",
    "use_opentelemetry",
]
