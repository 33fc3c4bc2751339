"""
What the forwarding utilities log: Go's standard C{log} line (C{2026/01/02 15:04:05 message}) and
bitly's C{timer_metrics} status line, printed every C{--status-every} requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from twisted.internet.interfaces import IReactorTime

__all__ = ["GoLog", "HostTimers", "TimerMetrics", "percentile"]


class GoLog:
    """Writes Go C{log.Printf} lines to C{stream}, stamped with C{clock}'s local time."""

    def __init__(self, clock: IReactorTime, stream: TextIO) -> None:
        self._clock = clock
        self._stream = stream

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(self._clock.seconds()))
        self._stream.write(f"{stamp} {message}\n")
        self._stream.flush()


def percentile(percent: float, ordered: list[float]) -> float:
    """timer_metrics' percentile of sorted C{ordered}: the element at C{ceil(p/100*n + 0.5)}, capped."""
    if not ordered:
        return 0.0
    index = min(math.ceil(percent / 100.0 * len(ordered) + 0.5), len(ordered) - 1)
    return ordered[index]


class TimerMetrics:
    """
    Keeps the last C{status_every} durations and logs
    C{<prefix> finished <n> - 99th: <ms>ms - 95th: <ms>ms - avg: <ms>ms} each time the window has
    been filled and one more duration arrives (timer_metrics' ring buffer). C{status_every} 0
    disables it.
    """

    def __init__(self, status_every: int, prefix: str, log: Callable[[str], None]) -> None:
        self._every = status_every
        self._prefix = prefix
        self._log = log
        self._timings: list[float] = []
        self._position = 0
        if 0 < status_every < 100:
            log(
                "Warning: use more than 100 status values for accurate percentiles "
                f"(configured with {status_every})"
            )

    def status(self, duration: float) -> None:
        """Record one request's duration in seconds."""
        if self._every <= 0:
            return
        self._position += 1
        looped = self._position > self._every
        if looped:
            self._position = 1
        if self._position > len(self._timings):
            self._timings.append(duration)
        else:
            self._timings[self._position - 1] = duration
        if looped:
            self._log(self.line())

    def line(self) -> str:
        """The status line for the durations kept now."""
        ordered = sorted(self._timings)
        average = sum(ordered) / len(ordered) if ordered else 0.0
        return (
            f"{self._prefix} finished {len(ordered)} - 99th: {percentile(99.0, ordered) * 1000:.2f}ms"
            f" - 95th: {percentile(95.0, ordered) * 1000:.2f}ms - avg: {average * 1000:.2f}ms"
        )


class HostTimers:
    """
    A forwarding utility's status lines: one L{TimerMetrics} per destination host (silent when
    there is only one) and one over all of them (C{[aggregate]:}).
    """

    def __init__(self, hosts: Sequence[str], status_every: int, log: Callable[[str], None]) -> None:
        every_host = status_every if len(hosts) > 1 else 0
        self._per_host = {host: TimerMetrics(every_host, f"[{host}]:", log) for host in hosts}
        self._aggregate = TimerMetrics(status_every, "[aggregate]:", log)

    def status(self, host: str, duration: float) -> None:
        """Record one request to C{host} that took C{duration} seconds."""
        self._per_host[host].status(duration)
        self._aggregate.status(duration)
