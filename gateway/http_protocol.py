"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools accepts headers of any size, and gathers a long header value by concatenating its
pieces, so one connection sending a header of a few hundred MiB costs that much memory and
minutes of CPU. This protocol counts the bytes of each request head as they arrive; once a
head is still unfinished past ``MAX_HEAD_BYTES`` (a body in the same read does not count), it
answers 431 (a problem document) and closes the connection without parsing further. Without
httptools, uvicorn's h11 protocol is used with the same bound.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

MAX_HEAD_BYTES: Final = 64 * 1024  # nginx's default allows 32 KiB; browsers send ~1-8 KiB

log = logging.getLogger("zerogate.gateway")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: h11 has its own bound (see uvicorn_http)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def _refusal(limit: int) -> bytes:
    document = {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": f"the request line and headers are larger than {limit} bytes",
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """HttpToolsProtocol that refuses request heads over ``max_head_bytes``."""

        max_head_bytes = MAX_HEAD_BYTES

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            counting = self._in_head
            if counting:
                self._head_bytes += len(data)
            super().data_received(data)
            # Still inside a head past the bound: at most one read beyond it was parsed.
            if counting and self._in_head and self._head_bytes > self.max_head_bytes:
                self._refuse_head()

        def _refuse_head(self) -> None:
            self._in_head = False  # whatever else arrives is not read
            log.warning(
                "refused a request head over %d bytes from %s",
                self.max_head_bytes,
                self.client[0] if self.client else "?",
            )
            self.transport.write(_refusal(self.max_head_bytes))
            self.transport.close()


def uvicorn_http() -> dict[str, Any]:
    """The uvicorn.Config options that choose the HTTP protocol, bounded either way."""
    if HttpToolsProtocol is not None:
        return {"http": BoundedHttpToolsProtocol}
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
