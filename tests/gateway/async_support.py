"""``run_async``: run an ``async def`` test with ``asyncio.run`` (pytest-asyncio is not a
dependency), bounded in time; errors handed to the loop's exception handler fail it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

P = ParamSpec("P")
TEST_TIMEOUT = 20.0


def run_async(
    func: Callable[P, Coroutine[Any, Any, None]] | None = None, *, timeout: float = TEST_TIMEOUT
) -> Any:
    """``@run_async`` or ``@run_async(timeout=...)``."""

    def decorate(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
        @functools.wraps(test)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            errors: list[dict[str, Any]] = []

            async def main() -> None:
                loop = asyncio.get_running_loop()
                loop.set_exception_handler(lambda _, ctx: errors.append(ctx))
                await asyncio.wait_for(test(*args, **kwargs), timeout)

            asyncio.run(main())
            assert not errors, f"background errors: {errors}"

        return wrapper

    return decorate if func is None else decorate(func)
