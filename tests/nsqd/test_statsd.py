"""Tests for L{twisted_nsq.nsqd.statsd}: names, lines, deltas, packets, and the push schedule."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.stats import E2ELatencyTracker, stats_json
from twisted_nsq.nsqd.statsd import (
    CounterState,
    StatsdAddress,
    StatsdProtocol,
    StatsdService,
    attach_statsd,
    pack_lines,
    percentile_name,
    statsd_lines,
    statsd_prefix,
)
from twisted_nsq.testing import LoopbackClient, make_nsqd

START = 1_700_000_000
PREFIX = "nsq.nsqd_example_4151."

MEMORY = {
    "heap_objects": 11,
    "heap_idle_bytes": 0,
    "heap_in_use_bytes": 4096,
    "heap_released_bytes": 0,
    "gc_pause_usec_100": 0,
    "gc_pause_usec_99": 0,
    "gc_pause_usec_95": 0,
    "next_gc_bytes": 0,
    "gc_total_runs": 7,
}


class RecordingDatagramTransport:
    """A UDP transport that keeps what was written (or refuses it while C{refuse} is set)."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.refuse: OSError | None = None

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.written.append((packet, addr))


class FakePort:
    """The listening port a L{FakeUDPReactor} hands out."""

    def __init__(self, protocol: DatagramProtocol, interface: str) -> None:
        self.protocol = protocol
        self.interface = interface
        self.listening = True

    def stopListening(self) -> Deferred[None]:
        self.listening = False
        self.protocol.doStop()
        return succeed(None)


class FakeUDPReactor(Clock):
    """A Clock that also opens fake UDP sockets and resolves names on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = RecordingDatagramTransport()
        self.ports: list[FakePort] = []
        self.lookups: list[tuple[str, Deferred[str]]] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        protocol.makeConnection(self.transport)  # type: ignore[arg-type]
        listening = FakePort(protocol, interface)
        self.ports.append(listening)
        return listening

    def resolve(self, name: str, timeout: Any = None) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.lookups.append((name, d))
        return d

    def sent(self) -> list[bytes]:
        """The datagrams written so far (and forget them)."""
        packets = [packet for packet, _ in self.transport.written]
        self.transport.written.clear()
        return packets


class NameTests(SynchronousTestCase):
    def test_prefix(self) -> None:
        self.assertEqual(statsd_prefix("nsq.%s", "nsqd.example", 4151), PREFIX)
        self.assertEqual(statsd_prefix("nsq.%s.", "10.0.0.1", 80), "nsq.10_0_0_1_80.")
        self.assertEqual(statsd_prefix("a.%s.b.%s", "h", 1), "a.h_1.b.h_1.")
        self.assertEqual(statsd_prefix("nsq.%s", "::1", 4151), "nsq.__1_4151.")
        self.assertEqual(statsd_prefix("plain", "h", 1), "plain.")
        self.assertEqual(statsd_prefix("plain.", "h", 1), "plain.")
        self.assertEqual(statsd_prefix("", "h", 1), "")

    def test_percentile_name(self) -> None:
        cases = {0.99: "99", 0.5: "50", 1.0: "100", 0.95: "95", 0.999: "100", 0.001: "0", 0.125: "12"}
        for quantile, name in cases.items():
            self.assertEqual(percentile_name(quantile), name, quantile)

    def test_address(self) -> None:
        self.assertEqual(StatsdAddress.parse("127.0.0.1:8125"), StatsdAddress("127.0.0.1", 8125))
        self.assertEqual(StatsdAddress.parse("statsd.local:8125").ip, None)
        self.assertEqual(StatsdAddress.parse("[::1]:8125"), StatsdAddress("::1", 8125))
        self.assertTrue(StatsdAddress.parse("[::1]:8125").is_ipv6)
        self.assertFalse(StatsdAddress.parse("127.0.0.1:8125").is_ipv6)
        self.assertEqual(StatsdAddress.parse("127.0.0.1:8125").ip, "127.0.0.1")
        for bad in ("", "host", ":8125", "host:", "host:x", "host:0", "host:70000", "::1:8125", "[::1]8125"):
            self.assertRaises(ValueError, StatsdAddress.parse, bad)


class PackTests(SynchronousTestCase):
    def test_split_on_lines(self) -> None:
        lines = [b"a" * 4, b"b" * 4, b"c" * 4]
        # Each line takes 5 bytes with its newline.
        self.assertEqual(pack_lines(lines, 10), [b"aaaa\nbbbb\n", b"cccc\n"])
        self.assertEqual(pack_lines(lines, 9), [b"aaaa\n", b"bbbb\n", b"cccc\n"])
        self.assertEqual(pack_lines(lines, 15), [b"aaaa\nbbbb\ncccc\n"])
        self.assertEqual(pack_lines([], 508), [])

    def test_long_line_alone(self) -> None:
        self.assertEqual(pack_lines([b"ab", b"x" * 20, b"cd"], 8), [b"ab\n", b"x" * 20 + b"\n", b"cd\n"])

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"_")), max_size=40),
        st.integers(min_value=1, max_value=200),
    )
    def test_properties(self, lines: list[bytes], size: int) -> None:
        packets = pack_lines(lines, size)
        self.assertEqual(b"".join(packets), b"".join(line + b"\n" for line in lines))
        for packet in packets:
            self.assertTrue(packet.endswith(b"\n"))
            if len(packet) > size:
                # Only a single line too long for any packet may exceed the size.
                self.assertEqual(packet.count(b"\n"), 1)
        for first, second in itertools.pairwise(packets):
            # Greedy: the next packet's first line did not fit in this one.
            self.assertGreater(len(first) + len(second.split(b"\n")[0]) + 1, size)


class LinesBase(SynchronousTestCase):
    overrides: dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.nsqd = make_nsqd(self.clock, broadcast_address="nsqd.example", **self.overrides)
        self.latency = E2ELatencyTracker(self.nsqd)
        self.latency.install()

    def lines(self, previous: CounterState, **kwargs: Any) -> tuple[list[bytes], CounterState]:
        document = stats_json(self.nsqd, include_clients=False, include_mem=False, latency=self.latency)
        return statsd_lines(document, previous, PREFIX, **kwargs)


class LinesTests(LinesBase):
    def scenario(self) -> LoopbackClient:
        """Topic t, channel c with one consumer: 3 published, one requeued and redelivered."""
        topic = self.nsqd.get_topic("t")
        topic.get_channel("c")
        client = LoopbackClient(self.nsqd)
        client.subscribe("t", "c", rdy=1)
        topic.publish([b"a", b"bb", b"ccc"])
        self.nsqd.run_dispatch()
        (first,) = client.messages()
        client.command(f"REQ {first.id.decode()} 0")
        self.assertEqual(len(client.messages()), 1)
        return client

    def test_lines(self) -> None:
        self.scenario()
        lines, state = self.lines(CounterState())
        self.assertEqual(
            lines,
            [
                b"nsq.nsqd_example_4151.topic.t.message_count:3|c",
                b"nsq.nsqd_example_4151.topic.t.message_bytes:6|c",
                b"nsq.nsqd_example_4151.topic.t.depth:0|g",
                b"nsq.nsqd_example_4151.topic.t.backend_depth:0|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.message_count:3|c",
                b"nsq.nsqd_example_4151.topic.t.channel.c.requeue_count:1|c",
                b"nsq.nsqd_example_4151.topic.t.channel.c.timeout_count:0|c",
                b"nsq.nsqd_example_4151.topic.t.channel.c.depth:2|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.backend_depth:0|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.in_flight_count:1|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.deferred_count:0|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.clients:1|g",
            ],
        )
        self.assertEqual(state, CounterState(topics={"t": (3, 6)}, channels={("t", "c"): (3, 1, 0)}))

    def test_counters_are_deltas(self) -> None:
        self.scenario()
        _, state = self.lines(CounterState())
        self.nsqd.topics["t"].publish([b"dddd"])
        self.nsqd.run_dispatch()
        lines, state = self.lines(state)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.message_count:1|c", lines)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.message_bytes:4|c", lines)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.channel.c.message_count:1|c", lines)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.channel.c.requeue_count:0|c", lines)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.channel.c.depth:3|g", lines)
        lines, _ = self.lines(state)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.message_count:0|c", lines)
        self.assertIn(b"nsq.nsqd_example_4151.topic.t.channel.c.depth:3|g", lines)

    def test_recreated_topic_counts_from_zero(self) -> None:
        self.nsqd.get_topic("t").publish([b"x"] * 5)
        _, state = self.lines(CounterState())
        self.nsqd.delete_topic("t")
        self.nsqd.get_topic("t").publish([b"yy"] * 2)
        lines, state = self.lines(state)
        self.assertEqual(
            lines[:2],
            [PREFIX.encode() + b"topic.t.message_count:2|c", PREFIX.encode() + b"topic.t.message_bytes:4|c"],
        )
        # A topic that is gone is forgotten: it counts from zero if it comes back.
        self.nsqd.delete_topic("t")
        lines, state = self.lines(state)
        self.assertEqual((lines, state.topics), ([], {}))

    def test_exclude_ephemeral(self) -> None:
        self.nsqd.get_topic("e#ephemeral").get_channel("c")
        topic = self.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.get_channel("d#ephemeral")
        lines, state = self.lines(CounterState(), exclude_ephemeral=True)
        names = {line.split(b":")[0].rsplit(b".", 1)[0] for line in lines}
        self.assertEqual(names, {PREFIX.encode() + b"topic.t", PREFIX.encode() + b"topic.t.channel.c"})
        self.assertEqual((list(state.topics), list(state.channels)), (["t"], [("t", "c")]))
        lines, _ = self.lines(CounterState())
        self.assertIn(PREFIX.encode() + b"topic.e#ephemeral.channel.c.clients:0|g", lines)
        self.assertIn(PREFIX.encode() + b"topic.t.channel.d#ephemeral.clients:0|g", lines)

    def test_memory(self) -> None:
        lines, state = self.lines(CounterState(), memory=MEMORY)
        self.assertEqual(
            lines,
            [
                b"nsq.nsqd_example_4151.mem.heap_objects:11|g",
                b"nsq.nsqd_example_4151.mem.heap_idle_bytes:0|g",
                b"nsq.nsqd_example_4151.mem.heap_in_use_bytes:4096|g",
                b"nsq.nsqd_example_4151.mem.heap_released_bytes:0|g",
                b"nsq.nsqd_example_4151.mem.gc_pause_usec_100:0|g",
                b"nsq.nsqd_example_4151.mem.gc_pause_usec_99:0|g",
                b"nsq.nsqd_example_4151.mem.gc_pause_usec_95:0|g",
                b"nsq.nsqd_example_4151.mem.next_gc_bytes:0|g",
                b"nsq.nsqd_example_4151.mem.gc_runs:7|c",
            ],
        )
        lines, state = self.lines(state, memory=dict(MEMORY, gc_total_runs=10))
        self.assertEqual(lines[-1], b"nsq.nsqd_example_4151.mem.gc_runs:3|c")
        self.assertEqual(state.gc_runs, 10)
        # Without memory stats the GC counter state is carried over untouched.
        _, state = self.lines(state)
        self.assertEqual(state.gc_runs, 10)


class LatencyLinesTests(LinesBase):
    overrides = {"e2e_processing_latency_percentiles": [0.99, 0.5]}

    def test_percentiles(self) -> None:
        client = LoopbackClient(self.nsqd)
        client.subscribe("t", "c", rdy=5)
        self.nsqd.get_topic("t").publish([b"a", b"b"])
        self.nsqd.run_dispatch()
        self.clock.advance(2)
        for message in client.messages():
            client.command("FIN " + message.id.decode())
        lines, _ = self.lines(CounterState())
        latency = [line for line in lines if b"e2e" in line]
        self.assertEqual(
            latency,
            [
                b"nsq.nsqd_example_4151.topic.t.e2e_processing_latency_99:2000000000|g",
                b"nsq.nsqd_example_4151.topic.t.e2e_processing_latency_50:2000000000|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.e2e_processing_latency_99:2000000000|g",
                b"nsq.nsqd_example_4151.topic.t.channel.c.e2e_processing_latency_50:2000000000|g",
            ],
        )
        # They follow the topic's gauges, and the channel's.
        self.assertEqual(lines.index(latency[0]), 4)
        self.assertEqual(lines[-3:-2], [b"nsq.nsqd_example_4151.topic.t.channel.c.clients:1|g"])


class ServiceTests(SynchronousTestCase):
    def make(self, **overrides: Any) -> tuple[NSQD, FakeUDPReactor, StatsdService]:
        reactor = FakeUDPReactor()
        reactor.advance(START)
        options: dict[str, Any] = {
            "broadcast_address": "nsqd.example",
            "statsd_address": "127.0.0.1:8125",
            "statsd_interval": 11.0,
            "statsd_mem_stats": False,
        }
        options.update(overrides)
        nsqd = make_nsqd(reactor, **options)
        nsqd.http_port = 4151
        service = StatsdService(nsqd, None, reactor, memory=lambda: dict(MEMORY))
        return nsqd, reactor, service

    def test_invalid_settings(self) -> None:
        nsqd = make_nsqd(Clock(), statsd_address="nope")
        self.assertRaises(ValueError, StatsdService, nsqd, None, Clock())
        nsqd = make_nsqd(Clock(), statsd_address="127.0.0.1:8125", statsd_interval=0.0)
        self.assertRaises(ValueError, StatsdService, nsqd, None, Clock())

    def test_first_push_after_one_interval(self) -> None:
        nsqd, reactor, service = self.make()
        nsqd.get_topic("t").publish([b"abc"])
        service.startService()
        self.assertEqual(reactor.ports[0].interface, "")
        reactor.advance(10.9)
        self.assertEqual((service.pushes, reactor.sent()), (0, []))
        reactor.advance(0.1)
        self.assertEqual(service.pushes, 1)
        self.assertEqual(
            reactor.sent(),
            [
                b"nsq.nsqd_example_4151.topic.t.message_count:1|c\n"
                b"nsq.nsqd_example_4151.topic.t.message_bytes:3|c\n"
                b"nsq.nsqd_example_4151.topic.t.depth:1|g\n"
                b"nsq.nsqd_example_4151.topic.t.backend_depth:0|g\n"
            ],
        )
        self.assertEqual(reactor.transport.written, [])
        reactor.advance(11)
        self.assertEqual(
            reactor.sent()[0].split(b"\n")[0], b"nsq.nsqd_example_4151.topic.t.message_count:0|c"
        )
        self.successResultOf(service.stopService())

    def test_packets_spread_over_interval(self) -> None:
        # 12 lines of ~50 bytes in 120-byte packets: 6 packets of 2 lines, one every (11-1)/6 s.
        nsqd, reactor, service = self.make(statsd_udp_packet_size=120)
        for name in ("t1", "t2", "t3"):
            nsqd.get_topic(name)
        service.startService()
        reactor.advance(11)
        packets = reactor.sent()
        self.assertEqual(len(packets), 1)
        self.assertEqual(packets[0].count(b"\n"), 2)
        times = [reactor.seconds()]
        for _ in range(5):
            self.assertEqual(reactor.sent(), [])
            reactor.advance(10 / 6)
            times.append(reactor.seconds())
            self.assertEqual(len(reactor.sent()), 1)
        self.assertEqual(reactor.getDelayedCalls()[0].getTime(), START + 22)
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        self.assertAlmostEqual(times[-1] - times[0], 10 * 5 / 6, places=5)
        self.successResultOf(service.stopService())

    def test_every_packet_fits(self) -> None:
        nsqd, reactor, service = self.make(statsd_udp_packet_size=508, statsd_interval=1.0)
        for index in range(30):
            nsqd.get_topic(f"topic-{index:02d}").get_channel("channel")
        service.startService()
        reactor.advance(1)
        # With an interval of 1s there is nothing to spread over: everything goes at once.
        packets = reactor.sent()
        self.assertGreater(len(packets), 10)
        self.assertTrue(all(len(packet) <= 508 for packet in packets))
        lines = b"".join(packets).splitlines()
        self.assertEqual(len(lines), 30 * 12)
        self.assertEqual(len(set(lines)), len(lines))
        self.successResultOf(service.stopService())

    def test_unsent_packets_go_before_next_push(self) -> None:
        nsqd, reactor, service = self.make(statsd_udp_packet_size=60)
        nsqd.get_topic("t")
        service.startService()
        reactor.advance(11)
        self.assertEqual(len(reactor.sent()), 1)
        # The next push comes early (a manual push): the rest of the first goes at once, first.
        service.push()
        self.assertEqual(
            reactor.sent(),
            [
                b"nsq.nsqd_example_4151.topic.t.message_bytes:0|c\n",
                b"nsq.nsqd_example_4151.topic.t.depth:0|g\n",
                b"nsq.nsqd_example_4151.topic.t.backend_depth:0|g\n",
                b"nsq.nsqd_example_4151.topic.t.message_count:0|c\n",
            ],
        )
        self.successResultOf(service.stopService())

    def test_memory_and_exclusion_options(self) -> None:
        nsqd, reactor, service = self.make(statsd_mem_stats=True, statsd_exclude_ephemeral=True)
        nsqd.get_topic("gone#ephemeral")
        service.startService()
        reactor.advance(11)
        lines = b"".join(reactor.sent()).splitlines()
        self.assertEqual(lines[0], b"nsq.nsqd_example_4151.mem.heap_objects:11|g")
        self.assertEqual(lines[-1], b"nsq.nsqd_example_4151.mem.gc_runs:7|c")
        self.successResultOf(service.stopService())

    def test_prefix_uses_broadcast_port(self) -> None:
        _, reactor, service = self.make(
            statsd_prefix="stats.%s.nsqd", broadcast_http_port=80, statsd_mem_stats=True
        )
        service.startService()
        reactor.advance(11)
        self.assertTrue(reactor.sent()[0].startswith(b"stats.nsqd_example_80.nsqd.mem.heap_objects:11|g\n"))
        self.successResultOf(service.stopService())

    def test_stop(self) -> None:
        nsqd, reactor, service = self.make(statsd_udp_packet_size=60)
        nsqd.get_topic("t")
        service.startService()
        reactor.advance(11)
        reactor.sent()
        self.successResultOf(service.stopService())
        self.assertFalse(reactor.ports[0].listening)
        self.assertEqual(reactor.getDelayedCalls(), [])
        reactor.advance(100)
        self.assertEqual(reactor.sent(), [])

    def test_hostname_resolved_each_push(self) -> None:
        nsqd, reactor, service = self.make(statsd_address="statsd.local:8125")
        nsqd.get_topic("t")
        service.startService()
        reactor.advance(11)
        self.assertEqual(reactor.sent(), [])
        name, lookup = reactor.lookups.pop()
        self.assertEqual(name, "statsd.local")
        lookup.callback("10.1.2.3")
        self.assertEqual([address for _, address in reactor.transport.written], [("10.1.2.3", 8125)])
        reactor.sent()
        reactor.advance(11)
        _, lookup = reactor.lookups.pop()
        lookup.callback("10.9.9.9")
        self.assertEqual([address for _, address in reactor.transport.written], [("10.9.9.9", 8125)])
        self.successResultOf(service.stopService())

    def test_failed_lookup_drops_push(self) -> None:
        nsqd, reactor, service = self.make(statsd_address="statsd.local:8125")
        nsqd.get_topic("t")
        service.startService()
        reactor.advance(11)
        _, lookup = reactor.lookups.pop()
        lookup.errback(OSError("no such host"))
        self.assertEqual(reactor.sent(), [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        reactor.advance(11)
        _, lookup = reactor.lookups.pop()
        lookup.callback("10.1.2.3")
        self.assertEqual(len(reactor.sent()), 1)
        self.successResultOf(service.stopService())

    def test_lookup_after_stop_ignored(self) -> None:
        _, reactor, service = self.make(statsd_address="statsd.local:8125")
        service.startService()
        reactor.advance(11)
        _, lookup = reactor.lookups.pop()
        self.successResultOf(service.stopService())
        lookup.callback("10.1.2.3")
        self.assertEqual(reactor.sent(), [])

    def test_ipv6(self) -> None:
        nsqd, reactor, service = self.make(statsd_address="[::1]:8125")
        nsqd.get_topic("t")
        service.startService()
        self.assertEqual(reactor.ports[0].interface, "::")
        reactor.advance(11)
        self.assertEqual(reactor.transport.written[0][1], ("::1", 8125))
        self.successResultOf(service.stopService())

    def test_send_error_logged_not_raised(self) -> None:
        nsqd, reactor, service = self.make()
        nsqd.get_topic("t")
        service.startService()
        reactor.transport.refuse = ConnectionRefusedError(111, "Connection refused")
        reactor.advance(11)
        self.assertEqual(service.pushes, 1)
        reactor.transport.refuse = None
        reactor.advance(11)
        self.assertEqual(len(reactor.sent()), 1)
        self.successResultOf(service.stopService())


class ProtocolTests(SynchronousTestCase):
    def test_unconnected_send(self) -> None:
        self.assertFalse(StatsdProtocol().send(b"x", ("127.0.0.1", 1)))

    def test_replies_ignored(self) -> None:
        protocol = StatsdProtocol()
        protocol.datagramReceived(b"anything", ("127.0.0.1", 1))
        self.assertIsNone(protocol.transport)


class AttachTests(SynchronousTestCase):
    def test_attach(self) -> None:
        parent = MultiService()
        reactor = FakeUDPReactor()
        nsqd = make_nsqd(reactor, statsd_address="127.0.0.1:8125")
        first = attach_statsd(parent, nsqd, None, reactor)
        assert first is not None
        self.assertIs(parent.getServiceNamed("statsd"), first)
        # A second start replaces the first one's service.
        second = attach_statsd(parent, nsqd, None, reactor)
        self.assertIs(parent.getServiceNamed("statsd"), second)
        self.assertEqual(list(parent), [second])
        parent.startService()
        self.assertTrue(reactor.ports[0].listening)
        self.successResultOf(parent.stopService())
        self.assertFalse(reactor.ports[0].listening)

    def test_not_configured(self) -> None:
        parent = MultiService()
        self.assertIsNone(attach_statsd(parent, make_nsqd(Clock()), None, Clock()))
        self.assertEqual(list(parent), [])

    def test_bad_address(self) -> None:
        parent = MultiService()
        nsqd = make_nsqd(Clock(), statsd_address="localhost")
        self.assertRaises(ValueError, attach_statsd, parent, nsqd, None, Clock())
        self.assertEqual(list(parent), [])


class FailingPushTests(SynchronousTestCase):
    def test_failed_push_logged_and_loop_goes_on(self) -> None:
        reactor = FakeUDPReactor()
        nsqd = make_nsqd(reactor, statsd_address="127.0.0.1:8125", statsd_interval=5.0)
        calls: list[int] = []

        def memory() -> dict[str, int]:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("stat unreadable")
            return dict(MEMORY)

        service = StatsdService(nsqd, None, reactor, memory=memory)
        service.startService()
        reactor.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(reactor.sent(), [])
        reactor.advance(5)
        self.assertEqual((service.pushes, len(reactor.sent())), (2, 1))
        self.successResultOf(service.stopService())
