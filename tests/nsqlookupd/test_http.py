"""
Tests for L{twisted_nsq.nsqlookupd.http}: every endpoint through C{StubTreq}, with exact bodies,
statuses and headers.
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.test_http_helpers import JSON, TEXT, TOO_BIG, V1, Reply, call
from twisted_nsq._http import LimitedSite
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.http import BODY_LIMIT, GO_ZERO_TIME_UNIX_NANO, LookupdHTTP
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.registration import PeerInfo, Registration

NOW = 1_700_000_000


def peer(port: int = 40000, address: str = "nsqd.local", http_port: int = 4151) -> PeerInfo:
    remote = f"127.0.0.1:{port}"
    return PeerInfo(
        id=remote,
        remote_address=remote,
        hostname="nsqd-host",
        broadcast_address=address,
        tcp_port=4150,
        http_port=http_port,
        version="1.3.0",
    )


def peer_json(port: int = 40000, address: str = "nsqd.local", http_port: int = 4151) -> bytes:
    return (
        b'{"remote_address":"127.0.0.1:%d","hostname":"nsqd-host","broadcast_address":"%s",'
        b'"tcp_port":4150,"http_port":%d,"version":"1.3.0"' % (port, address.encode(), http_port)
    )


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        options = NSQLookupdOptions(broadcast_address="lookupd.local")
        self.lookupd = NSQLookupd(options, self.clock, hostname=lambda: "lookupd-host")
        self.db = self.lookupd.db
        self.http = LookupdHTTP(self.lookupd)
        self.stub = StubTreq(self.http.resource())

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        return call(self.stub, method, path, body)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str) -> Reply:
        return self.request("POST", path)

    def producer(self, port: int = 40000, *registrations: tuple[str, str], **kwargs: object) -> PeerInfo:
        p = peer(port, **kwargs)  # type: ignore[arg-type]
        self.db.identify(p)
        for topic, channel in registrations:
            self.db.register(p, topic, channel)
        return p

    def assertReply(self, reply: Reply, code: int, body: bytes) -> None:
        """Status, body, the V1 header and the Content-Type NSQ gives such a body."""
        self.assertEqual((reply.code, reply.body), (code, body))
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        if body:
            self.assertEqual(reply.header(b"Content-Type"), JSON)
        else:
            self.assertIsNone(reply.header(b"Content-Type"))

    def assertError(self, reply: Reply, code: int, message: str) -> None:
        self.assertReply(reply, code, b'{"message":"%s"}' % message.encode())


class PingInfoTests(Base):
    def test_ping(self) -> None:
        reply = self.get("/ping")
        self.assertEqual((reply.code, reply.body), (200, b"OK"))
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        self.assertIsNone(reply.header(b"X-NSQ-Content-Type"))

    def test_info(self) -> None:
        self.assertReply(self.get("/info"), 200, b'{"version":"1.3.0"}')

    def test_requests_logged(self) -> None:
        with capturedLogs() as events:
            self.get("/info?x=1")
        lines = [formatEvent(e) for e in events]
        self.assertIn("200 GET /info?x=1 (127.0.0.1:", "\n".join(lines))


class LookupTests(Base):
    def test_lookup(self) -> None:
        self.producer(40000, ("t", "c"), ("t", "d"))
        self.producer(40001, ("t", ""))
        self.assertReply(
            self.get("/lookup?topic=t"),
            200,
            b'{"channels":["c","d"],"producers":[' + peer_json(40000) + b"}," + peer_json(40001) + b"}]}",
        )

    def test_lookup_without_producers(self) -> None:
        self.db.create_topic("t")
        self.assertReply(self.get("/lookup?topic=t"), 200, b'{"channels":[],"producers":[]}')

    def test_lookup_after_disconnect_keeps_topic_and_channels(self) -> None:
        p = self.producer(40000, ("t", "c"))
        self.db.remove_peer(p.id)
        self.assertReply(self.get("/lookup?topic=t"), 200, b'{"channels":["c"],"producers":[]}')

    def test_lookup_hides_inactive_and_tombstoned(self) -> None:
        self.producer(40000, ("t", ""), address="a")
        self.producer(40001, ("t", ""), address="b")
        self.clock.advance(300)
        self.db.ping(self.db.producers(Registration("client", "", ""))[1].peer)
        self.clock.advance(1)
        self.assertReply(
            self.get("/lookup?topic=t"), 200, b'{"channels":[],"producers":[' + peer_json(40001, "b") + b"}]}"
        )
        self.assertReply(self.post("/topic/tombstone?topic=t&node=b:4151"), 200, b"")
        self.assertReply(self.get("/lookup?topic=t"), 200, b'{"channels":[],"producers":[]}')

    def test_errors(self) -> None:
        self.assertError(self.get("/lookup"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.get("/lookup?topic=missing"), 404, "TOPIC_NOT_FOUND")
        self.assertError(self.get("/lookup?topic="), 404, "TOPIC_NOT_FOUND")
        self.assertError(self.get("/lookup?topic=%zz"), 400, "INVALID_REQUEST")

    def test_first_value_wins(self) -> None:
        self.db.create_topic("a")
        self.assertReply(self.get("/lookup?topic=a&topic=b"), 200, b'{"channels":[],"producers":[]}')

    def test_escaping(self) -> None:
        self.producer(40000, ("t", ""), address="<a&b>")
        self.assertIn(b'"broadcast_address":"\\u003ca\\u0026b\\u003e"', self.get("/lookup?topic=t").body)


class TopicsChannelsTests(Base):
    def test_topics(self) -> None:
        self.assertReply(self.get("/topics"), 200, b'{"topics":[]}')
        self.producer(40000, ("t", "c"))
        self.db.create_topic("u")
        self.assertReply(self.get("/topics"), 200, b'{"topics":["t","u"]}')

    def test_topics_ignores_the_query(self) -> None:
        self.assertReply(self.get("/topics?x=%zz"), 200, b'{"topics":[]}')

    def test_channels(self) -> None:
        self.producer(40000, ("t", "c"), ("t", "d"), ("u", "e"))
        self.assertReply(self.get("/channels?topic=t"), 200, b'{"channels":["c","d"]}')
        self.assertReply(self.get("/channels?topic=missing"), 200, b'{"channels":[]}')
        self.assertError(self.get("/channels"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.get("/channels?topic=t;x"), 400, "INVALID_REQUEST")


class NodesTests(Base):
    def test_nodes_empty(self) -> None:
        self.assertReply(self.get("/nodes"), 200, b'{"producers":[]}')

    def test_nodes(self) -> None:
        self.producer(40000, ("t", "c"), ("u", ""))
        self.producer(40001)
        self.assertReply(
            self.get("/nodes"),
            200,
            b'{"producers":['
            + peer_json(40000)
            + b',"tombstones":[false,false],"topics":["t","u"]},'
            + peer_json(40001)
            + b',"tombstones":[],"topics":[]}]}',
        )

    def test_nodes_show_tombstones_and_hide_inactive(self) -> None:
        self.producer(40000, ("t", ""), ("u", ""))
        self.assertReply(self.post("/topic/tombstone?topic=u&node=nsqd.local:4151"), 200, b"")
        self.assertReply(
            self.get("/nodes"),
            200,
            b'{"producers":[' + peer_json(40000) + b',"tombstones":[false,true],"topics":["t","u"]}]}',
        )
        self.clock.advance(45)
        self.assertIn(b'"tombstones":[false,false]', self.get("/nodes").body)
        self.clock.advance(256)
        self.assertReply(self.get("/nodes"), 200, b'{"producers":[]}')


class DebugTests(Base):
    def entry(self, port: int, tombstoned: bool = False, at: int = GO_ZERO_TIME_UNIX_NANO) -> bytes:
        return (
            b'{"broadcast_address":"nsqd.local","hostname":"nsqd-host","http_port":4151,'
            b'"id":"127.0.0.1:%d","last_update":%d,"tcp_port":4150,"tombstoned":%s,'
            b'"tombstoned_at":%d,"version":"1.3.0"}'
            % (port, NOW * 10**9, b"true" if tombstoned else b"false", at)
        )

    def test_debug_empty(self) -> None:
        self.db.create_channel("t", "c")
        self.assertReply(self.get("/debug"), 200, b"{}")

    def test_debug(self) -> None:
        self.producer(40000, ("t", "c"))
        self.producer(40001, ("t", ""))
        self.db.create_topic("empty")
        self.clock.advance(1.5)
        self.post("/topic/tombstone?topic=t&node=nsqd.local:4151")
        at = NOW * 10**9 + 1_500_000_000
        self.assertReply(
            self.get("/debug"),
            200,
            b'{"channel:t:c":['
            + self.entry(40000)
            + b'],"client::":['
            + self.entry(40000)
            + b","
            + self.entry(40001)
            + b'],"topic:t:":['
            + self.entry(40000, True, at)
            + b","
            + self.entry(40001, True, at)
            + b"]}",
        )

    def test_debug_pprof_not_served(self) -> None:
        self.assertError(self.get("/debug/pprof"), 404, "NOT_FOUND")


class TopicActionTests(Base):
    def test_create(self) -> None:
        self.assertReply(self.post("/topic/create?topic=t"), 200, b"")
        self.assertReply(self.post("/topic/create?topic=t"), 200, b"")
        self.assertEqual(self.db.topics(), ["t"])
        self.assertReply(self.get("/lookup?topic=t"), 200, b'{"channels":[],"producers":[]}')

    def test_create_errors(self) -> None:
        self.assertError(self.post("/topic/create"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/topic/create?topic=a*b"), 400, "INVALID_ARG_TOPIC")
        self.assertError(self.post("/topic/create?topic="), 400, "INVALID_ARG_TOPIC")
        self.assertError(self.post("/topic/create?topic=%"), 400, "INVALID_REQUEST")
        self.assertEqual(self.db.topics(), [])

    def test_delete(self) -> None:
        self.producer(40000, ("t", "c"), ("t", "d"), ("u", "c"))
        self.assertReply(self.post("/topic/delete?topic=t"), 200, b"")
        self.assertReply(self.get("/topics"), 200, b'{"topics":["u"]}')
        self.assertReply(self.get("/channels?topic=t"), 200, b'{"channels":[]}')
        self.assertError(self.get("/lookup?topic=t"), 404, "TOPIC_NOT_FOUND")
        self.assertReply(self.post("/topic/delete?topic=never"), 200, b"")
        self.assertReply(self.post("/topic/delete?topic=not valid"), 200, b"")

    def test_delete_errors(self) -> None:
        self.assertError(self.post("/topic/delete"), 400, "MISSING_ARG_TOPIC")

    def test_tombstone_errors(self) -> None:
        self.assertError(self.post("/topic/tombstone"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/topic/tombstone?node=a:1"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/topic/tombstone?topic=t"), 400, "MISSING_ARG_NODE")
        self.assertReply(self.post("/topic/tombstone?topic=unknown&node=a:1"), 200, b"")

    def test_post_only(self) -> None:
        for path in (
            "/topic/create",
            "/topic/delete",
            "/topic/tombstone",
            "/channel/create",
            "/channel/delete",
        ):
            reply = self.get(path + "?topic=t&channel=c&node=a:1")
            self.assertError(reply, 405, "METHOD_NOT_ALLOWED")
        self.assertEqual(self.db.registrations(), [])

    def test_get_only(self) -> None:
        for path in ("/lookup", "/topics", "/channels", "/nodes", "/debug", "/info"):
            self.assertError(self.post(path + "?topic=t"), 405, "METHOD_NOT_ALLOWED")

    def test_not_found(self) -> None:
        self.assertError(self.get("/nope"), 404, "NOT_FOUND")
        self.assertError(self.post("/topic/pause?topic=t"), 404, "NOT_FOUND")


class ChannelActionTests(Base):
    def test_create(self) -> None:
        self.assertReply(self.post("/channel/create?topic=t&channel=c"), 200, b"")
        self.assertReply(self.get("/topics"), 200, b'{"topics":["t"]}')
        self.assertReply(self.get("/channels?topic=t"), 200, b'{"channels":["c"]}')

    def test_delete(self) -> None:
        self.producer(40000, ("t", "c"))
        self.assertReply(self.post("/channel/delete?topic=t&channel=c"), 200, b"")
        self.assertReply(self.get("/channels?topic=t"), 200, b'{"channels":[]}')
        self.assertReply(self.get("/topics"), 200, b'{"topics":["t"]}')
        self.assertError(self.post("/channel/delete?topic=t&channel=c"), 404, "CHANNEL_NOT_FOUND")

    def test_argument_errors(self) -> None:
        for action in ("create", "delete"):
            path = f"/channel/{action}"
            self.assertError(self.post(path), 400, "MISSING_ARG_TOPIC")
            self.assertError(self.post(path + "?channel=c"), 400, "MISSING_ARG_TOPIC")
            self.assertError(self.post(path + "?topic=a*b&channel=c"), 400, "INVALID_ARG_TOPIC")
            self.assertError(self.post(path + "?topic=a*b"), 400, "INVALID_ARG_TOPIC")
            self.assertError(self.post(path + "?topic=t"), 400, "MISSING_ARG_CHANNEL")
            self.assertError(self.post(path + "?topic=t&channel=c%20d"), 400, "INVALID_ARG_CHANNEL")
            self.assertError(self.post(path + "?topic=t&channel="), 400, "INVALID_ARG_CHANNEL")
            self.assertError(self.post(path + "?topic=t&channel=%G0"), 400, "INVALID_REQUEST")
        self.assertEqual(self.db.registrations(), [])


class AliasTests(Base):
    """The pre-1.0 names answer GET and POST, in the V1 format."""

    def test_aliases(self) -> None:
        self.producer(40000, ("t", ""))
        for method in ("GET", "POST"):
            self.assertReply(self.request(method, "/create_topic?topic=a"), 200, b"")
            self.assertReply(self.request(method, "/create_channel?topic=a&channel=c"), 200, b"")
            self.assertReply(self.get("/channels?topic=a"), 200, b'{"channels":["c"]}')
            self.assertReply(self.request(method, "/delete_channel?topic=a&channel=c"), 200, b"")
            self.assertError(
                self.request(method, "/delete_channel?topic=a&channel=c"), 404, "CHANNEL_NOT_FOUND"
            )
            self.assertReply(self.request(method, "/delete_topic?topic=a"), 200, b"")
            self.assertReply(self.get("/topics"), 200, b'{"topics":["t"]}')
            self.assertReply(
                self.request(method, "/tombstone_topic_producer?topic=t&node=nsqd.local:4151"), 200, b""
            )
            self.assertReply(self.get("/lookup?topic=t"), 200, b'{"channels":[],"producers":[]}')
            self.clock.advance(45)

    def test_alias_errors(self) -> None:
        self.assertError(self.get("/create_topic"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.get("/create_topic?topic=a*b"), 400, "INVALID_ARG_TOPIC")
        self.assertError(self.get("/create_channel?topic=t"), 400, "MISSING_ARG_CHANNEL")
        self.assertError(self.get("/tombstone_topic_producer?topic=t"), 400, "MISSING_ARG_NODE")
        self.assertError(self.request("PUT", "/create_topic?topic=t"), 405, "METHOD_NOT_ALLOWED")


class SiteTests(Base):
    """The body-limited site: bodies are ignored, and refused above L{BODY_LIMIT}."""

    def setUp(self) -> None:
        super().setUp()
        self.site = self.http.site(self.clock)
        self.assertIsInstance(self.site, LimitedSite)
        self.transport = StringTransport()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert channel is not None
        self.channel = channel
        self.channel.makeConnection(self.transport)

    def tearDown(self) -> None:
        self.channel.connectionLost(None)

    def test_body_ignored(self) -> None:
        self.channel.dataReceived(
            b"POST /topic/create?topic=t HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\ntopic=bad"
        )
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.db.topics(), ["t"])

    def test_body_too_big(self) -> None:
        self.channel.dataReceived(
            b"POST /topic/create?topic=t HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT + 1)
        )
        value = self.transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 " + TOO_BIG + b"\r\n"))
        self.assertTrue(value.endswith(b'{"message":"BODY_TOO_BIG"}'))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.db.topics(), [])
