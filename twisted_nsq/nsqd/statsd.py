"""
nsqd's statsd push (spec section 2.9): NSQ's metric names over UDP every C{--statsd-interval}.

Each push reads the same numbers C{/stats} shows (L{stats_json}), turns them into statsd lines
(L{statsd_lines}: counters as deltas since the previous push, C{|c}; gauges, C{|g}), packs the
lines into datagrams of at most C{--statsd-udp-packet-size} bytes without splitting a line
(L{pack_lines}), and sends the datagrams spread evenly over the interval minus one second, as Go's
nsqd does, so a large nsqd does not burst hundreds of packets at its statsd daemon at once.

L{StatsdService} is a child service of L{NSQDService}: one L{LoopingCall} for the pushes, and at
most one pending call for the next datagram of the current push.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorCore, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.stats import MEMORY_GAUGES, E2ELatencyTracker, memory_stats, stats_json
from twisted_nsq.wire.names import is_ephemeral

log = Logger()

#: The part of C{--statsd-interval} the datagrams of one push are spread over is the interval
#: minus this many seconds (Go's choice), so a push is done well before the next begins.
SPREAD_MARGIN = 1.0


# -- names ------------------------------------------------------------------------------------


def statsd_prefix(template: str, broadcast_address: str, http_port: int) -> str:
    """
    The key prefix for C{--statsd-prefix}: every C{%s} becomes
    C{<broadcast_address>_<http_port>} with C{.} and C{:} turned into C{_}, and a C{.} is added
    at the end unless there is one (an empty prefix stays empty).
    """
    if "%s" in template:
        host_key = f"{broadcast_address}:{http_port}".replace(".", "_").replace(":", "_")
        template = template.replace("%s", host_key)
    if template and not template.endswith("."):
        template += "."
    return template


def percentile_name(quantile: float) -> str:
    """The C{<pct>} of C{e2e_processing_latency_<pct>}: the quantile times 100, no decimals."""
    return f"{quantile * 100:.0f}"


@attrs.frozen
class StatsdAddress:
    """Where statsd listens: a host (name or IP literal) and a UDP port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> StatsdAddress:
        """
        Read C{host:port} or C{[v6]:port}.

        @raise ValueError: no port, a port that is not a number in [1, 65535], or no host.
        """
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"invalid --statsd-address {text!r}: want host:port")
            port_text = rest[1:]
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon or ":" in host:
                raise ValueError(f"invalid --statsd-address {text!r}: want host:port")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"invalid --statsd-address {text!r}: want host:port")
        return cls(host, int(port_text))

    @property
    def ip(self) -> str | None:
        """The host when it is an IP literal (no lookup needed), else C{None}."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None

    @property
    def is_ipv6(self) -> bool:
        ip = self.ip
        return ip is not None and ":" in ip


# -- lines ------------------------------------------------------------------------------------


@attrs.define
class CounterState:
    """The counters of the previous push, from which this push's deltas are taken."""

    topics: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    channels: dict[tuple[str, str], tuple[int, int, int]] = attrs.field(factory=dict)
    gc_runs: int = 0


def _delta(current: int, previous: int) -> int:
    # A counter that went backwards was reset (the topic or channel was deleted and made again):
    # everything it counts now is new.
    return current - previous if current >= previous else current


def statsd_lines(
    document: Mapping[str, Any],
    previous: CounterState,
    prefix: str,
    memory: Mapping[str, int] | None = None,
    exclude_ephemeral: bool = False,
) -> tuple[list[bytes], CounterState]:
    """
    The statsd lines of one push, and the counter state for the next.

    @param document: a C{/stats} JSON document (L{stats_json}; clients are not needed).
    @param previous: the state L{statsd_lines} returned last time (a fresh one at first).
    @param prefix: the result of L{statsd_prefix}.
    @param memory: L{memory_stats} when C{--statsd-mem-stats} is on.
    @param exclude_ephemeral: leave C{#ephemeral} topics and channels out.
    """
    lines: list[str] = []
    state = CounterState(gc_runs=previous.gc_runs)
    for topic in document.get("topics") or ():
        name = topic["topic_name"]
        if exclude_ephemeral and is_ephemeral(name):
            continue
        counts = (topic["message_count"], topic["message_bytes"])
        last = previous.topics.get(name, (0, 0))
        state.topics[name] = counts
        key = f"{prefix}topic.{name}."
        lines.append(f"{key}message_count:{_delta(counts[0], last[0])}|c")
        lines.append(f"{key}message_bytes:{_delta(counts[1], last[1])}|c")
        lines.append(f"{key}depth:{topic['depth']}|g")
        lines.append(f"{key}backend_depth:{topic['backend_depth']}|g")
        lines.extend(_latency_lines(key, topic["e2e_processing_latency"]))
        for channel in topic["channels"]:
            channel_name = channel["channel_name"]
            if exclude_ephemeral and is_ephemeral(channel_name):
                continue
            channel_counts = (channel["message_count"], channel["requeue_count"], channel["timeout_count"])
            channel_last = previous.channels.get((name, channel_name), (0, 0, 0))
            state.channels[(name, channel_name)] = channel_counts
            channel_key = f"{key}channel.{channel_name}."
            lines.append(f"{channel_key}message_count:{_delta(channel_counts[0], channel_last[0])}|c")
            lines.append(f"{channel_key}requeue_count:{_delta(channel_counts[1], channel_last[1])}|c")
            lines.append(f"{channel_key}timeout_count:{_delta(channel_counts[2], channel_last[2])}|c")
            lines.append(f"{channel_key}depth:{channel['depth']}|g")
            lines.append(f"{channel_key}backend_depth:{channel['backend_depth']}|g")
            lines.append(f"{channel_key}in_flight_count:{channel['in_flight_count']}|g")
            lines.append(f"{channel_key}deferred_count:{channel['deferred_count']}|g")
            lines.append(f"{channel_key}clients:{channel['client_count']}|g")
            lines.extend(_latency_lines(channel_key, channel["e2e_processing_latency"]))
    if memory is not None:
        for gauge in MEMORY_GAUGES:
            lines.append(f"{prefix}mem.{gauge}:{memory[gauge]}|g")
        runs = memory["gc_total_runs"]
        lines.append(f"{prefix}mem.gc_runs:{_delta(runs, previous.gc_runs)}|c")
        state.gc_runs = runs
    return [line.encode("utf-8") for line in lines], state


def _latency_lines(key: str, latency: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}e2e_processing_latency_{percentile_name(p['quantile'])}:{int(p['value'])}|g"
        for p in latency.get("percentiles") or ()
    ]


def pack_lines(lines: Iterable[bytes], size: int) -> list[bytes]:
    """
    Datagrams of at most C{size} bytes, each holding whole newline-terminated lines.

    A line longer than C{size} on its own (a very long topic name with a tiny packet size) goes
    alone in a datagram of its own rather than being cut.
    """
    packets: list[bytes] = []
    current = bytearray()
    for line in lines:
        needed = len(line) + 1
        if current and len(current) + needed > size:
            packets.append(bytes(current))
            current.clear()
        current += line
        current += b"\n"
    if current:
        packets.append(bytes(current))
    return packets


# -- sending ----------------------------------------------------------------------------------


class StatsdProtocol(DatagramProtocol):
    """The UDP socket datagrams go out of; it expects no replies and ignores any."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """statsd never answers; anything arriving here is ignored."""

    def send(self, packet: bytes, address: tuple[str, int]) -> bool:
        """Send one datagram; C{False} (and a logged error) when the socket refused it."""
        if self.transport is None:
            return False
        try:
            self.transport.write(packet, address)
        except OSError as e:
            # ECONNREFUSED from an earlier ICMP, a full socket buffer, no route: statsd is best
            # effort, so the datagram is dropped like a lost one.
            log.error("failed to send statsd packet to {address} - {error}", address=address, error=e)
            return False
        return True


class StatsdService(Service):
    """
    Pushes an nsqd's stats to statsd every C{--statsd-interval}.

    The first push comes one interval after the start (its counters count from the start), as
    Go's ticker does. A host name is looked up again at every push, so a moved statsd daemon is
    followed; a failed lookup drops that push's datagrams (logged), and its counter deltas are
    lost as a lost datagram's would be.

    C{reactor} must also provide C{IReactorUDP} and C{IReactorCore.resolve} (any real reactor
    does).

    @ivar pushes: how many pushes have begun (for tests and operators).
    """

    name = "statsd"

    def __init__(
        self,
        nsqd: NSQD,
        latency: E2ELatencyTracker | None,
        reactor: IReactorTime,
        memory: Callable[[], dict[str, int]] = memory_stats,
    ) -> None:
        options = nsqd.options
        if options.statsd_interval <= 0:
            raise ValueError("--statsd-interval must be positive")
        self.address = StatsdAddress.parse(options.statsd_address)
        self.nsqd = nsqd
        self.latency = latency
        self._reactor = reactor
        self._memory = memory
        self._counters = CounterState()
        self._protocol = StatsdProtocol()
        self._port: IListeningPort | None = None
        self._loop: LoopingCall | None = None
        self._packets: deque[bytes] = deque()
        self._spacing = 0.0
        self._send_call: IDelayedCall | None = None
        self._target: tuple[str, int] | None = None
        self._generation = 0
        self.pushes = 0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        interface = "::" if self.address.is_ipv6 else ""
        self._port = cast(IReactorUDP, self._reactor).listenUDP(0, self._protocol, interface, 8192)
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self._reactor
        loop.start(self.nsqd.options.statsd_interval, now=False).addErrback(self._loop_failed)
        log.info("STATSD: pushing to {address}", address=self.nsqd.options.statsd_address)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self._generation += 1
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._cancel_send()
        self._packets.clear()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def _loop_failed(self, failure: Failure) -> None:
        log.failure("statsd push loop stopped", failure)

    def _tick(self) -> None:
        # One failed push (a bug reading some stat) must not end every later one.
        try:
            self.push()
        except Exception:
            log.failure("statsd push failed")

    # -- one push -----------------------------------------------------------------------------

    def push(self) -> None:
        """Collect this interval's lines now and start sending them."""
        self.pushes += 1
        options = self.nsqd.options
        document = stats_json(self.nsqd, include_clients=False, include_mem=False, latency=self.latency)
        http_port = options.broadcast_http_port or self.nsqd.http_port
        prefix = statsd_prefix(options.statsd_prefix, options.broadcast_address, http_port)
        memory = self._memory() if options.statsd_mem_stats else None
        lines, self._counters = statsd_lines(
            document, self._counters, prefix, memory, options.statsd_exclude_ephemeral
        )
        packets = pack_lines(lines, options.statsd_udp_packet_size)
        # Anything left of the previous push goes now, ahead of this one's.
        self._flush()
        spread = options.statsd_interval - SPREAD_MARGIN
        self._spacing = spread / len(packets) if packets and spread > 0 else 0.0
        self._packets.extend(packets)
        ip = self.address.ip
        if ip is not None:
            self._target = (ip, self.address.port)
            self._send_next()
            return
        generation = self._generation
        resolving: Deferred[str] = cast(IReactorCore, self._reactor).resolve(self.address.host)
        resolving.addCallbacks(
            lambda resolved: self._resolved(generation, resolved),
            lambda failure: self._lookup_failed(generation, failure),
        )

    def _resolved(self, generation: int, ip: str) -> None:
        if generation != self._generation or not self.running:
            return
        self._target = (ip, self.address.port)
        self._send_next()

    def _lookup_failed(self, generation: int, failure: Failure) -> None:
        if generation != self._generation or not self.running:
            return
        log.error(
            "failed to resolve statsd host {host} - {error}", host=self.address.host, error=failure.value
        )
        self._packets.clear()

    def _send_next(self) -> None:
        self._send_call = None
        if not self._packets or self._target is None:
            return
        self._protocol.send(self._packets.popleft(), self._target)
        if not self._packets:
            return
        if self._spacing <= 0:
            self._flush()
            return
        self._send_call = self._reactor.callLater(self._spacing, self._send_next)

    def _flush(self) -> None:
        self._cancel_send()
        target = self._target
        while self._packets and target is not None:
            self._protocol.send(self._packets.popleft(), target)
        self._packets.clear()

    def _cancel_send(self) -> None:
        if self._send_call is not None and self._send_call.active():
            self._send_call.cancel()
        self._send_call = None


def attach_statsd(
    parent: MultiService, nsqd: NSQD, latency: E2ELatencyTracker | None, reactor: IReactorTime
) -> StatsdService | None:
    """
    Make L{StatsdService} a child of C{parent} when C{--statsd-address} is set (replacing the
    one an earlier start left there), so it starts and stops with nsqd.

    @raise ValueError: a wrong C{--statsd-address} or C{--statsd-interval}.
    """
    previous = parent.namedServices.get(StatsdService.name)
    if previous is not None:
        previous.disownServiceParent()
    if not nsqd.options.statsd_address:
        return None
    service = StatsdService(nsqd, latency, reactor)
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]
    return service
