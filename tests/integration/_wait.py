"""Waiting on other processes in integration tests, where there is nothing to wait on but polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

_T = TypeVar("_T")


def wait_until(what: str, probe: Callable[[], _T], done: Callable[[_T], bool], timeout: float) -> _T:
    """
    Call C{probe} until C{done} accepts its result or C{timeout} seconds pass; returns the
    accepted result.

    @raise AssertionError: the time ran out; the message names C{what} and holds the last result.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not so after {timeout}s; last seen {value!r}")
        time.sleep(0.05)
