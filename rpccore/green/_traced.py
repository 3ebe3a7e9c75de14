"""Carrying the current trace into greenlets a handler spawns."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import gevent


def spawn_traced(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
    """``gevent.spawn(fn, *args, **kwargs)``, with the caller's contextvars (the current
    trace, call metadata): a new greenlet starts with an empty context, so calls made in
    a plain ``gevent.spawn`` would start new traces."""
    context = contextvars.copy_context()
    return gevent.spawn(context.run, fn, *args, **kwargs)
