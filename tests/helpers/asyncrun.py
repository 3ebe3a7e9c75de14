"""Running ``async def`` tests without a plugin: ``run_async = async_runner(TIMEOUT)`` in a
folder's support module, then ``@run_async`` or ``@run_async(timeout=...)`` on a test.

Each test runs in a fresh ``asyncio.run``, bounded in time. Errors that background tasks and
callbacks hand to the loop's exception handler ("Task exception was never retrieved") fail
it, so nothing fails silently; with ``no_tasks_left``, so does a task still running at the end.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

P = ParamSpec("P")
Test = Callable[P, Coroutine[Any, Any, None]]


def async_runner(default_timeout: float, *, no_tasks_left: bool = False) -> Any:
    """A ``run_async`` decorator whose tests get ``default_timeout`` seconds unless told."""

    def run_async(func: Test[P] | None = None, *, timeout: float = default_timeout) -> Any:
        def decorate(test: Test[P]) -> Callable[P, None]:
            @functools.wraps(test)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
                errors: list[dict[str, Any]] = []
                left: list[asyncio.Task[Any]] = []

                async def main() -> None:
                    loop = asyncio.get_running_loop()
                    loop.set_exception_handler(lambda _loop, context: errors.append(context))
                    await asyncio.wait_for(test(*args, **kwargs), timeout)
                    if no_tasks_left:
                        current = asyncio.current_task()
                        left.extend(task for task in asyncio.all_tasks() if task is not current)

                asyncio.run(main())
                gc.collect()  # a failed task that nobody awaited reports when it is collected
                assert not errors, "background errors: " + "; ".join(
                    f"{context.get('message')}: {context.get('exception')!r}" for context in errors
                )
                assert not left, f"tasks left running: {left}"

            return wrapper

        return decorate if func is None else decorate(func)

    return run_async
