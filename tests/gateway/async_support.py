"""``run_async``: run an ``async def`` test with ``asyncio.run`` (pytest-asyncio is not a
dependency), bounded in time; errors handed to the loop's exception handler fail it."""

from __future__ import annotations

from asyncrun import async_runner

TEST_TIMEOUT = 20.0


run_async = async_runner(TEST_TIMEOUT)
