"""An ASGI app under a real uvicorn in a background thread, on a free loopback port: the
end-to-end tests' server (``with ServedApp(app) as served: ... served.url``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn
from loopback import START_TIMEOUT, free_port


class ServedApp:
    """``app`` served on 127.0.0.1; ``uvicorn_options`` add to or replace the defaults."""

    def __init__(self, app: Any, **uvicorn_options: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_level": "warning",
            "lifespan": "on",
            **uvicorn_options,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"
