"""
Tests for L{twisted_nsq.nsqd.lookup}: nsqd's links to nsqlookupd on a C{MemoryReactorClock}
(connect sequence, REGISTER/UNREGISTER, PING, reply deadlines, reconnects, run-time address
changes) and channel pre-creation through C{StubTreq} against a fake lookupd HTTP API.
"""

from __future__ import annotations

import json
import struct
from typing import Any, cast

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.application.internet import backoffPolicy
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.lookup import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    PING_INTERVAL,
    LookupService,
    default_endpoint_factory,
    split_address,
)
from twisted_nsq.nsqd.metadata import ChannelMetadata, Metadata, TopicMetadata
from twisted_nsq.testing import make_nsqd

LOOKUPD = "127.0.0.1:4160"
HOSTNAME = "nsqd-host"
IDENTIFY_BODY = (
    b'{"broadcast_address":"nsqd.example","hostname":"nsqd-host","http_port":4151,'
    b'"tcp_port":4150,"version":"1.3.0"}'
)
#: The first reconnect delay with no jitter: 1.0 * 1.5 ** 1.
RETRY_DELAY = 1.5


def sized(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def identify_reply(broadcast_address: str = "lookupd.example", http_port: int = 4161) -> bytes:
    return json.dumps(
        {
            "tcp_port": 4160,
            "http_port": http_port,
            "version": "1.3.0",
            "broadcast_address": broadcast_address,
            "hostname": "lookupd-host",
        }
    ).encode()


def connect_sequence(*registrations: bytes) -> bytes:
    return b"  V1" + b"IDENTIFY\n" + sized(IDENTIFY_BODY) + b"".join(registrations)


class FakeLookupdHTTP(Resource):
    """lookupd's C{/channels}, answering per host (so two lookupds can differ), now or later."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        #: host -> topic -> channels
        self.channels: dict[str, dict[str, list[str]]] = {}
        self.failing: set[str] = set()
        self.uris: list[bytes] = []
        self.accepts: list[bytes | None] = []
        self.hold = False
        self.pending: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        assert request.uri is not None
        self.uris.append(request.uri)
        self.accepts.append(request.getHeader(b"accept"))
        if self.hold:
            self.pending.append(request)
            return NOT_DONE_YET
        return self._answer(request)

    def _answer(self, request: Request) -> bytes:
        host = request.getRequestHostname().decode()
        request.setHeader(b"X-NSQ-Content-Type", b"nsq; version=1.0")
        if host in self.failing:
            request.setResponseCode(500)
            return b'{"message":"INTERNAL_ERROR"}'
        if request.path != b"/channels":
            request.setResponseCode(404)
            return b'{"message":"NOT_FOUND"}'
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        topic = request.args[b"topic"][0].decode()
        channels = self.channels.get(host, {}).get(topic, [])
        return json.dumps({"channels": channels}).encode()

    def answer_pending(self) -> None:
        pending, self.pending = self.pending, []
        for request in pending:
            request.write(self._answer(request))
            request.finish()


class AbortableTransport(StringTransport):
    """Records whether the connection was aborted rather than closed politely."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Connection:
    """The connection a link made, accepted on a C{StringTransport}."""

    def __init__(self, reactor: MemoryReactorClock, index: int) -> None:
        host, port, factory, timeout, _ = reactor.tcpClients[index]
        self.host = host
        self.port = port
        self.timeout = timeout
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        self.protocol: IProtocol = protocol
        self.transport = AbortableTransport()
        protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        """What nsqd wrote since the last call."""
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def reply(self, *replies: bytes) -> None:
        self.protocol.dataReceived(b"".join(sized(reply) for reply in replies))

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Harness:
    """An nsqd core, its lookup service, a memory reactor and the fake lookupd HTTP API."""

    def __init__(self, addresses: tuple[str, ...] = (LOOKUPD,), **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        values: dict[str, Any] = {
            "lookupd_tcp_addresses": list(addresses),
            "broadcast_address": "nsqd.example",
        }
        values.update(options)
        self.nsqd = make_nsqd(self.reactor, **values)
        self.nsqd.tcp_port = 4150
        self.nsqd.http_port = 4151
        self.http = FakeLookupdHTTP()
        self.stub = StubTreq(self.http)
        self.service = LookupService(
            self.nsqd,
            self.reactor,
            default_endpoint_factory(self.reactor),
            cast(HTTPClient, self.stub),
            HOSTNAME,
            retry_policy=backoffPolicy(jitter=lambda: 0.0),
        )

    def start(self) -> None:
        self.service.startService()

    def accept(self, index: int = -1) -> Connection:
        return Connection(self.reactor, index)

    def identified(self, registrations: int = 0, **info: Any) -> Connection:
        """Start, accept the connection, answer IDENTIFY and the REGISTERs; return the connection."""
        self.start()
        connection = self.accept()
        connection.reply(identify_reply(**info), *[b"OK"] * registrations)
        connection.sent()
        return connection


class ConnectTests(SynchronousTestCase):
    """What every (re)connection sends, and what lookupd's IDENTIFY reply teaches nsqd."""

    def test_split_address(self) -> None:
        self.assertEqual(split_address("127.0.0.1:4160"), ("127.0.0.1", 4160))
        self.assertEqual(split_address("lookupd:4160"), ("lookupd", 4160))
        self.assertEqual(split_address("[::1]:4160"), ("::1", 4160))
        self.assertEqual(split_address(":4160"), ("127.0.0.1", 4160))
        for bad in ("lookupd", "lookupd:", "lookupd:x", "::1:4160", "[::1]4160", "h:0", "h:70000"):
            self.assertRaises(ValueError, split_address, bad)

    def test_connects_with_one_second_timeout(self) -> None:
        harness = Harness()
        harness.start()
        self.assertEqual(len(harness.reactor.tcpClients), 1)
        host, port, _, timeout, _ = harness.reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 4160, CONNECT_TIMEOUT))
        self.assertEqual(CONNECT_TIMEOUT, 1.0)

    def test_sequence(self) -> None:
        """Magic, IDENTIFY, then REGISTER per channel or per channel-less topic, ephemeral included."""
        harness = Harness()
        topic = harness.nsqd.get_topic("t1")
        topic.get_channel("c1")
        topic.get_channel("c2#ephemeral")
        harness.nsqd.get_topic("t2")
        harness.nsqd.get_topic("t3#ephemeral")
        harness.start()
        connection = harness.accept()
        self.assertEqual(
            connection.sent(),
            connect_sequence(
                b"REGISTER t1 c1\n",
                b"REGISTER t1 c2#ephemeral\n",
                b"REGISTER t2\n",
                b"REGISTER t3#ephemeral\n",
            ),
        )
        connection.reply(identify_reply(), b"OK", b"OK", b"OK")
        self.assertFalse(connection.closed)
        peer = harness.service.peers[LOOKUPD]
        self.assertIsNotNone(peer.info)
        assert peer.info is not None
        self.assertEqual((peer.info.broadcast_address, peer.info.http_port), ("lookupd.example", 4161))
        self.assertEqual(harness.service.lookupd_http_addresses(), ["lookupd.example:4161"])
        # The last REGISTER's reply is still due.
        harness.reactor.advance(COMMAND_TIMEOUT)
        self.assertTrue(connection.closed)

    def test_broadcast_ports(self) -> None:
        """--broadcast-tcp-port/--broadcast-http-port replace the bound ports."""
        harness = Harness(broadcast_tcp_port=5150, broadcast_http_port=5151)
        harness.start()
        body = json.loads(harness.accept().sent()[len(b"  V1IDENTIFY\n") + 4 :])
        self.assertEqual((body["tcp_port"], body["http_port"]), (5150, 5151))

    def test_unix_listener_port(self) -> None:
        """A unix socket listener has no port: nsqd identifies with 0, as Go does."""
        harness = Harness()
        harness.nsqd.tcp_port = -1
        harness.start()
        body = json.loads(harness.accept().sent()[len(b"  V1IDENTIFY\n") + 4 :])
        self.assertEqual(body["tcp_port"], 0)

    def test_identify_error_closes(self) -> None:
        harness = Harness()
        harness.start()
        connection = harness.accept()
        connection.reply(b"E_BAD_BODY IDENTIFY missing fields")
        self.assertTrue(connection.closed)
        self.assertIsNone(harness.service.peers[LOOKUPD].info)

    def test_identify_reply_not_json_closes(self) -> None:
        harness = Harness()
        harness.start()
        connection = harness.accept()
        connection.reply(b"OK")
        self.assertTrue(connection.closed)

    def test_oversized_reply_closes(self) -> None:
        """A reply above --max-body-size is refused from its size alone."""
        harness = Harness(max_body_size=64)
        harness.start()
        connection = harness.accept()
        connection.protocol.dataReceived(struct.pack(">i", 65))
        self.assertTrue(connection.closed)

    def test_unexpected_reply_closes(self) -> None:
        connection = Harness().identified()
        connection.reply(b"OK")
        self.assertTrue(connection.closed)

    def test_connect_failure_retries(self) -> None:
        harness = Harness()
        harness.start()
        _, _, factory, _, _ = harness.reactor.tcpClients[0]
        connector = harness.reactor.connectors[0]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        harness.reactor.advance(RETRY_DELAY)
        self.assertEqual(len(harness.reactor.tcpClients), 2)
        self.assertEqual(harness.accept().sent(), connect_sequence())

    def test_invalid_address_skipped(self) -> None:
        harness = Harness(addresses=("no-port", LOOKUPD))
        harness.start()
        self.assertEqual(list(harness.service.peers), [LOOKUPD])
        self.assertEqual(len(harness.reactor.tcpClients), 1)


class ChangeTests(SynchronousTestCase):
    """REGISTER and UNREGISTER as topics and channels come and go."""

    def test_register_and_unregister(self) -> None:
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        nsqd = harness.nsqd
        topic = nsqd.get_topic("t")
        self.assertEqual(connection.sent(), b"REGISTER t\n")
        topic.get_channel("c")
        self.assertEqual(connection.sent(), b"REGISTER t c\n")
        topic.delete_channel("c")
        self.assertEqual(connection.sent(), b"UNREGISTER t c\n")
        nsqd.delete_topic("t")
        self.assertEqual(connection.sent(), b"UNREGISTER t\n")
        connection.reply(b"OK", b"OK", b"OK", b"OK")
        harness.reactor.advance(COMMAND_TIMEOUT)
        self.assertFalse(connection.closed)

    def test_topic_deletion_unregisters_its_channels(self) -> None:
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        topic = harness.nsqd.get_topic("t")
        topic.get_channel("a")
        topic.get_channel("b")
        connection.sent()
        harness.nsqd.delete_topic("t")
        self.assertEqual(connection.sent(), b"UNREGISTER t a\nUNREGISTER t b\nUNREGISTER t\n")

    def test_ephemeral_channel_last_client(self) -> None:
        """An ephemeral channel deleted with its last client is unregistered, and so is its topic."""
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        topic = harness.nsqd.get_topic("e#ephemeral")
        channel = topic.get_channel("c#ephemeral")
        connection.sent()
        harness.nsqd.delete_ephemeral_channel(channel)
        self.assertEqual(connection.sent(), b"UNREGISTER e#ephemeral c#ephemeral\nUNREGISTER e#ephemeral\n")

    def test_change_while_disconnected_is_registered_on_connect(self) -> None:
        harness = Harness()
        harness.start()
        harness.nsqd.get_topic("early").get_channel("c")
        connection = harness.accept()
        self.assertEqual(connection.sent(), connect_sequence(b"REGISTER early c\n"))

    def test_pipelined_replies_each_get_a_second(self) -> None:
        """Replies are matched in order; each may take up to 1 s after the one before."""
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        for name in ("a", "b", "c"):
            harness.nsqd.get_topic(name)
        for _ in range(3):
            harness.reactor.advance(COMMAND_TIMEOUT * 0.9)
            self.assertFalse(connection.closed)
            connection.reply(b"OK")
        harness.reactor.advance(COMMAND_TIMEOUT * 10)
        self.assertFalse(connection.closed)

    def test_error_reply_closes(self) -> None:
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        harness.nsqd.get_topic("t")
        connection.reply(b"E_INVALID client must IDENTIFY")
        self.assertTrue(connection.closed)


class PingTests(SynchronousTestCase):
    """A PING every 15 s; a missing reply closes the link, and the reconnect registers everything."""

    def test_ping_every_15_seconds(self) -> None:
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        harness.reactor.advance(PING_INTERVAL - 0.1)
        self.assertEqual(connection.sent(), b"")
        harness.reactor.advance(0.1)
        self.assertEqual(connection.sent(), b"PING\n")
        connection.reply(b"OK")
        harness.reactor.advance(PING_INTERVAL)
        self.assertEqual(connection.sent(), b"PING\n")
        connection.reply(b"OK")
        self.assertFalse(connection.closed)

    def test_missing_reply_closes_and_reconnect_registers(self) -> None:
        harness = Harness()
        harness.nsqd.get_topic("t").get_channel("c")
        connection = harness.identified(registrations=1, broadcast_address="")
        harness.nsqd.get_topic("t2")
        connection.reply(b"OK")
        harness.reactor.advance(PING_INTERVAL)
        self.assertEqual(connection.sent(), b"REGISTER t2\nPING\n")
        harness.reactor.advance(COMMAND_TIMEOUT - 0.01)
        self.assertFalse(connection.closed)
        harness.reactor.advance(0.01)
        self.assertTrue(connection.closed)
        self.assertTrue(connection.transport.aborted)
        connection.lose()
        self.assertEqual(len(harness.reactor.tcpClients), 1)
        harness.reactor.advance(RETRY_DELAY)
        self.assertEqual(len(harness.reactor.tcpClients), 2)
        again = harness.accept()
        self.assertEqual(again.sent(), connect_sequence(b"REGISTER t c\n", b"REGISTER t2\n"))
        # The old connection's PINGs stopped with it.
        harness.reactor.advance(PING_INTERVAL)
        self.assertEqual(connection.sent(), b"")

    def test_lookupd_closing_reconnects(self) -> None:
        harness = Harness()
        connection = harness.identified(broadcast_address="")
        connection.lose()
        harness.nsqd.get_topic("t")
        harness.reactor.advance(RETRY_DELAY)
        self.assertEqual(harness.accept().sent(), connect_sequence(b"REGISTER t\n"))


class AddressTests(SynchronousTestCase):
    """Peers added and removed at run time (PUT /config/nsqlookupd_tcp_addresses)."""

    def test_set_addresses(self) -> None:
        harness = Harness()
        first = harness.identified()
        harness.service.set_addresses([LOOKUPD, "127.0.0.1:4260", LOOKUPD])
        self.assertEqual(list(harness.service.peers), [LOOKUPD, "127.0.0.1:4260"])
        self.assertEqual(len(harness.reactor.tcpClients), 2)
        second = harness.accept()
        self.assertEqual((second.host, second.port), ("127.0.0.1", 4260))
        self.assertEqual(second.sent(), connect_sequence())
        harness.service.set_addresses(["127.0.0.1:4260"])
        self.assertEqual(list(harness.service.peers), ["127.0.0.1:4260"])
        self.assertTrue(first.closed)
        self.assertFalse(second.closed)
        first.lose()
        harness.reactor.advance(60)
        self.assertEqual(len(harness.reactor.tcpClients), 2)
        self.assertEqual(len(list(harness.service)), 1)

    def test_nsqd_delegates_while_running(self) -> None:
        harness = Harness()
        harness.nsqd.lookupd_addresses_changed(["127.0.0.1:4260"])
        self.assertEqual(harness.service.peers, {})
        harness.start()
        harness.nsqd.lookupd_addresses_changed(["127.0.0.1:4260"])
        self.assertEqual(list(harness.service.peers), ["127.0.0.1:4260"])

    def test_http_put_config(self) -> None:
        harness = Harness()
        harness.start()
        stub = cast(HTTPClient, StubTreq(NSQDHTTP(harness.nsqd, hostname=lambda: "h").resource()))
        response = self.successResultOf(
            stub.put("http://nsqd/config/nsqlookupd_tcp_addresses", data=b'["127.0.0.1:4360"]')
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(list(harness.service.peers), ["127.0.0.1:4360"])
        host, port, _, _, _ = harness.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("127.0.0.1", 4360))


class StopTests(SynchronousTestCase):
    """Stopping closes the links without UNREGISTER (Go sends none at exit)."""

    def test_stop(self) -> None:
        harness = Harness()
        harness.nsqd.get_topic("t")
        connection = harness.identified(registrations=1, broadcast_address="")
        stopped = harness.service.stopService()
        self.assertTrue(connection.closed)
        self.assertEqual(connection.sent(), b"")
        self.assertNoResult(stopped)
        connection.lose()
        self.successResultOf(stopped)
        self.assertNotIn(harness.service, harness.nsqd.observers)
        self.assertIsNone(harness.nsqd.on_lookupd_addresses)
        # Later changes go nowhere, and nothing reconnects.
        harness.nsqd.delete_topic("t")
        harness.reactor.advance(60)
        self.assertEqual(connection.sent(), b"")
        self.assertEqual(len(harness.reactor.tcpClients), 1)


class PrecreateTests(SynchronousTestCase):
    """A new topic asks every identified lookupd for its channels and creates them."""

    def test_precreates_non_ephemeral_channels(self) -> None:
        harness = Harness()
        harness.http.channels["lookupd.example"] = {"t": ["b", "a#ephemeral", "a"]}
        connection = harness.identified()
        topic = harness.nsqd.get_topic("t")
        harness.stub.flush()
        self.assertEqual(harness.http.uris, [b"/channels?topic=t"])
        self.assertEqual(harness.http.accepts, [b"application/vnd.nsq; version=1.0"])
        self.assertEqual(list(topic.channels), ["a", "b"])
        self.assertEqual(connection.sent(), b"REGISTER t\nREGISTER t a\nREGISTER t b\n")
        self.assertTrue(topic.flowing)

    def test_topic_name_is_query_escaped(self) -> None:
        harness = Harness()
        harness.identified()
        harness.nsqd.get_topic("t#ephemeral")
        harness.stub.flush()
        self.assertEqual(harness.http.uris, [b"/channels?topic=t%23ephemeral"])

    def test_publish_during_hold_reaches_precreated_channels(self) -> None:
        """The publisher is answered at once; its messages wait at the topic until the channels exist."""
        harness = Harness()
        harness.http.channels["lookupd.example"] = {"t": ["a", "b"]}
        harness.http.hold = True
        harness.identified()
        topic = harness.nsqd.get_topic("t")
        topic.publish([b"one"])
        topic.get_channel("sub")
        topic.publish([b"two", b"three"])
        harness.stub.flush()
        self.assertEqual(len(harness.http.pending), 1)
        self.assertFalse(topic.flowing)
        self.assertEqual(topic.depth(), 3)
        self.assertEqual(topic.channels["sub"].depth(), 0)
        self.assertFalse(topic.paused)
        harness.http.answer_pending()
        harness.stub.flush()
        self.assertEqual(sorted(topic.channels), ["a", "b", "sub"])
        self.assertEqual(topic.depth(), 0)
        for channel in topic.channels.values():
            self.assertEqual(channel.depth(), 3, channel.name)
        topic.publish([b"four"])
        self.assertEqual(topic.channels["a"].depth(), 4)

    def test_error_releases(self) -> None:
        harness = Harness()
        harness.http.failing.add("lookupd.example")
        harness.identified()
        topic = harness.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.publish([b"m"])
        harness.stub.flush()
        self.assertEqual(list(topic.channels), ["c"])
        self.assertTrue(topic.flowing)
        self.assertEqual(topic.channels["c"].depth(), 1)

    def test_timeout_releases(self) -> None:
        harness = Harness(http_client_request_timeout=3.0)
        harness.http.hold = True
        harness.identified()
        topic = harness.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.publish([b"m"])
        harness.stub.flush()
        harness.reactor.advance(2.9)
        self.assertFalse(topic.flowing)
        harness.reactor.advance(0.1)
        self.assertTrue(topic.flowing)
        self.assertEqual(topic.channels["c"].depth(), 1)

    def test_union_of_lookupds_some_failing(self) -> None:
        harness = Harness(addresses=(LOOKUPD, "127.0.0.1:4260", "127.0.0.1:4360"))
        harness.http.channels["one"] = {"t": ["x", "y"]}
        harness.http.channels["two"] = {"t": ["y", "z"]}
        harness.http.failing.add("three")
        harness.start()
        for index, name in enumerate(("one", "two", "three")):
            Connection(harness.reactor, index).reply(identify_reply(broadcast_address=name))
        self.assertEqual(harness.service.lookupd_http_addresses(), ["one:4161", "two:4161", "three:4161"])
        topic = harness.nsqd.get_topic("t")
        harness.stub.flush()
        self.assertEqual(sorted(topic.channels), ["x", "y", "z"])

    def test_not_asked_before_identify(self) -> None:
        harness = Harness()
        harness.start()
        harness.accept()
        topic = harness.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.publish([b"m"])
        self.assertEqual(harness.http.uris, [])
        self.assertTrue(topic.flowing)

    def test_info_kept_across_reconnects(self) -> None:
        """As in Go, the last IDENTIFY reply still names lookupd's HTTP address while reconnecting."""
        harness = Harness()
        harness.http.channels["lookupd.example"] = {"t": ["a"]}
        harness.identified().lose()
        topic = harness.nsqd.get_topic("t")
        harness.stub.flush()
        self.assertEqual(list(topic.channels), ["a"])

    def test_loaded_topics_not_asked(self) -> None:
        """nsqd.dat is loaded before the service starts: loaded topics are not queried (Go's isLoading)."""
        harness = Harness()
        harness.nsqd.load_metadata(
            Metadata(topics=(TopicMetadata(name="t", channels=(ChannelMetadata("c"),)),))
        )
        connection = harness.identified(registrations=1)
        self.assertEqual(harness.http.uris, [])
        self.assertEqual(connection.sent(), b"")

    def test_deleted_during_query(self) -> None:
        harness = Harness()
        harness.http.channels["lookupd.example"] = {"t": ["a"]}
        harness.http.hold = True
        harness.identified()
        topic = harness.nsqd.get_topic("t")
        harness.nsqd.delete_topic("t")
        harness.http.answer_pending()
        harness.stub.flush()
        self.assertEqual(topic.channels, {})
        self.assertNotIn("t", harness.nsqd.topics)

    def test_stop_cancels_query_and_releases(self) -> None:
        harness = Harness()
        harness.http.hold = True
        connection = harness.identified()
        topic = harness.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.publish([b"m"])
        harness.stub.flush()
        stopped = harness.service.stopService()
        self.assertTrue(topic.flowing)
        self.assertEqual(topic.channels["c"].depth(), 1)
        connection.lose()
        self.successResultOf(stopped)
