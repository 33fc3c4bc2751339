"""
C{nsq_stat}: poll C{/stats} on every nsqd that has a topic (given, or found through lookupd)
and print one line of a channel's aggregate counters every interval, under Go's column header.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlencode

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall

from twisted_nsq._cli import FlagError, FlagSpec, Kind, parse_or_exit
from twisted_nsq.apps._common import LOOKUPD_HTTP_ADDRESS, VERSION

PROGRAM = "nsq_stat"

STAT_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("topic", Kind.STRING, "", "NSQ topic"),
    FlagSpec("channel", Kind.STRING, "", "NSQ channel"),
    FlagSpec("interval", Kind.DURATION, 2.0, "duration of time between polling/printing output"),
    FlagSpec("count", Kind.INT, 0, "number of reports"),
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
)

HEADER = (
    "-----------depth------------+--------------metadata---------------\n"
    f"{'total':>7} {'mem':>7} {'disk':>7} {'inflt':>5} {'def':>5} | "
    f"{'req':>7} {'t-o':>7} {'msgs':>12} {'clients':>7}\n"
)
# Go reprints the header every this many lines.
_HEADER_EVERY = 25


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_stat} does.

    @raise FlagError: a missing or contradictory flag.
    """
    if not values["topic"] or not values["channel"]:
        raise FlagError("--topic and --channel are required")
    nsqd, lookupd = values["nsqd_http_addresses"], values["lookupd_http_addresses"]
    if not nsqd and not lookupd:
        raise FlagError("--nsqd-http-address or --lookupd-http-address required")
    if nsqd and lookupd:
        raise FlagError("use --nsqd-http-address or --lookupd-http-address not both")
    if values["interval"] <= 0:
        raise FlagError("--interval must be positive")
    if values["count"] < 0:
        raise FlagError("--count must not be negative")
    return values


@attrs.define
class ChannelTotals:
    """One channel's counters summed over every nsqd."""

    depth: int = 0
    backend_depth: int = 0
    in_flight: int = 0
    deferred: int = 0
    requeued: int = 0
    timed_out: int = 0
    messages: int = 0
    clients: int = 0

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
                self.depth += int(c.get("depth", 0))
                self.backend_depth += int(c.get("backend_depth", 0))
                self.in_flight += int(c.get("in_flight_count", 0))
                self.deferred += int(c.get("deferred_count", 0))
                self.requeued += int(c.get("requeue_count", 0))
                self.timed_out += int(c.get("timeout_count", 0))
                self.messages += int(c.get("message_count", 0))
                clients = c.get("clients")
                count = len(clients) if isinstance(clients, list) else int(c.get("client_count", 0))
                self.clients += count

    def line(self) -> str:
        """The table row, in Go's column widths."""
        return (
            f"{self.depth:>7} {self.depth - self.backend_depth:>7} {self.backend_depth:>7} "
            f"{self.in_flight:>5} {self.deferred:>5} | {self.requeued:>7} {self.timed_out:>7} "
            f"{self.messages:>12} {self.clients:>7}\n"
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


def _decode(text: str) -> object:
    return json.loads(text)


class Stat:
    """Polls and prints; L{poll} is one report."""

    def __init__(self, values: dict[str, Any], http: Any, out: TextIO) -> None:
        self._values = values
        self._http = http
        self._out = out
        self.reports = 0

    def _get_json(self, url: str) -> Deferred[Any]:
        d: Deferred[Any] = self._http.get(url, timeout=self._values["http_client_request_timeout"])
        d.addCallback(lambda response: response.text())
        d.addCallback(_decode)
        return d

    def _nsqd_addresses(self) -> Deferred[list[str]]:
        if self._values["nsqd_http_addresses"]:
            return Deferred.fromCoroutine(self._given())
        query = urlencode({"topic": self._values["topic"]})
        lookups = [
            self._get_json(f"http://{address}/lookup?{query}").addErrback(lambda _: None)
            for address in self._values["lookupd_http_addresses"]
        ]

        def merge(replies: list[object]) -> list[str]:
            found: list[str] = []
            for reply in replies:
                for address in http_addresses_from_lookup(reply):
                    if address not in found:
                        found.append(address)
            return found

        return gatherResults(lookups).addCallback(merge)

    async def _given(self) -> list[str]:
        return list(self._values["nsqd_http_addresses"])

    async def poll(self) -> None:
        """Query every nsqd once and print the row (and the header every 25 rows)."""
        addresses = await self._nsqd_addresses()
        query = urlencode(
            {"format": "json", "topic": self._values["topic"], "channel": self._values["channel"]}
        )
        replies = await gatherResults(
            [
                self._get_json(f"http://{address}/stats?{query}").addErrback(lambda _: None)
                for address in addresses
            ]
        )
        totals = ChannelTotals()
        for reply in replies:
            totals.add_stats(reply, self._values["topic"], self._values["channel"])
        if self.reports % _HEADER_EVERY == 0:
            self._out.write(HEADER)
        self._out.write(totals.line())
        self._out.flush()
        self.reports += 1


def run(reactor: Any, values: dict[str, Any], out: TextIO) -> Deferred[None]:
    """Report every C{--interval} until C{--count} reports were printed (forever when 0)."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    # Not persistent: a connection left open would outlive the last report.
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent(  # type: ignore[no-untyped-call]
        reactor, connectTimeout=values["http_client_connect_timeout"], pool=pool
    )
    stat = Stat(values, HTTPClient(agent), out)
    finished: Deferred[None] = Deferred()

    def report() -> Deferred[None]:
        d = Deferred.fromCoroutine(stat.poll())

        def check(_: None) -> None:
            if values["count"] and stat.reports >= values["count"]:
                loop.stop()

        return d.addCallback(check)

    loop = LoopingCall(report)
    loop.clock = reactor
    done = loop.start(values["interval"], now=True)
    done.addCallbacks(lambda _: finished.callback(None), finished.errback)
    return finished


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_stat} console script."""
    from twisted.internet.task import react

    arguments = sys.argv[1:] if argv is None else list(argv)
    values = parse_or_exit(PROGRAM, STAT_FLAGS, arguments, stdout=sys.stdout, stderr=sys.stderr)
    try:
        checked = check_values(values)
    except FlagError as e:
        sys.stderr.write(f"{PROGRAM}: {e}\n")
        raise SystemExit(1) from None
    react(run, (checked, sys.stdout))


if __name__ == "__main__":
    main()
