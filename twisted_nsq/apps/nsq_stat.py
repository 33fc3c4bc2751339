"""
C{nsq_stat}: poll C{/stats} on every nsqd that has a topic (given, or found through lookupd) and
print a channel's counters summed over all of them, one row per C{--interval}, as Go's C{nsq_stat}
does.

The table (header repeated every 25 polls)::

    ------rate------+----------------depth----------------+--------------metadata---------------
    ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients

C{ingress} is the growth of the channel's message count since the previous poll, and C{egress}
that growth less the growth of its depth, both per second of C{--interval}; the other columns are
the current values. The first poll only prints the header (there is nothing to compare with yet);
C{--count N} stops after N rows. Any nsqd or lookupd that cannot be queried, or a channel that no
nsqd has, ends the program with an error, as in Go.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlencode

import attrs
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from twisted_nsq._cli import FlagError, FlagSpec, Kind
from twisted_nsq.apps._common import CONFIG, LOOKUPD_HTTP_ADDRESS, VERSION, check_sources
from twisted_nsq.apps._console import run_console
from twisted_nsq.apps._status import GoLog

PROGRAM = "nsq_stat"

STAT_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("topic", Kind.STRING, "", "NSQ topic"),
    FlagSpec("channel", Kind.STRING, "", "NSQ channel"),
    FlagSpec("interval", Kind.DURATION, 2.0, "duration of time between polling/printing output"),
    # None: not given (report forever); Go refuses an explicit 0.
    FlagSpec("count", Kind.INT, None, "number of reports"),
    FlagSpec(
        "nsqd-http-address",
        Kind.STRING_LIST,
        [],
        "nsqd HTTP address (may be given multiple times)",
        attr="nsqd_http_addresses",
    ),
    LOOKUPD_HTTP_ADDRESS,
    FlagSpec("http-client-connect-timeout", Kind.DURATION, 2.0, "timeout for HTTP connect"),
    FlagSpec("http-client-request-timeout", Kind.DURATION, 5.0, "timeout for HTTP request"),
    VERSION,
    CONFIG,
)

HEADER = (
    "------rate------+----------------depth----------------+--------------metadata---------------\n"
    f"{'ingress':>7} {'egress':>7} | {'total':>7} {'mem':>7} {'disk':>7} {'inflt':>5} {'def':>5} | "
    f"{'req':>7} {'t-o':>7} {'msgs':>12} {'clients':>7}\n"
)
#: Go prints the header before every this many polls.
HEADER_EVERY = 25


class StatError(Exception):
    """A poll failed; C{str()} is Go's fatal log message."""


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_stat} does, in its order.

    @raise FlagError: a missing, bad or contradictory flag.
    """
    if not values["topic"] or not values["channel"]:
        raise FlagError("--topic and --channel are required")
    if values["interval"] <= 0:
        raise FlagError("--interval should be positive")
    if values["http_client_connect_timeout"] <= 0:
        raise FlagError("--http-client-connect-timeout should be positive")
    if values["http_client_request_timeout"] <= 0:
        raise FlagError("--http-client-request-timeout should be positive")
    if values["count"] is not None and values["count"] <= 0:
        raise FlagError("--count should be positive")
    nsqd, lookupd = values["nsqd_http_addresses"], values["lookupd_http_addresses"]
    check_sources(nsqd, lookupd, "nsqd-http-address")
    for flag, addresses in (("nsqd-http-address", nsqd), ("lookupd-http-address", lookupd)):
        if any(address.startswith("http") for address in addresses):
            raise FlagError(f"--{flag} error - address should not contain scheme")
    return values


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@attrs.define
class ChannelTotals:
    """One channel's counters summed over every nsqd that has it."""

    found: bool = False
    depth: int = 0
    backend_depth: int = 0
    in_flight: int = 0
    deferred: int = 0
    requeued: int = 0
    timed_out: int = 0
    messages: int = 0
    clients: int = 0

    @property
    def memory_depth(self) -> int:
        """What is queued in memory: the depth less what is on disk."""
        return self.depth - self.backend_depth

    def add_stats(self, stats: object, topic: str, channel: str) -> None:
        """Add the counters of C{topic}/C{channel} from one nsqd's C{/stats?format=json} reply."""
        if not isinstance(stats, dict):
            return
        for t in stats.get("topics") or []:
            if not isinstance(t, dict) or t.get("topic_name") != topic:
                continue
            for c in t.get("channels") or []:
                if not isinstance(c, dict) or c.get("channel_name") != channel:
                    continue
                self.found = True
                self.depth += _count(c.get("depth"))
                self.backend_depth += _count(c.get("backend_depth"))
                self.in_flight += _count(c.get("in_flight_count"))
                self.deferred += _count(c.get("deferred_count"))
                self.requeued += _count(c.get("requeue_count"))
                self.timed_out += _count(c.get("timeout_count"))
                self.messages += _count(c.get("message_count"))
                clients = c.get("clients")
                if "client_count" in c:
                    self.clients += _count(c.get("client_count"))
                elif isinstance(clients, list):
                    self.clients += len(clients)


def row(previous: ChannelTotals, current: ChannelTotals, interval: float) -> str:
    """One table row: the rates since C{previous} (per second of C{interval}) and C{current}'s values."""
    received = current.messages - previous.messages
    # Go converts with int64(): truncation toward zero.
    ingress = int(received / interval)
    egress = int((received - (current.depth - previous.depth)) / interval)
    return (
        f"{ingress:7d} {egress:7d} | {current.depth:7d} {current.memory_depth:7d} "
        f"{current.backend_depth:7d} {current.in_flight:5d} {current.deferred:5d} | "
        f"{current.requeued:7d} {current.timed_out:7d} {current.messages:12d} {current.clients:7d}\n"
    )


def http_addresses_from_lookup(reply: object) -> list[str]:
    """The nsqd HTTP addresses (C{host:port}) in a lookupd C{/lookup} reply."""
    if not isinstance(reply, dict):
        return []
    data = reply.get("data", reply)
    producers = data.get("producers") if isinstance(data, dict) else None
    addresses = []
    for producer in producers or []:
        if isinstance(producer, dict) and "broadcast_address" in producer and "http_port" in producer:
            addresses.append(f"{producer['broadcast_address']}:{producer['http_port']}")
    return addresses


def _describe(failure: Failure) -> str:
    return failure.getErrorMessage() or repr(failure.value)


class Stat:
    """Polls and prints; L{poll} is one poll, and prints a row from the second on."""

    def __init__(self, values: dict[str, Any], http: Any, out: TextIO) -> None:
        self._values = values
        self._http = http
        self._out = out
        self._previous: ChannelTotals | None = None
        self.polls = 0
        self.rows = 0

    async def _get_json(self, url: str) -> object:
        response = await self._http.get(url, timeout=self._values["http_client_request_timeout"])
        text = await response.text()
        if response.code != 200:
            raise ValueError(f"got response {response.code} {text.strip()!r} from {url}")
        return json.loads(text)

    async def _gather(self, urls: list[str], what: str) -> list[object]:
        try:
            replies = await gatherResults(
                [Deferred.fromCoroutine(self._get_json(url)) for url in urls], consumeErrors=True
            )
        except FirstError as e:
            raise StatError(f"ERROR: failed to get {what} - {_describe(e.subFailure)}") from None
        return list(replies)

    async def _nsqd_addresses(self) -> list[str]:
        if self._values["nsqd_http_addresses"]:
            return list(self._values["nsqd_http_addresses"])
        query = urlencode({"topic": self._values["topic"]})
        urls = [f"http://{address}/lookup?{query}" for address in self._values["lookupd_http_addresses"]]
        found: list[str] = []
        for reply in await self._gather(urls, "topic producers"):
            for address in http_addresses_from_lookup(reply):
                if address not in found:
                    found.append(address)
        return found

    async def poll(self) -> None:
        """Query every nsqd once; print the header every 25 polls and, after the first, a row."""
        topic, channel = self._values["topic"], self._values["channel"]
        addresses = await self._nsqd_addresses()
        if not addresses:
            raise StatError("ERROR: failed to get nsqd stats - Failed to query any nsqd")
        query = urlencode({"format": "json", "topic": topic, "channel": channel, "include_clients": "false"})
        replies = await self._gather(
            [f"http://{address}/stats?{query}" for address in addresses], "nsqd stats"
        )
        totals = ChannelTotals()
        for reply in replies:
            totals.add_stats(reply, topic, channel)
        if not totals.found:
            raise StatError(f"ERROR: failed to find channel({channel}) in stats metadata for topic({topic})")
        if self.polls % HEADER_EVERY == 0:
            self._out.write(HEADER)
        self.polls += 1
        if self._previous is not None:
            self._out.write(row(self._previous, totals, self._values["interval"]))
            self.rows += 1
        self._out.flush()
        self._previous = totals


def run(reactor: Any, values: dict[str, Any], out: TextIO, stderr: TextIO) -> Deferred[None]:
    """Poll every C{--interval} until C{--count} rows were printed (forever without it)."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    # Not persistent: a connection left open would outlive the last report.
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent(  # type: ignore[no-untyped-call]
        reactor, connectTimeout=values["http_client_connect_timeout"], pool=pool
    )
    stat = Stat(values, HTTPClient(agent), out)
    log = GoLog(reactor, stderr)
    finished: Deferred[None] = Deferred()

    def report() -> Deferred[None]:
        d = Deferred.fromCoroutine(stat.poll())

        def check(_: None) -> None:
            if values["count"] is not None and stat.rows >= values["count"]:
                loop.stop()

        return d.addCallback(check)

    def failed(failure: Failure) -> None:
        if isinstance(failure.value, StatError):
            log(str(failure.value))
            finished.errback(SystemExit(1))
        else:
            finished.errback(failure)

    loop = LoopingCall(report)
    loop.clock = reactor
    done = loop.start(values["interval"], now=True)
    done.addCallbacks(lambda _: finished.callback(None), failed)
    return finished


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_stat} console script."""
    run_console(PROGRAM, STAT_FLAGS, argv, check_values, run, sys.stdout, sys.stderr)


if __name__ == "__main__":
    main()
