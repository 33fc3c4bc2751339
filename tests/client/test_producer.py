"""
L{twisted_nsq.client.producer}: lazy connection, pipelining, FIFO replies, the pool of connections
(round-robin, waiting for readiness, losing one, reconnecting with backoff) and stopping, with a
fake endpoint, in-memory transports and a memory clock.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_nsq.client.connection import ConnectionClosedError, NSQConnection, NSQResponseError
from twisted_nsq.client.producer import Producer, ProducerStoppedError, parse_address
from twisted_nsq.wire.frames import OK_FRAME, error_frame, response_frame

ADDRESS = IPv4Address("TCP", "127.0.0.1", 4150)
IDENTIFY_REPLY = response_frame(
    json.dumps({"max_rdy_count": 2500, "tls_v1": False, "snappy": False, "deflate": False}).encode()
)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connects only when the test says so, or refuses at once when told to."""

    def __init__(self, address: str, refuse: bool) -> None:
        self.address = address
        self.refuse = refuse
        self.factory: IProtocolFactory | None = None
        self.result: Deferred[IProtocol] = Deferred()

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if self.refuse:
            return fail(ConnectionRefusedError(self.address))
        self.factory = protocolFactory
        return self.result

    def complete(self) -> tuple[NSQConnection, StringTransport]:
        """Connect the protocol to a transport and fire the connect Deferred."""
        assert self.factory is not None
        protocol = self.factory.buildProtocol(ADDRESS)
        assert isinstance(protocol, NSQConnection)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.result.callback(protocol)
        return protocol, transport


class Endpoints:
    def __init__(self) -> None:
        self.made: list[FakeEndpoint] = []
        self.refused: set[str] = set()

    def __call__(self, address: str) -> IStreamClientEndpoint:
        endpoint = FakeEndpoint(address, address in self.refused)
        self.made.append(endpoint)
        return endpoint


def ready(endpoint: FakeEndpoint) -> tuple[NSQConnection, StringTransport]:
    """Connect and answer IDENTIFY; the transport then holds only what was sent after IDENTIFY."""
    connection, transport = endpoint.complete()
    transport.clear()
    connection.dataReceived(IDENTIFY_REPLY)
    return connection, transport


class ProducerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.endpoints = Endpoints()
        self.clock = MemoryReactorClock()
        self.producer = Producer(
            ["10.0.0.1:4150", "10.0.0.2:4150"],
            reactor=self.clock,
            endpoint_factory=self.endpoints,
            client_id="p",
            hostname="host",
        )

    def test_lazy_connect(self) -> None:
        """Nothing connects until the first publish, which connects to every address."""
        self.assertEqual(self.endpoints.made, [])
        self.assertIsNone(self.producer.connection)
        self.producer.publish("t", b"1")
        self.assertEqual([e.address for e in self.endpoints.made], ["10.0.0.1:4150", "10.0.0.2:4150"])
        self.producer.publish("t", b"2")
        self.assertEqual(len(self.endpoints.made), 2)

    def test_pipelined_while_connecting(self) -> None:
        """
        Publishes made while connecting are all sent, in order, once the handshake is done, on the
        one connection; replies are matched in order.
        """
        first = self.producer.publish("t", b"one")
        second = self.producer.multi_publish("t", [b"a", b"b"])
        third = self.producer.deferred_publish("t", b"later", 250)
        self.assertEqual(len(self.endpoints.made), 2)
        connection, transport = self.endpoints.made[0].complete()
        self.assertTrue(transport.value().startswith(b"  V2IDENTIFY\n"))
        transport.clear()
        connection.dataReceived(IDENTIFY_REPLY)
        self.assertEqual(
            transport.value(),
            b"PUB t\n\x00\x00\x00\x03one"
            b"MPUB t\n\x00\x00\x00\x0e\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01b"
            b"DPUB t 250\n\x00\x00\x00\x05later",
        )
        self.assertIs(self.producer.connection, connection)
        fourth = self.producer.publish("t", b"four")
        self.assertTrue(transport.value().endswith(b"PUB t\n\x00\x00\x00\x04four"))
        connection.dataReceived(OK_FRAME * 3)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(third))
        self.assertNoResult(fourth)
        self.assertEqual(len(self.endpoints.made), 2)

    def test_error_code(self) -> None:
        """An error reply fails that publish with nsqd's code; the failed connection is dropped."""
        published = self.producer.publish("t", b"x")
        connection, transport = ready(self.endpoints.made[0])
        connection.dataReceived(error_frame(b"E_BAD_MESSAGE PUB message too big 5 > 4"))
        error = self.failureResultOf(published, NSQResponseError).value
        assert isinstance(error, NSQResponseError)
        self.assertEqual(error.code, "E_BAD_MESSAGE")
        self.assertTrue(transport.disconnecting)

    def test_reconnect_lazily(self) -> None:
        """
        A lost connection fails the publishes waiting on it; the next publish connects to that
        address again, at once, and the pool keeps serving meanwhile.
        """
        published = self.producer.publish("t", b"x")
        first, _ = ready(self.endpoints.made[0])
        second, second_transport = ready(self.endpoints.made[1])
        first.connectionLost(Failure(ConnectionClosedError("reset")))
        self.failureResultOf(published, ConnectionClosedError)
        self.assertIs(self.producer.connection, second)
        self.assertEqual(len(self.endpoints.made), 2)
        again = self.producer.publish("t", b"y")
        self.assertEqual([e.address for e in self.endpoints.made][2:], ["10.0.0.1:4150"])
        self.assertEqual(second_transport.value(), b"PUB t\n\x00\x00\x00\x01y")
        second.dataReceived(OK_FRAME)
        self.successResultOf(again)
        _, transport = ready(self.endpoints.made[2])
        self.producer.publish("t", b"z")
        self.assertEqual(transport.value(), b"PUB t\n\x00\x00\x00\x01z")

    def test_failover(self) -> None:
        """A refused address is skipped: the next one is tried for the same publish."""
        self.endpoints.refused.add("10.0.0.1:4150")
        published = self.producer.publish("t", b"x")
        self.assertEqual(len(self.endpoints.made), 2)
        connection, transport = ready(self.endpoints.made[1])
        self.assertEqual(transport.value(), b"PUB t\n\x00\x00\x00\x01x")
        connection.dataReceived(OK_FRAME)
        self.successResultOf(published)

    def test_all_refused(self) -> None:
        """When every address refuses, each waiting publish fails, once every address was tried."""
        self.endpoints.refused.update({"10.0.0.1:4150", "10.0.0.2:4150"})
        published = self.producer.publish("t", b"x")
        self.failureResultOf(published, ConnectionRefusedError)
        self.assertEqual(len(self.endpoints.made), 2)

    def test_handshake_failure(self) -> None:
        published = self.producer.publish("t", b"x")
        connection, _ = self.endpoints.made[0].complete()
        connection.dataReceived(error_frame(b"E_BAD_BODY IDENTIFY bad"))
        # The second address is tried; it fails the same way.
        connection, _ = self.endpoints.made[1].complete()
        connection.dataReceived(error_frame(b"E_BAD_BODY IDENTIFY bad"))
        error = self.failureResultOf(published, NSQResponseError).value
        assert isinstance(error, NSQResponseError)
        self.assertEqual(error.code, "E_BAD_BODY")

    def test_validation(self) -> None:
        producer = self.producer
        self.assertRaises(ValueError, producer.publish, "bad topic", b"x")
        self.assertRaises(ValueError, producer.publish, "t" * 65, b"x")
        self.assertRaises(ValueError, producer.publish, "t", b"")
        self.assertRaises(TypeError, producer.publish, "t", "text")
        self.assertRaises(ValueError, producer.multi_publish, "t", [])
        self.assertRaises(ValueError, producer.multi_publish, "t", [b"a", b""])
        self.assertRaises(ValueError, producer.deferred_publish, "t", b"x", -1)
        self.assertEqual(self.endpoints.made, [])
        self.assertRaises(ValueError, Producer, [])
        self.assertRaises(TypeError, Producer, "127.0.0.1:4150")
        self.assertRaises(ValueError, Producer, ["no-port"])
        self.assertRaises(ValueError, Producer, ["127.0.0.1:4150"], snappy=True, deflate=True)

    def test_stop(self) -> None:
        """stop closes the connection, fails waiting publishes, and fires once it is closed."""
        published = self.producer.publish("t", b"x")
        connection, transport = ready(self.endpoints.made[0])
        stopped = self.producer.stop()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(stopped)
        connection.connectionLost(Failure(ConnectionClosedError("closed")))
        self.successResultOf(stopped)
        self.failureResultOf(published, ConnectionClosedError)
        self.failureResultOf(self.producer.publish("t", b"y"), ProducerStoppedError)

    def test_stop_while_connecting(self) -> None:
        published = self.producer.publish("t", b"x")
        self.successResultOf(self.producer.stop())
        self.failureResultOf(published, ProducerStoppedError)

    def test_stop_during_handshake(self) -> None:
        published = self.producer.publish("t", b"x")
        connection, transport = self.endpoints.made[0].complete()
        stopped = self.producer.stop()
        self.failureResultOf(published, ProducerStoppedError)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionClosedError("closed")))
        self.successResultOf(stopped)
        self.assertEqual(len(self.endpoints.made), 2)

    def test_stop_idle(self) -> None:
        self.successResultOf(self.producer.stop())


THREE = ["10.0.0.1:4150", "10.0.0.2:4150", "10.0.0.3:4150"]


def pub(body: bytes) -> bytes:
    """The bytes of C{PUB t} with C{body}."""
    return b"PUB t\n" + len(body).to_bytes(4, "big") + body


class PoolTests(SynchronousTestCase):
    """The producer as a pool over three addresses."""

    def setUp(self) -> None:
        self.endpoints = Endpoints()
        self.clock = MemoryReactorClock()
        self.producer = Producer(THREE, reactor=self.clock, endpoint_factory=self.endpoints, client_id="p")

    def test_round_robin(self) -> None:
        """Publishes are spread in turn over the ready connections, each pipelined in order."""
        first = self.producer.publish("t", b"0")
        self.assertEqual([e.address for e in self.endpoints.made], THREE)
        pairs = [ready(endpoint) for endpoint in self.endpoints.made]
        published = [self.producer.publish("t", b"%d" % (n,)) for n in range(1, 7)]
        self.assertEqual(pairs[0][1].value(), pub(b"0") + pub(b"1") + pub(b"4"))
        self.assertEqual(pairs[1][1].value(), pub(b"2") + pub(b"5"))
        self.assertEqual(pairs[2][1].value(), pub(b"3") + pub(b"6"))
        self.assertEqual(len(self.endpoints.made), 3)
        pairs[1][0].dataReceived(OK_FRAME + error_frame(b"E_BAD_MESSAGE PUB bad"))
        self.successResultOf(published[1])
        self.failureResultOf(published[4], NSQResponseError)
        pairs[0][0].dataReceived(OK_FRAME * 3)
        self.successResultOf(first)
        self.successResultOf(published[0])
        self.successResultOf(published[3])
        self.assertNoResult(published[2])

    def test_waits_for_first_ready(self) -> None:
        """Publishes made while no connection is ready go, in order, to the first one that is."""
        first = self.producer.publish("t", b"a")
        second = self.producer.multi_publish("t", [b"b"])
        connection, transport = ready(self.endpoints.made[1])
        self.assertEqual(
            transport.value(), pub(b"a") + b"MPUB t\n\x00\x00\x00\x09\x00\x00\x00\x01\x00\x00\x00\x01b"
        )
        connection.dataReceived(OK_FRAME * 2)
        self.successResultOf(first)
        self.successResultOf(second)
        _, other = ready(self.endpoints.made[0])
        self.producer.publish("t", b"c")
        self.producer.publish("t", b"d")
        self.assertEqual(other.value(), pub(b"c"))
        self.assertEqual(transport.value()[-len(pub(b"d")) :], pub(b"d"))
        self.assertEqual(len(self.endpoints.made), 3)

    def test_one_lost_others_serve(self) -> None:
        """
        A lost connection fails only its own publishes; the others keep serving and the lost
        address is connected again by the next publish.
        """
        self.producer.publish("t", b"0")
        pairs = [ready(endpoint) for endpoint in self.endpoints.made]
        for _, transport in pairs:
            transport.clear()
        on = [self.producer.publish("t", b"%d" % (n,)) for n in range(3)]
        pairs[1][0].connectionLost(Failure(ConnectionClosedError("reset")))
        self.failureResultOf(on[1], ConnectionClosedError)
        self.assertNoResult(on[0])
        self.assertNoResult(on[2])
        later = [self.producer.publish("t", b"%d" % (n,)) for n in range(3, 5)]
        self.assertEqual([e.address for e in self.endpoints.made][3:], ["10.0.0.2:4150"])
        self.assertEqual(pairs[0][1].value(), pub(b"0") + pub(b"3"))
        self.assertEqual(pairs[2][1].value(), pub(b"2") + pub(b"4"))
        pairs[2][0].dataReceived(OK_FRAME * 2)
        self.successResultOf(on[2])
        self.successResultOf(later[1])
        _, transport = ready(self.endpoints.made[3])
        self.producer.publish("t", b"5")
        self.producer.publish("t", b"6")
        self.assertEqual(pairs[0][1].value(), pub(b"0") + pub(b"3") + pub(b"5"))
        self.assertEqual(transport.value(), pub(b"6"))

    def test_reconnect_backoff(self) -> None:
        """
        While others serve, an address that refuses is tried again only after its backoff, which
        doubles; when nothing serves, a publish tries every address at once.
        """
        self.endpoints.refused.add("10.0.0.2:4150")
        published = [self.producer.publish("t", b"0")]
        self.assertEqual(len(self.endpoints.made), 3)
        first, _ = ready(self.endpoints.made[0])
        third, _ = ready(self.endpoints.made[2])
        published.append(self.producer.publish("t", b"1"))
        self.assertEqual(len(self.endpoints.made), 3)
        self.clock.advance(1.0)
        published.append(self.producer.publish("t", b"2"))
        self.assertEqual([e.address for e in self.endpoints.made][3:], ["10.0.0.2:4150"])
        self.clock.advance(1.5)
        published.append(self.producer.publish("t", b"3"))
        self.assertEqual(len(self.endpoints.made), 4)
        self.clock.advance(0.5)
        published.append(self.producer.publish("t", b"4"))
        self.assertEqual([e.address for e in self.endpoints.made][4:], ["10.0.0.2:4150"])
        first.connectionLost(Failure(ConnectionClosedError("reset")))
        third.connectionLost(Failure(ConnectionClosedError("reset")))
        for lost in published:
            self.failureResultOf(lost, ConnectionClosedError)
        waiting = self.producer.publish("t", b"5")
        self.assertEqual([e.address for e in self.endpoints.made][5:], THREE)
        self.assertNoResult(waiting)
        _, transport = ready(self.endpoints.made[7])
        self.assertEqual(transport.value(), pub(b"5"))

    def test_stop_closes_all(self) -> None:
        """stop() closes every connection, ready or not, and fires once all are closed."""
        published = self.producer.publish("t", b"0")
        first, first_transport = ready(self.endpoints.made[0])
        handshaking, handshaking_transport = self.endpoints.made[1].complete()
        stopped = self.producer.stop()
        self.assertTrue(first_transport.disconnecting)
        self.assertTrue(handshaking_transport.disconnecting)
        self.assertNoResult(stopped)
        first.connectionLost(Failure(ConnectionClosedError("closed")))
        self.failureResultOf(published, ConnectionClosedError)
        self.assertNoResult(stopped)
        handshaking.connectionLost(Failure(ConnectionClosedError("closed")))
        self.successResultOf(stopped)
        self.assertIsNone(self.producer.connection)
        self.failureResultOf(self.producer.publish("t", b"1"), ProducerStoppedError)
        self.assertEqual(len(self.endpoints.made), 3)


class DefaultEndpointTests(SynchronousTestCase):
    def test_tcp_on_injected_reactor(self) -> None:
        """The default endpoint connects with the injected reactor, lazily."""
        reactor = MemoryReactorClock()
        producer = Producer(["127.0.0.1:4150"], reactor=reactor)
        self.assertEqual(reactor.tcpClients, [])
        published = producer.publish("t", b"x")
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 4150))
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"  V2IDENTIFY\n"))
        self.assertNoResult(published)
        stopped = producer.stop()
        self.failureResultOf(published, ProducerStoppedError)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionClosedError("closed")))
        self.assertIsNone(self.successResultOf(stopped))

    def test_parse_address(self) -> None:
        self.assertEqual(parse_address("[::1]:4150"), ("::1", 4150))
        self.assertEqual(parse_address("nsqd.local:4150"), ("nsqd.local", 4150))
        self.assertRaises(ValueError, parse_address, "host:0")
        self.assertRaises(ValueError, parse_address, ":4150")
