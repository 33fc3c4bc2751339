"""
Choosing the destination of each message for C{nsq_to_http} and C{nsq_to_nsq} (their C{--mode}).

- C{round-robin}: every address in turn, whatever happened before.
- C{hostpool} (the default, bitly's go-hostpool): every healthy address in turn; an address whose
  request failed is dead and skipped until its retry time (30 s after the failure), when one
  request tries it again, each further try of a still-dead address doubling the wait (up to
  15 min); a success revives it. When every address is dead, all are revived.
- C{epsilon-greedy} (go-hostpool's epsilon-greedy pool, linear value): most picks go to an address
  chosen at random weighted by the inverse of its recent response time (a weighted average over
  the last 5 minutes, newer buckets weighing more); a shrinking fraction epsilon (0.3, times 0.9
  at each exploration, at least 0.01) and the picks while no timing is known go round the
  healthy addresses instead, as C{hostpool} does.

Each pick is a L{Pick}: mark it once with the outcome of the request it was used for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime

__all__ = ["MODES", "EpsilonGreedyPool", "HostPool", "Pick", "RoundRobin", "make_selector"]

#: The C{--mode} values, in the order Go's help lists them (C{hostpool} is the default).
MODES = ("round-robin", "hostpool", "epsilon-greedy")

_INITIAL_RETRY_DELAY = 30.0
_MAX_RETRY_INTERVAL = 900.0
_EPSILON_BUCKETS = 120
_DECAY_DURATION = 300.0
_INITIAL_EPSILON = 0.3
_EPSILON_DECAY = 0.9
_MIN_EPSILON = 0.01


class Pick:
    """One chosen address; L{mark} reports how the request to it went (only the first call counts)."""

    __slots__ = ("_marked", "_selector", "host", "started")

    def __init__(self, selector: RoundRobin, host: str, started: float) -> None:
        self._selector = selector
        self._marked = False
        self.host = host
        self.started = started

    def mark(self, ok: bool) -> None:
        """Record the outcome: C{ok} for a success, C{False} for a failure."""
        if self._marked:
            return
        self._marked = True
        self._selector.marked(self, ok)


class RoundRobin:
    """Every address in turn, starting with the second as Go's counter does."""

    def __init__(self, hosts: Sequence[str], clock: IReactorTime) -> None:
        if not hosts:
            raise ValueError("a host selector needs at least one address")
        self.hosts = list(hosts)
        self._clock = clock
        self._counter = 0

    def get(self) -> Pick:
        """The address for the next request."""
        self._counter += 1
        return Pick(self, self.hosts[self._counter % len(self.hosts)], self._clock.seconds())

    def marked(self, pick: Pick, ok: bool) -> None:
        """Round-robin ignores outcomes."""


class _Entry:
    __slots__ = ("counts", "dead", "host", "next_retry", "retry_delay", "totals")

    def __init__(self, host: str) -> None:
        self.host = host
        self.dead = False
        self.retry_delay = _INITIAL_RETRY_DELAY
        self.next_retry = 0.0
        # Epsilon-greedy only: requests and summed milliseconds per time bucket.
        self.counts = [0] * _EPSILON_BUCKETS
        self.totals = [0] * _EPSILON_BUCKETS

    def can_try(self, now: float) -> bool:
        return not self.dead or self.next_retry < now

    def will_retry(self, now: float) -> None:
        self.retry_delay = min(self.retry_delay * 2, _MAX_RETRY_INTERVAL)
        self.next_retry = now + self.retry_delay


class HostPool(RoundRobin):
    """go-hostpool's standard pool: healthy addresses in turn, failed ones retried after a backoff."""

    def __init__(self, hosts: Sequence[str], clock: IReactorTime) -> None:
        super().__init__(hosts, clock)
        self._entries = [_Entry(host) for host in self.hosts]
        self._by_host = {entry.host: entry for entry in self._entries}
        self._next_index = 0

    def is_dead(self, host: str) -> bool:
        """Whether C{host} is currently marked dead."""
        return self._by_host[host].dead

    def get(self) -> Pick:
        now = self._clock.seconds()
        return Pick(self, self._round_robin(now), now)

    def _round_robin(self, now: float) -> str:
        count = len(self._entries)
        for offset in range(count):
            index = (self._next_index + offset) % count
            entry = self._entries[index]
            if not entry.dead:
                self._next_index = index + 1
                return entry.host
            if entry.next_retry < now:
                entry.will_retry(now)
                self._next_index = index + 1
                return entry.host
        # Every address is dead and waiting: revive them all rather than send nowhere.
        for entry in self._entries:
            entry.dead = False
        self._next_index = 0
        return self._entries[0].host

    def marked(self, pick: Pick, ok: bool) -> None:
        entry = self._by_host[pick.host]
        if ok:
            entry.dead = False
        elif not entry.dead:
            entry.dead = True
            entry.retry_delay = _INITIAL_RETRY_DELAY
            entry.next_retry = self._clock.seconds() + entry.retry_delay


class EpsilonGreedyPool(HostPool):
    """go-hostpool's epsilon-greedy pool with its linear value (1 / average response time)."""

    def __init__(self, hosts: Sequence[str], clock: IReactorTime, rng: random.Random) -> None:
        super().__init__(hosts, clock)
        self._rng = rng
        self.epsilon = _INITIAL_EPSILON
        self._bucket = 0
        self._bucket_started = clock.seconds()

    def _advance(self, now: float) -> None:
        """Move to the current time bucket, clearing each bucket passed (the decay)."""
        per_bucket = _DECAY_DURATION / _EPSILON_BUCKETS
        steps = int((now - self._bucket_started) / per_bucket)
        if steps <= 0:
            return
        self._bucket_started += steps * per_bucket
        for _ in range(min(steps, _EPSILON_BUCKETS)):
            self._bucket = (self._bucket + 1) % _EPSILON_BUCKETS
            for entry in self._entries:
                entry.counts[self._bucket] = 0
                entry.totals[self._bucket] = 0

    def _average(self, entry: _Entry) -> float:
        """The weighted average response time (ms): older buckets weigh less, gaps repeat the last."""
        value = 0.0
        last = 0.0
        for i in range(1, _EPSILON_BUCKETS + 1):
            position = (self._bucket + i) % _EPSILON_BUCKETS
            count = entry.counts[position]
            if count:
                last = entry.totals[position] / count
            value += last * (i / _EPSILON_BUCKETS)
        return value

    def get(self) -> Pick:
        now = self._clock.seconds()
        self._advance(now)
        return Pick(self, self._choose(now), now)

    def _choose(self, now: float) -> str:
        if self._rng.random() < self.epsilon:
            self.epsilon = max(self.epsilon * _EPSILON_DECAY, _MIN_EPSILON)
            return self._round_robin(now)
        candidates: list[tuple[_Entry, float]] = []
        total = 0.0
        for entry in self._entries:
            if entry.can_try(now):
                average = self._average(entry)
                if average > 0:
                    value = 1.0 / average
                    candidates.append((entry, value))
                    total += value
        if candidates:
            ceiling = 0.0
            threshold = self._rng.random()
            for entry, value in candidates:
                ceiling += value / total
                if threshold <= ceiling:
                    if entry.dead:
                        entry.will_retry(now)
                    return entry.host
        return self._round_robin(now)

    def marked(self, pick: Pick, ok: bool) -> None:
        super().marked(pick, ok)
        if ok:
            now = self._clock.seconds()
            self._advance(now)
            entry = self._by_host[pick.host]
            entry.counts[self._bucket] += 1
            # go-hostpool keeps whole milliseconds.
            entry.totals[self._bucket] += int((now - pick.started) * 1000)


def make_selector(mode: str, hosts: Sequence[str], clock: IReactorTime, rng: random.Random) -> RoundRobin:
    """The selector for a C{--mode} value (one of L{MODES})."""
    if mode == "round-robin":
        return RoundRobin(hosts, clock)
    if mode == "hostpool":
        return HostPool(hosts, clock)
    if mode == "epsilon-greedy":
        return EpsilonGreedyPool(hosts, clock, rng)
    raise ValueError(f"unknown mode {mode!r}")
