"""nsqd's HTTP API through StubTreq: every endpoint, its exact replies and errors, and its effects."""

from __future__ import annotations

import gc
import json
import random
import struct
import threading
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_http_helpers import JSON, TEXT, V1, Reply, call
from twisted_nsq._http import BodyLimit, origin_matches_host
from twisted_nsq.nsqd.http import NSQDHTTP, SMALL_BODY_LIMIT, changes_state, make_site, thread_stacks
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.stats import version_line
from twisted_nsq.testing import LoopbackClient, make_nsqd

_INT32 = struct.Struct(">i")


def binary_mpub(messages: list[bytes]) -> bytes:
    return _INT32.pack(len(messages)) + b"".join(_INT32.pack(len(m)) + m for m in messages)


class RecordingNSQD(NSQD):
    """An nsqd that records the hooks the HTTP API calls when they exist."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookupd_changes: list[list[str]] = []
        self.persisted = 0

    def lookupd_addresses_changed(self, addresses: list[str]) -> None:
        self.lookupd_changes.append(addresses)

    def persist_metadata(self) -> None:
        self.persisted += 1


class Base(SynchronousTestCase):
    overrides: dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.nsqd = self.make_nsqd()
        self.http = NSQDHTTP(self.nsqd, hostname=lambda: "nsqd.host")
        self.stub = StubTreq(self.http.resource())

    def make_nsqd(self) -> RecordingNSQD:
        options = make_nsqd(self.clock, **self.overrides).options
        return RecordingNSQD(options, self.clock, random_source=random.Random(0))

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        return call(self.stub, method, path, body)

    def post(self, path: str, body: bytes | None = None) -> Reply:
        return self.request("POST", path, body)

    def assertReply(self, reply: Reply, code: int, body: bytes, json: bool = False) -> None:
        """Status, body, the V1 header, and the Content-Type NSQ gives such a body."""
        self.assertEqual((reply.code, reply.body), (code, body))
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        if code != 200 or json or body.startswith((b"{", b"[")):
            self.assertEqual(reply.header(b"Content-Type"), JSON)
        elif body:
            self.assertEqual(reply.header(b"Content-Type"), TEXT)
        else:
            self.assertIsNone(reply.header(b"Content-Type"))

    def assertError(self, reply: Reply, code: int, message: str) -> None:
        self.assertReply(reply, code, b'{"message":"%s"}' % message.encode())

    def stats(self, query: str = "") -> dict[str, Any]:
        reply = self.request("GET", "/stats?format=json&include_mem=false" + query)
        self.assertEqual(reply.code, 200)
        result: dict[str, Any] = json.loads(reply.body)
        return result

    def channel_stats(self, topic: str, channel: str) -> dict[str, Any]:
        for t in self.stats()["topics"]:
            if t["topic_name"] == topic:
                for c in t["channels"]:
                    if c["channel_name"] == channel:
                        return dict(c)
        raise AssertionError(f"no channel {topic}:{channel}")

    def consumer(self, topic: str, channel: str, rdy: int = 5, port: int = 40001) -> LoopbackClient:
        client = LoopbackClient(self.nsqd, port=port)
        client.subscribe(topic, channel, rdy)
        return client


class PingInfoTests(Base):
    def test_ping(self) -> None:
        reply = self.request("GET", "/ping")
        self.assertEqual((reply.code, reply.body), (200, b"OK"))
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        self.assertIsNone(reply.header(b"X-NSQ-Content-Type"))

    def test_ping_unhealthy(self) -> None:
        self.nsqd.set_health("write /data/t.diskqueue.000000.dat: no space left on device")
        reply = self.request("GET", "/ping")
        self.assertEqual(
            (reply.code, reply.body),
            (500, b"NOK - write /data/t.diskqueue.000000.dat: no space left on device"),
        )
        self.assertIsNone(reply.header(b"X-NSQ-Content-Type"))

    def test_info(self) -> None:
        self.nsqd.tcp_port, self.nsqd.http_port = 4150, 4151
        reply = self.request("GET", "/info")
        self.assertReply(
            reply,
            200,
            b'{"version":"1.3.0","broadcast_address":"testhost","hostname":"nsqd.host",'
            b'"http_port":4151,"tcp_port":4150,"start_time":1700000000,'
            b'"max_heartbeat_interval":60000000000,"max_output_buffer_size":65536,'
            b'"max_output_buffer_timeout":30000000000,"max_deflate_level":6}',
        )

    def test_info_hostname_failure(self) -> None:
        def broken() -> str:
            raise OSError("no hostname")

        stub = StubTreq(NSQDHTTP(self.nsqd, hostname=broken).resource())
        self.assertError(call(stub, "GET", "/info"), 500, "no hostname")

    def test_unexpected_exception(self) -> None:
        def broken() -> str:
            raise RuntimeError("bug")

        stub = StubTreq(NSQDHTTP(self.nsqd, hostname=broken).resource())
        self.assertError(call(stub, "GET", "/info"), 500, "INTERNAL_ERROR")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_not_found(self) -> None:
        self.assertError(self.request("GET", "/no_such_endpoint"), 404, "NOT_FOUND")
        self.assertError(self.request("GET", "/debug/pprof/"), 404, "NOT_FOUND")

    def test_method_not_allowed(self) -> None:
        self.assertError(self.request("GET", "/pub?topic=x"), 405, "METHOD_NOT_ALLOWED")
        self.assertError(self.request("POST", "/ping"), 405, "METHOD_NOT_ALLOWED")
        self.assertError(self.request("GET", "/topic/create?topic=x"), 405, "METHOD_NOT_ALLOWED")
        self.assertError(self.request("POST", "/config/log_level"), 405, "METHOD_NOT_ALLOWED")
        self.assertNotIn("x", self.nsqd.topics)


class TLSRequiredTests(Base):
    overrides = {"tls_required": "true"}

    def test_plain_http_refused(self) -> None:
        self.nsqd.https_port = 4152
        for method, path in (("GET", "/ping"), ("POST", "/pub?topic=t"), ("GET", "/nope")):
            reply = self.request(method, path, b"x")
            self.assertEqual(
                (reply.code, reply.body), (403, b'{"message": "TLS_REQUIRED", "https_port": 4152}')
            )
            self.assertEqual(reply.header(b"Content-Type"), JSON)
            self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        self.assertEqual(self.nsqd.topics, {})


class PubTests(Base):
    overrides = {"max_msg_size": 10, "max_req_timeout": 60.0}

    def test_pub(self) -> None:
        self.post("/channel/create?topic=t&channel=c")
        self.post("/topic/create?topic=t")
        reply = self.post("/pub?topic=t", b"hello")
        self.assertReply(reply, 200, b"OK")
        topic = self.nsqd.topics["t"]
        self.assertEqual((topic.message_count, topic.message_bytes), (1, 5))

    def test_pub_creates_topic(self) -> None:
        self.assertReply(self.post("/pub?topic=new", b"x"), 200, b"OK")
        self.assertEqual(self.nsqd.topics["new"].depth(), 1)

    def test_pub_reaches_consumer_at_once(self) -> None:
        client = self.consumer("t", "c")
        self.post("/pub?topic=t", b"now")
        self.assertEqual([m.body for m in client.messages()], [b"now"])

    def test_missing_topic(self) -> None:
        self.assertError(self.post("/pub", b"x"), 400, "MISSING_ARG_TOPIC")

    def test_invalid_topic(self) -> None:
        self.assertError(self.post("/pub?topic=bad*topic", b"x"), 400, "INVALID_TOPIC")
        self.assertError(self.post("/pub?topic=" + "a" * 65, b"x"), 400, "INVALID_TOPIC")

    def test_bad_query(self) -> None:
        self.assertError(self.post("/pub?topic=t&x=%zz", b"x"), 400, "INVALID_REQUEST")

    def test_body_checked_before_topic(self) -> None:
        self.assertError(self.post("/pub", b""), 400, "MSG_EMPTY")
        self.assertError(self.post("/pub?topic=bad*", b"x" * 11), 413, "MSG_TOO_BIG")

    def test_message_size_limit(self) -> None:
        self.assertReply(self.post("/pub?topic=t", b"x" * 10), 200, b"OK")
        self.assertError(self.post("/pub?topic=t", b"x" * 11), 413, "MSG_TOO_BIG")

    def test_first_topic_value_wins(self) -> None:
        self.post("/pub?topic=first&topic=second", b"x")
        self.assertEqual(sorted(self.nsqd.topics), ["first"])

    def test_defer(self) -> None:
        self.post("/topic/create?topic=t")
        self.post("/channel/create?topic=t&channel=c")
        self.assertReply(self.post("/pub?topic=t&defer=60000", b"later"), 200, b"OK")
        stats = self.channel_stats("t", "c")
        self.assertEqual((stats["deferred_count"], stats["depth"], stats["message_count"]), (1, 0, 1))
        self.clock.advance(60)
        stats = self.channel_stats("t", "c")
        self.assertEqual((stats["deferred_count"], stats["depth"]), (0, 1))

    def test_defer_zero(self) -> None:
        client = self.consumer("t", "c")
        self.assertReply(self.post("/pub?topic=t&defer=0", b"x"), 200, b"OK")
        self.assertEqual(len(client.messages()), 1)

    def test_invalid_defer(self) -> None:
        for value in ("abc", "", "-1", "60001", "1.5", "+5", "99999999999999999999", "9223372036855"):
            self.assertError(self.post(f"/pub?topic=t&defer={value}", b"x"), 400, "INVALID_DEFER")
        # The topic already exists by then, as in Go (getTopicFromQuery creates it).
        self.assertEqual(self.nsqd.topics["t"].message_count, 0)

    def test_defer_accepts_go_integers(self) -> None:
        for value in ("%2B5", "007", "60000", "-0"):
            self.assertReply(self.post(f"/pub?topic=t&defer={value}", b"x"), 200, b"OK")

    def test_exiting(self) -> None:
        self.nsqd.exiting = True
        self.assertError(self.post("/pub?topic=t", b"x"), 503, "EXITING")

    def test_queue_full_is_exiting(self) -> None:
        nsqd = make_nsqd(self.clock, mem_queue_size=1)
        stub = StubTreq(NSQDHTTP(nsqd).resource())
        self.assertReply(call(stub, "POST", "/pub?topic=t", b"x"), 200, b"OK")
        self.assertError(call(stub, "POST", "/pub?topic=t", b"x"), 503, "EXITING")

    def test_put_alias(self) -> None:
        self.assertReply(self.post("/put?topic=t", b"x"), 200, b"OK")
        self.assertReply(self.request("GET", "/put?topic=t", b"y"), 200, b"OK")
        self.assertEqual(self.nsqd.topics["t"].message_count, 2)


class MpubTests(Base):
    overrides = {"max_msg_size": 10, "max_body_size": 40}

    def setUp(self) -> None:
        super().setUp()
        self.post("/topic/create?topic=t")
        self.post("/channel/create?topic=t&channel=c")

    def consume_all(self) -> list[bytes]:
        client = self.consumer("t", "c", rdy=100)
        return [m.body for m in client.messages()]

    def test_text(self) -> None:
        self.assertReply(self.post("/mpub?topic=t", b"a\n\nb\r\nc"), 200, b"OK")
        self.assertEqual(self.consume_all(), [b"a", b"b\r", b"c"])
        self.assertEqual(self.nsqd.topics["t"].message_count, 3)

    def test_text_empty(self) -> None:
        self.assertReply(self.post("/mpub?topic=t", b"\n\n"), 200, b"OK")
        self.assertEqual(self.nsqd.topics["t"].message_count, 0)

    def test_text_message_too_big(self) -> None:
        self.assertError(self.post("/mpub?topic=t", b"ok\n" + b"x" * 11 + b"\nok"), 413, "MSG_TOO_BIG")
        self.assertEqual(self.nsqd.topics["t"].message_count, 0)

    def test_text_body_too_big(self) -> None:
        self.assertError(self.post("/mpub?topic=t", b"0123456789\n" * 4), 413, "BODY_TOO_BIG")
        self.assertReply(self.post("/mpub?topic=t", b"012345678\n" * 4), 200, b"OK")

    def test_body_too_big_before_topic(self) -> None:
        self.assertError(self.post("/mpub?topic=other", b"x" * 41), 413, "BODY_TOO_BIG")
        self.assertNotIn("other", self.nsqd.topics)

    def test_binary(self) -> None:
        body = binary_mpub([b"bin1", b"bin\n2"])
        for value in ("true", "1", "yes"):
            self.assertReply(self.post(f"/mpub?topic=t&binary={value}", body), 200, b"OK")
        self.assertEqual(self.consume_all(), [b"bin1", b"bin\n2"] * 3)

    def test_binary_false_is_text(self) -> None:
        for value in ("false", "0"):
            self.assertReply(self.post(f"/mpub?topic=t&binary={value}", b"a\nb"), 200, b"OK")
        self.assertEqual(self.nsqd.topics["t"].message_count, 4)

    def test_binary_errors(self) -> None:
        cases = [
            (b"\x00\x00", "BAD_BODY"),
            (_INT32.pack(0), "BAD_BODY"),
            (_INT32.pack(100), "BAD_BODY"),
            (_INT32.pack(1) + _INT32.pack(0), "BAD_MESSAGE"),
            (_INT32.pack(1) + _INT32.pack(11) + b"x" * 11, "BAD_MESSAGE"),
            (_INT32.pack(2) + _INT32.pack(1) + b"x", "BAD_MESSAGE"),
            (_INT32.pack(1) + _INT32.pack(5) + b"x", "BAD_MESSAGE"),
        ]
        for body, message in cases:
            self.assertError(self.post("/mpub?topic=t&binary=true", body), 413, message)
        self.assertEqual(self.nsqd.topics["t"].message_count, 0)

    def test_topic_created_before_body_checked(self) -> None:
        self.assertError(self.post("/mpub?topic=made&binary=1", b"\x00"), 413, "BAD_BODY")
        self.assertIn("made", self.nsqd.topics)

    def test_errors(self) -> None:
        self.assertError(self.post("/mpub", b"a"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/mpub?topic=a/b", b"a"), 400, "INVALID_TOPIC")
        self.nsqd.exiting = True
        self.assertError(self.post("/mpub?topic=t", b"a"), 503, "EXITING")

    def test_mput_alias(self) -> None:
        self.assertReply(self.request("GET", "/mput?topic=t", b"a\nb"), 200, b"OK")
        self.assertEqual(self.nsqd.topics["t"].message_count, 2)


class TopicTests(Base):
    def test_create(self) -> None:
        self.assertReply(self.post("/topic/create?topic=t"), 200, b"")
        self.assertReply(self.post("/topic/create?topic=t"), 200, b"")
        self.assertEqual(list(self.nsqd.topics), ["t"])

    def test_create_errors(self) -> None:
        self.assertError(self.post("/topic/create"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/topic/create?topic=bad!"), 400, "INVALID_TOPIC")

    def test_delete(self) -> None:
        self.post("/channel/create?topic=t&channel=c")
        self.post("/topic/create?topic=t")
        self.post("/channel/create?topic=t&channel=c")
        client = self.consumer("t", "c")
        self.assertReply(self.post("/topic/delete?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.topics, {})
        self.assertTrue(client.closed)
        self.assertError(self.post("/topic/delete?topic=t"), 404, "TOPIC_NOT_FOUND")

    def test_delete_errors(self) -> None:
        self.assertError(self.post("/topic/delete"), 400, "MISSING_ARG_TOPIC")
        # The name is not validated: an invalid one is just not found.
        self.assertError(self.post("/topic/delete?topic=bad!"), 404, "TOPIC_NOT_FOUND")
        self.assertError(self.post("/topic/delete?topic=t&%"), 400, "INVALID_REQUEST")

    def test_empty(self) -> None:
        self.post("/topic/create?topic=t")
        self.post("/mpub?topic=t", b"1\n2")
        self.assertEqual(self.nsqd.topics["t"].depth(), 2)
        self.assertReply(self.post("/topic/empty?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.topics["t"].depth(), 0)

    def test_empty_errors(self) -> None:
        self.assertError(self.post("/topic/empty"), 400, "MISSING_ARG_TOPIC")
        self.assertError(self.post("/topic/empty?topic=bad!"), 400, "INVALID_TOPIC")
        self.assertError(self.post("/topic/empty?topic=t"), 404, "TOPIC_NOT_FOUND")

    def test_pause_unpause(self) -> None:
        self.post("/topic/create?topic=t")
        self.post("/channel/create?topic=t&channel=ch")
        self.assertReply(self.post("/topic/pause?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.persisted, 1)
        self.post("/mpub?topic=t", b"1\n2\n3")
        stats = self.stats("&topic=t")["topics"][0]
        self.assertEqual((stats["paused"], stats["depth"], stats["channels"][0]["depth"]), (True, 3, 0))
        self.assertReply(self.post("/topic/unpause?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.persisted, 2)
        stats = self.stats("&topic=t")["topics"][0]
        self.assertEqual((stats["paused"], stats["depth"], stats["channels"][0]["depth"]), (False, 0, 3))

    def test_unpause_delivers_at_once(self) -> None:
        client = self.consumer("t", "c")
        self.post("/topic/pause?topic=t")
        self.post("/pub?topic=t", b"held")
        self.assertEqual(client.messages(), [])
        self.post("/topic/unpause?topic=t")
        self.assertEqual([m.body for m in client.messages()], [b"held"])

    def test_pause_errors(self) -> None:
        for action in ("pause", "unpause"):
            self.assertError(self.post(f"/topic/{action}"), 400, "MISSING_ARG_TOPIC")
            self.assertError(self.post(f"/topic/{action}?topic=bad!"), 404, "TOPIC_NOT_FOUND")

    def test_aliases(self) -> None:
        self.assertReply(self.request("GET", "/create_topic?topic=t"), 200, b"")
        self.assertReply(self.request("POST", "/pause_topic?topic=t"), 200, b"")
        self.assertTrue(self.nsqd.topics["t"].paused)
        self.assertReply(self.request("GET", "/unpause_topic?topic=t"), 200, b"")
        self.assertFalse(self.nsqd.topics["t"].paused)
        self.request("POST", "/pub?topic=t", b"x")
        self.assertReply(self.request("GET", "/empty_topic?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.topics["t"].depth(), 0)
        self.assertReply(self.request("GET", "/delete_topic?topic=t"), 200, b"")
        self.assertEqual(self.nsqd.topics, {})
        self.assertError(self.request("GET", "/delete_topic?topic=t"), 404, "TOPIC_NOT_FOUND")


class ChannelTests(Base):
    ERRORS = [
        ("", 400, "MISSING_ARG_TOPIC"),
        ("?channel=c", 400, "MISSING_ARG_TOPIC"),
        ("?topic=bad*&channel=c", 400, "INVALID_ARG_TOPIC"),
        ("?topic=t", 400, "MISSING_ARG_CHANNEL"),
        ("?topic=never", 400, "MISSING_ARG_CHANNEL"),
        ("?topic=t&channel=bad*ch", 400, "INVALID_ARG_CHANNEL"),
        ("?topic=never&channel=c", 404, "TOPIC_NOT_FOUND"),
        ("?topic=t&channel=c&%", 400, "INVALID_REQUEST"),
    ]

    def setUp(self) -> None:
        super().setUp()
        self.post("/topic/create?topic=t")

    def test_create(self) -> None:
        self.assertReply(self.post("/channel/create?topic=t&channel=c"), 200, b"")
        self.assertReply(self.post("/channel/create?topic=t&channel=c#ephemeral"), 200, b"")
        self.assertEqual(sorted(self.nsqd.topics["t"].channels), ["c"])
        self.assertReply(self.post("/channel/create?topic=t&channel=e%23ephemeral"), 200, b"")
        self.assertEqual(sorted(self.nsqd.topics["t"].channels), ["c", "e#ephemeral"])

    def test_create_takes_topic_backlog(self) -> None:
        self.post("/mpub?topic=t", b"1\n2")
        self.post("/channel/create?topic=t&channel=c")
        self.assertEqual(self.channel_stats("t", "c")["depth"], 2)

    def test_errors(self) -> None:
        for action in ("create", "delete", "empty", "pause", "unpause"):
            for query, code, message in self.ERRORS:
                self.assertError(self.post(f"/channel/{action}{query}"), code, message)
        for action in ("delete", "empty", "pause", "unpause"):
            self.assertError(self.post(f"/channel/{action}?topic=t&channel=nope"), 404, "CHANNEL_NOT_FOUND")
        self.assertNotIn("never", self.nsqd.topics)

    def test_delete(self) -> None:
        self.post("/channel/create?topic=t&channel=c1")
        client = self.consumer("t", "c2")
        self.assertReply(self.post("/channel/delete?topic=t&channel=c2"), 200, b"")
        self.assertEqual(sorted(self.nsqd.topics["t"].channels), ["c1"])
        self.assertTrue(client.closed)

    def test_empty(self) -> None:
        client = self.consumer("t", "c", rdy=1)
        self.post("/mpub?topic=t", b"1\n2\n3")
        self.assertEqual(len(client.messages()), 1)
        stats = self.channel_stats("t", "c")
        self.assertEqual((stats["depth"], stats["in_flight_count"]), (2, 1))
        self.assertReply(self.post("/channel/empty?topic=t&channel=c"), 200, b"")
        stats = self.channel_stats("t", "c")
        self.assertEqual((stats["depth"], stats["in_flight_count"]), (0, 0))
        self.assertEqual(stats["clients"][0]["in_flight_count"], 0)

    def test_pause_unpause_delivery(self) -> None:
        client = self.consumer("t", "c")
        self.assertReply(self.post("/channel/pause?topic=t&channel=c"), 200, b"")
        self.assertTrue(self.channel_stats("t", "c")["paused"])
        self.post("/pub?topic=t", b"held")
        self.assertEqual(client.messages(), [])
        self.assertEqual(self.channel_stats("t", "c")["depth"], 1)
        self.assertReply(self.post("/channel/unpause?topic=t&channel=c"), 200, b"")
        self.assertEqual([m.body for m in client.messages()], [b"held"])
        self.assertFalse(self.channel_stats("t", "c")["paused"])

    def test_aliases(self) -> None:
        self.assertReply(self.request("GET", "/create_channel?topic=t&channel=c"), 200, b"")
        self.assertReply(self.request("GET", "/pause_channel?topic=t&channel=c"), 200, b"")
        self.assertTrue(self.nsqd.topics["t"].channels["c"].paused)
        self.assertReply(self.request("POST", "/unpause_channel?topic=t&channel=c"), 200, b"")
        self.assertFalse(self.nsqd.topics["t"].channels["c"].paused)
        self.assertReply(self.request("GET", "/empty_channel?topic=t&channel=c"), 200, b"")
        self.assertReply(self.request("GET", "/delete_channel?topic=t&channel=c"), 200, b"")
        self.assertEqual(self.nsqd.topics["t"].channels, {})
        self.assertError(self.request("GET", "/delete_channel?topic=t&channel=c"), 404, "CHANNEL_NOT_FOUND")


class StatsTests(Base):
    def test_empty(self) -> None:
        reply = self.request("GET", "/stats?format=json&include_mem=false")
        self.assertReply(
            reply,
            200,
            b'{"version":"1.3.0","health":"OK","start_time":1700000000,"topics":[],"producers":null}',
        )

    def test_memory(self) -> None:
        for query in ("", "&include_mem=true", "&include_mem=1", "&include_mem=whatever"):
            document = json.loads(self.request("GET", "/stats?format=json" + query).body)
            self.assertEqual(
                list(document), ["version", "health", "start_time", "topics", "memory", "producers"]
            )
            self.assertEqual(
                list(document["memory"]),
                [
                    "heap_objects",
                    "heap_idle_bytes",
                    "heap_in_use_bytes",
                    "heap_released_bytes",
                    "gc_pause_usec_100",
                    "gc_pause_usec_99",
                    "gc_pause_usec_95",
                    "next_gc_bytes",
                    "gc_total_runs",
                ],
            )
        for query in ("&include_mem=false", "&include_mem=0"):
            document = json.loads(self.request("GET", "/stats?format=json" + query).body)
            self.assertNotIn("memory", document)

    def test_shape_with_clients(self) -> None:
        self.post("/mpub?topic=b", b"1\n2\n3")
        self.post("/topic/create?topic=a")
        client = LoopbackClient(self.nsqd, port=39644)
        client.identify(
            client_id="cons", hostname="cons.host", user_agent="test/0.1", feature_negotiation=True
        )
        client.frames()
        client.subscribe("b", "ch", rdy=2)
        self.post("/channel/create?topic=b&channel=aa")
        messages = client.messages()
        self.assertEqual(len(messages), 2)
        client.command("FIN " + messages[0].id.decode())
        self.clock.advance(5)
        document = self.stats()
        self.assertEqual([t["topic_name"] for t in document["topics"]], ["a", "b"])
        self.assertEqual(
            document["topics"][0],
            {
                "topic_name": "a",
                "channels": [],
                "depth": 0,
                "backend_depth": 0,
                "message_count": 0,
                "message_bytes": 0,
                "paused": False,
                "e2e_processing_latency": {"count": 0, "percentiles": None},
            },
        )
        topic = document["topics"][1]
        self.assertEqual(
            list(topic),
            [
                "topic_name",
                "channels",
                "depth",
                "backend_depth",
                "message_count",
                "message_bytes",
                "paused",
                "e2e_processing_latency",
            ],
        )
        self.assertEqual((topic["depth"], topic["message_count"], topic["message_bytes"]), (0, 3, 3))
        self.assertEqual([c["channel_name"] for c in topic["channels"]], ["aa", "ch"])
        self.assertEqual(topic["channels"][0]["clients"], [])
        channel = topic["channels"][1]
        self.assertEqual(
            channel,
            {
                "channel_name": "ch",
                "depth": 0,
                "backend_depth": 0,
                "in_flight_count": 2,
                "deferred_count": 0,
                "message_count": 3,
                "requeue_count": 0,
                "timeout_count": 0,
                "client_count": 1,
                "clients": [
                    {
                        "client_id": "cons",
                        "hostname": "cons.host",
                        "version": "V2",
                        "remote_address": "127.0.0.1:39644",
                        "state": 3,
                        "ready_count": 2,
                        "in_flight_count": 2,
                        "message_count": 3,
                        "finish_count": 1,
                        "requeue_count": 0,
                        "connect_ts": 1700000000,
                        "sample_rate": 0,
                        "deflate": False,
                        "snappy": False,
                        "user_agent": "test/0.1",
                        "tls": False,
                        "tls_cipher_suite": "",
                        "tls_version": "",
                        "tls_negotiated_protocol": "",
                        "tls_negotiated_protocol_is_mutual": False,
                    }
                ],
                "paused": False,
                "e2e_processing_latency": {"count": 0, "percentiles": None},
            },
        )
        self.assertEqual(list(channel["clients"][0])[:3], ["client_id", "hostname", "version"])

    def test_requeue_timeout_and_clients_flag(self) -> None:
        client = LoopbackClient(self.nsqd)
        client.identify(msg_timeout=5000)
        client.subscribe("t", "c", rdy=2)
        self.post("/mpub?topic=t", b"1\n2")
        first, _ = client.messages()
        client.command(f"REQ {first.id.decode()} 0")
        client.frames()
        self.clock.advance(6)
        stats = self.channel_stats("t", "c")
        self.assertEqual((stats["requeue_count"], stats["timeout_count"]), (1, 2))
        document = self.stats("&include_clients=false")
        channel = document["topics"][0]["channels"][0]
        self.assertEqual((channel["clients"], channel["client_count"]), (None, 1))
        self.assertIsNone(document["producers"])

    def test_filters(self) -> None:
        for topic in ("t1", "t2"):
            self.post(f"/topic/create?topic={topic}")
            for channel in ("c1", "c2"):
                self.post(f"/channel/create?topic={topic}&channel={channel}")
        self.post("/channel/create?topic=t2&channel=c3")
        document = self.stats("&topic=t2")
        self.assertEqual([t["topic_name"] for t in document["topics"]], ["t2"])
        self.assertEqual([c["channel_name"] for c in document["topics"][0]["channels"]], ["c1", "c2", "c3"])
        document = self.stats("&topic=t2&channel=c3")
        self.assertEqual([c["channel_name"] for c in document["topics"][0]["channels"]], ["c3"])
        document = self.stats("&channel=c2")
        self.assertEqual(
            [(t["topic_name"], [c["channel_name"] for c in t["channels"]]) for t in document["topics"]],
            [("t1", ["c2"]), ("t2", ["c2"])],
        )
        self.assertEqual(self.stats("&channel=c3")["topics"][0]["topic_name"], "t2")
        self.assertEqual(self.stats("&channel=none")["topics"], [])
        self.assertEqual(self.stats("&topic=&channel=")["topics"][0]["topic_name"], "t1")
        document = self.stats("&topic=none")
        self.assertEqual((document["topics"], document["producers"]), (None, None))

    def test_producers(self) -> None:
        producer = LoopbackClient(self.nsqd, port=50000)
        producer.command("PUB p1", b"x")
        producer.command("PUB p1", b"y")
        producer.command("PUB p2", b"z")
        LoopbackClient(self.nsqd, port=50001)
        producers = self.stats()["producers"]
        self.assertEqual(len(producers), 1)
        self.assertEqual(producers[0]["remote_address"], "127.0.0.1:50000")
        self.assertEqual(producers[0]["pub_counts"], [{"topic": "p1", "count": 2}])
        self.assertEqual(list(producers[0]).index("pub_counts"), list(producers[0]).index("user_agent") + 1)
        # Not filtered by topic, but the counts are.
        self.assertEqual(self.stats("&topic=p2")["producers"][0]["pub_counts"], [{"topic": "p2", "count": 1}])
        self.post("/topic/create?topic=other")
        self.assertNotIn("pub_counts", self.stats("&topic=other")["producers"][0])

    def test_publish_then_consume_counts(self) -> None:
        client = self.consumer("t", "c", rdy=10)
        self.post("/mpub?topic=t", b"1\n2\n3")
        for message in client.messages():
            client.command("FIN " + message.id.decode())
        stats = self.channel_stats("t", "c")
        self.assertEqual(
            (
                stats["message_count"],
                stats["in_flight_count"],
                stats["depth"],
                stats["clients"][0]["finish_count"],
            ),
            (3, 0, 0, 3),
        )

    def test_text(self) -> None:
        self.post("/mpub?topic=t", b"a\nb")
        reply = self.request("GET", "/stats?include_mem=false")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        self.assertIn(b"\nHealth: OK\n", reply.body)
        self.assertIn(
            b"\n   [t              ] depth: 2     be-depth: 0     msgs: 2        e2e%: \n", reply.body
        )
        self.assertIn(b"\nMemory:\n", self.request("GET", "/stats?format=text").body)

    def test_bad_query(self) -> None:
        self.assertError(self.request("GET", "/stats?format=json;x"), 400, "INVALID_REQUEST")


class E2ETests(Base):
    overrides = {"e2e_processing_latency_percentiles": [0.99, 0.5, 1.0]}

    def test_latency_reported(self) -> None:
        client = self.consumer("t", "c", rdy=10)
        self.post("/mpub?topic=t", b"1\n2")
        self.clock.advance(2)
        for message in client.messages():
            client.command("FIN " + message.id.decode())
        topic = self.stats()["topics"][0]
        expected = {
            "count": 2,
            "percentiles": [
                {"quantile": 0.99, "value": 2_000_000_000},
                {"quantile": 0.5, "value": 2_000_000_000},
                {"quantile": 1, "value": 2_000_000_000},
            ],
        }
        self.assertEqual(topic["channels"][0]["e2e_processing_latency"], expected)
        self.assertEqual(topic["e2e_processing_latency"], expected)
        text = self.request("GET", "/stats?include_mem=0").body
        self.assertIn(b"e2e%: 2.0s, 2.0s, 2.0s\n", text)


class ConfigTests(Base):
    overrides = {"lookupd_tcp_addresses": ["127.0.0.1:4160"]}

    def test_get(self) -> None:
        cases = {
            "nsqlookupd_tcp_addresses": b'["127.0.0.1:4160"]',
            "max_rdy_count": b"2500",
            "log_level": b"2",
            "msg_timeout": b"60000000000",
            "max_req_timeout": b"3600000000000",
            "mem_queue_size": b"10000",
            "snappy": b"true",
            "tls_required": b"0",
            "tls_min_version": b"769",
            "id": b"1",
            "e2e_processing_latency_percentiles": b"[]",
            "auth_http_addresses": b"[]",
        }
        for opt, body in cases.items():
            self.assertReply(self.request("GET", f"/config/{opt}"), 200, body, json=True)
        # A string is sent as text, as Go's RespondV1 sends strings.
        self.assertReply(self.request("GET", "/config/broadcast_address"), 200, b"testhost")
        self.assertReply(self.request("GET", "/config/statsd_address"), 200, b"")

    def test_get_unknown(self) -> None:
        for opt in ("nope", "node_id", "lookupd_tcp_addresses", "version", "config", "client_timeout"):
            self.assertError(self.request("GET", f"/config/{opt}"), 400, "INVALID_OPTION")

    def test_put_lookupd_addresses(self) -> None:
        reply = self.request("PUT", "/config/nsqlookupd_tcp_addresses", b'["a:4160", "b:4160"]')
        self.assertReply(reply, 200, b'["a:4160","b:4160"]')
        self.assertEqual(self.nsqd.options.lookupd_tcp_addresses, ["a:4160", "b:4160"])
        self.assertEqual(self.nsqd.lookupd_changes, [["a:4160", "b:4160"]])
        self.assertReply(self.request("PUT", "/config/nsqlookupd_tcp_addresses", b"null"), 200, b"[]")

    def test_put_lookupd_addresses_invalid(self) -> None:
        for body in (b"a:4160", b'"a:4160"', b"[1]", b'{"a":1}', b"[", b'["a",null]'):
            reply = self.request("PUT", "/config/nsqlookupd_tcp_addresses", body)
            self.assertError(reply, 400, "INVALID_VALUE")
        self.assertEqual(self.nsqd.options.lookupd_tcp_addresses, ["127.0.0.1:4160"])
        self.assertEqual(self.nsqd.lookupd_changes, [])

    def test_put_log_level(self) -> None:
        for word, number in (
            ("debug", b"1"),
            ("WARN", b"3"),
            ("error", b"4"),
            ("fatal", b"5"),
            ("info", b"2"),
        ):
            self.assertReply(self.request("PUT", "/config/log_level", word.encode()), 200, number, json=True)
            self.assertEqual(self.nsqd.options.log_level, word.lower())
        for body in (b"debug\n", b"verbose", b"1"):
            self.assertError(self.request("PUT", "/config/log_level", body), 400, "INVALID_VALUE")

    def test_put_body_limits(self) -> None:
        self.assertError(self.request("PUT", "/config/log_level", b""), 413, "INVALID_VALUE")
        big = b"x" * (self.nsqd.options.max_msg_size + 1)
        self.assertError(self.request("PUT", "/config/log_level", big), 413, "INVALID_VALUE")
        # The body is checked before the option name.
        self.assertError(self.request("PUT", "/config/max_rdy_count", b""), 413, "INVALID_VALUE")

    def test_put_other_options(self) -> None:
        for opt in ("max_rdy_count", "nope"):
            self.assertError(self.request("PUT", f"/config/{opt}", b"5"), 400, "INVALID_OPTION")


class SiteTests(Base):
    overrides = {"max_msg_size": 100, "max_body_size": 1000}

    def test_body_limits(self) -> None:
        limit = self.http.body_limit
        self.assertEqual(limit(b"POST", b"/pub?topic=t"), BodyLimit(100, "MSG_TOO_BIG"))
        self.assertEqual(limit(b"GET", b"/put"), BodyLimit(100, "MSG_TOO_BIG"))
        self.assertEqual(limit(b"POST", b"/mpub?topic=t&binary=1"), BodyLimit(1000, "BODY_TOO_BIG"))
        self.assertEqual(limit(b"POST", b"/mput"), BodyLimit(1000, "BODY_TOO_BIG"))
        self.assertEqual(limit(b"PUT", b"/config/log_level"), BodyLimit(100, "INVALID_VALUE"))
        self.assertEqual(limit(b"POST", b"/topic/create"), BodyLimit(SMALL_BODY_LIMIT, "BODY_TOO_BIG"))
        self.assertEqual(limit(b"POST", b"http://host:4151/pub?topic=t"), BodyLimit(100, "MSG_TOO_BIG"))

    def test_make_site(self) -> None:
        site = make_site(self.nsqd, self.clock, timeout=30.0, request_timeout=10.0)
        self.assertEqual((site.timeOut, site.request_timeout), (30.0, 10.0))
        self.assertEqual(site.body_limit(b"POST", b"/pub"), BodyLimit(100, "MSG_TOO_BIG"))


# -- /stats against spec 3.3, field by field ------------------------------------------------------

#: Spec 3.3's key order for each object of the /stats document.
DOCUMENT_KEYS = ["version", "health", "start_time", "topics", "memory", "producers"]
TOPIC_KEYS = [
    "topic_name",
    "channels",
    "depth",
    "backend_depth",
    "message_count",
    "message_bytes",
    "paused",
    "e2e_processing_latency",
]
CHANNEL_KEYS = [
    "channel_name",
    "depth",
    "backend_depth",
    "in_flight_count",
    "deferred_count",
    "message_count",
    "requeue_count",
    "timeout_count",
    "client_count",
    "clients",
    "paused",
    "e2e_processing_latency",
]
CLIENT_KEYS = [
    "client_id",
    "hostname",
    "version",
    "remote_address",
    "state",
    "ready_count",
    "in_flight_count",
    "message_count",
    "finish_count",
    "requeue_count",
    "connect_ts",
    "sample_rate",
    "deflate",
    "snappy",
    "user_agent",
    "tls",
    "tls_cipher_suite",
    "tls_version",
    "tls_negotiated_protocol",
    "tls_negotiated_protocol_is_mutual",
]
PRODUCER_KEYS = [*CLIENT_KEYS[:15], "pub_counts", *CLIENT_KEYS[15:]]
MEMORY_KEYS = [
    "heap_objects",
    "heap_idle_bytes",
    "heap_in_use_bytes",
    "heap_released_bytes",
    "gc_pause_usec_100",
    "gc_pause_usec_99",
    "gc_pause_usec_95",
    "next_gc_bytes",
    "gc_total_runs",
]


class StatsSchemaTests(Base):
    """
    One topic with one channel, one consumer on it and one producer, checked against every field
    of spec 3.3 (values, types and key order) in JSON, and line by line in the text format.
    """

    def setUp(self) -> None:
        super().setUp()
        consumer = LoopbackClient(self.nsqd, port=39644)
        consumer.identify(
            client_id="cons", hostname="cons.host", user_agent="pytest/0.1", feature_negotiation=True
        )
        consumer.subscribe("t1", "ch1", rdy=2)
        self.clock.advance(5)
        producer = LoopbackClient(self.nsqd, port=50000)
        producer.command("PUB t1", b"hello")
        producer.command("MPUB t1", binary_mpub([b"a", b"bb"]))
        self.assertEqual([f.data for f in producer.frames()], [b"OK", b"OK"])
        first, second = consumer.messages()
        consumer.command("FIN " + first.id.decode())
        consumer.command(f"REQ {second.id.decode()} 0")
        self.assertEqual(len(consumer.messages()), 2)
        self.clock.advance(2)

    def consumer_stats(self) -> dict[str, Any]:
        return {
            "client_id": "cons",
            "hostname": "cons.host",
            "version": "V2",
            "remote_address": "127.0.0.1:39644",
            "state": 3,
            "ready_count": 2,
            "in_flight_count": 2,
            "message_count": 4,
            "finish_count": 1,
            "requeue_count": 1,
            "connect_ts": 1700000000,
            "sample_rate": 0,
            "deflate": False,
            "snappy": False,
            "user_agent": "pytest/0.1",
            "tls": False,
            "tls_cipher_suite": "",
            "tls_version": "",
            "tls_negotiated_protocol": "",
            "tls_negotiated_protocol_is_mutual": False,
        }

    def producer_stats(self) -> dict[str, Any]:
        # No IDENTIFY: the IP stands in for client_id and hostname.
        return {
            "client_id": "127.0.0.1",
            "hostname": "127.0.0.1",
            "version": "V2",
            "remote_address": "127.0.0.1:50000",
            # Never identified nor subscribed: still in the initial state.
            "state": 0,
            "ready_count": 0,
            "in_flight_count": 0,
            "message_count": 0,
            "finish_count": 0,
            "requeue_count": 0,
            "connect_ts": 1700000005,
            "sample_rate": 0,
            "deflate": False,
            "snappy": False,
            "user_agent": "",
            "pub_counts": [{"topic": "t1", "count": 3}],
            "tls": False,
            "tls_cipher_suite": "",
            "tls_version": "",
            "tls_negotiated_protocol": "",
            "tls_negotiated_protocol_is_mutual": False,
        }

    def test_json(self) -> None:
        reply = self.request("GET", "/stats?format=json")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), JSON)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        document = json.loads(reply.body)
        self.assertEqual(list(document), DOCUMENT_KEYS)
        self.assertEqual(
            (document["version"], document["health"], document["start_time"]), ("1.3.0", "OK", 1700000000)
        )
        self.assertEqual(list(document["memory"]), MEMORY_KEYS)
        for key, value in document["memory"].items():
            self.assertIs(type(value), int, key)
            self.assertGreaterEqual(value, 0, key)
        (topic,) = document["topics"]
        self.assertEqual(list(topic), TOPIC_KEYS)
        (channel,) = topic["channels"]
        self.assertEqual(list(channel), CHANNEL_KEYS)
        (client,) = channel["clients"]
        self.assertEqual(list(client), CLIENT_KEYS)
        self.assertEqual(client, self.consumer_stats())
        disabled = {"count": 0, "percentiles": None}
        expected_channel = {
            "channel_name": "ch1",
            "depth": 0,
            "backend_depth": 0,
            "in_flight_count": 2,
            "deferred_count": 0,
            # Requeues are not counted again.
            "message_count": 3,
            "requeue_count": 1,
            "timeout_count": 0,
            "client_count": 1,
            "clients": [self.consumer_stats()],
            "paused": False,
            "e2e_processing_latency": disabled,
        }
        self.assertEqual(channel, expected_channel)
        self.assertEqual(
            topic,
            {
                "topic_name": "t1",
                "channels": [expected_channel],
                "depth": 0,
                "backend_depth": 0,
                "message_count": 3,
                "message_bytes": 8,
                "paused": False,
                "e2e_processing_latency": disabled,
            },
        )
        (producer,) = document["producers"]
        self.assertEqual(list(producer), PRODUCER_KEYS)
        self.assertEqual(producer, self.producer_stats())

    def test_json_with_latency(self) -> None:
        nsqd = make_nsqd(self.clock, e2e_processing_latency_percentiles=[0.99])
        stub = StubTreq(NSQDHTTP(nsqd).resource())
        client = LoopbackClient(nsqd)
        client.subscribe("t1", "ch1", rdy=1)
        nsqd.get_topic("t1").publish([b"x"])
        nsqd.run_dispatch()
        self.clock.advance(11.5)
        client.command("FIN " + client.messages()[0].id.decode())
        document = json.loads(call(stub, "GET", "/stats?format=json").body)
        latency = {"count": 1, "percentiles": [{"quantile": 0.99, "value": 11_500_000_000}]}
        self.assertEqual(document["topics"][0]["e2e_processing_latency"], latency)
        self.assertEqual(document["topics"][0]["channels"][0]["e2e_processing_latency"], latency)

    def test_text(self) -> None:
        reply = self.request("GET", "/stats")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        page = reply.body.decode("utf-8")
        head, _, memory = page.partition("\nMemory:\n")
        self.assertEqual(
            head,
            f"{version_line()}\nstart_time 2023-11-14T22:13:20Z\nuptime 7s\n\nHealth: OK\n",
        )
        memory_lines, _, rest = memory.partition("\n\n")
        self.assertEqual([line.split()[0] for line in memory_lines.splitlines()], MEMORY_KEYS)
        for line in memory_lines.splitlines():
            self.assertRegex(line, r"^   [a-z_0-9]+ *\t\d+$")
        self.assertEqual(
            "\n\n" + rest,
            "\n\nTopics:\n"
            "   [t1             ] depth: 0     be-depth: 0     msgs: 3        e2e%: \n"
            "      [ch1                      ] depth: 0     be-depth: 0     inflt: 2    def: 0    "
            "re-q: 1     timeout: 0     msgs: 3        e2e%: \n"
            "        [V2 cons.host:39644 pytest/0.1] state: 3 inflt: 2    rdy: 2    fin: 1        "
            "re-q: 1        msgs: 4        connected: 7s\n"
            "\nProducers:\n"
            "   [V2 127.0.0.1:50000      ] msgs: 3        topics: t1=3 connected: 2s\n",
        )

    def test_text_paused(self) -> None:
        self.post("/topic/pause?topic=t1")
        self.post("/channel/pause?topic=t1&channel=ch1")
        page = self.request("GET", "/stats?include_mem=false").body.decode("utf-8")
        self.assertIn("\n*P [t1             ] depth: 0", page)
        self.assertIn("\n   *P [ch1                      ] depth: 0", page)


# -- hardening (beyond NSQ) -----------------------------------------------------------------------


def call_with(
    stub: Any, method: str, path: str, headers: dict[bytes, bytes], body: bytes | None = None
) -> Reply:
    """Like C{call}, with request headers."""
    replies: list[Reply] = []

    def got(response: Any) -> Any:
        found = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
        return stub.content(response).addCallback(
            lambda content: replies.append(Reply(response.code, found, content))
        )

    raw = {name: [value] for name, value in headers.items()}
    stub.request(method, "http://nsqd.test" + path, data=body, headers=raw).addCallback(got)
    stub.flush()
    assert replies, "no response"
    return replies[0]


CROSS_SITE = b'{"message":"CROSS_SITE_REQUEST"}'


class CrossSiteTests(Base):
    def send(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Reply:
        raw = {name.replace("_", "-").encode(): value.encode() for name, value in headers.items()}
        return call_with(self.stub, method, path, raw, body)

    def test_fetch_site_cross_site_refused(self) -> None:
        reply = self.send("POST", "/pub?topic=t", b"x", Sec_Fetch_Site="cross-site")
        self.assertReply(reply, 403, CROSS_SITE)
        self.assertEqual(self.nsqd.topics, {})

    def test_foreign_origin_refused(self) -> None:
        for origin in (
            "http://evil.example",
            "http://nsqd.test:8080",
            "https://nsqd.test",
            "null",
            "file://",
        ):
            reply = self.send("POST", "/topic/create?topic=t", Origin=origin)
            self.assertReply(reply, 403, CROSS_SITE)
        self.assertEqual(self.nsqd.topics, {})

    def test_every_mutating_endpoint_guarded(self) -> None:
        self.post("/channel/create?topic=t&channel=c")
        self.post("/topic/create?topic=t")
        self.post("/channel/create?topic=t&channel=c")
        requests = [
            ("POST", "/pub?topic=t"),
            ("POST", "/mpub?topic=t"),
            ("POST", "/put?topic=t"),
            ("GET", "/put?topic=t"),
            ("GET", "/mput?topic=t"),
            ("PUT", "/config/log_level"),
            ("DELETE", "/topic/delete?topic=t"),
        ]
        for action in ("create", "delete", "empty", "pause", "unpause"):
            requests.append(("POST", f"/topic/{action}?topic=t"))
            requests.append(("POST", f"/channel/{action}?topic=t&channel=c"))
            for kind in ("topic", "channel"):
                for method in ("GET", "POST"):
                    requests.append((method, f"/{action}_{kind}?topic=t&channel=c"))
        for method, path in requests:
            reply = self.send(method, path, b"debug", Sec_Fetch_Site="cross-site")
            self.assertEqual((reply.code, reply.body), (403, CROSS_SITE), (method, path))
        topic = self.nsqd.topics["t"]
        self.assertEqual((topic.message_count, topic.paused, list(topic.channels)), (0, False, ["c"]))
        self.assertEqual(self.nsqd.options.log_level, "info")

    def test_same_site_and_programs_allowed(self) -> None:
        self.assertReply(self.send("POST", "/pub?topic=t", b"a"), 200, b"OK")
        for fetch_site in ("same-origin", "none", "same-site"):
            self.assertReply(self.send("POST", "/pub?topic=t", b"a", Sec_Fetch_Site=fetch_site), 200, b"OK")
        for origin in ("http://nsqd.test", "HTTP://NSQD.TEST", "http://nsqd.test:80"):
            self.assertReply(self.send("POST", "/pub?topic=t", b"a", Origin=origin), 200, b"OK")
        self.assertEqual(self.nsqd.topics["t"].message_count, 7)

    def test_reads_allowed_cross_site(self) -> None:
        for path in ("/ping", "/info", "/stats", "/metrics", "/config/log_level"):
            reply = self.send("GET", path, Sec_Fetch_Site="cross-site", Origin="http://evil.example")
            self.assertEqual(reply.code, 200, path)

    def test_tls_gate_first(self) -> None:
        self.nsqd.options.tls_required = "true"
        self.nsqd.https_port = 4152
        reply = self.send("POST", "/pub?topic=t", b"x", Sec_Fetch_Site="cross-site")
        self.assertEqual(reply.code, 403)
        self.assertEqual(reply.body, b'{"message": "TLS_REQUIRED", "https_port": 4152}')

    def test_changes_state(self) -> None:
        self.assertTrue(changes_state(b"POST", b"/stats"))
        self.assertTrue(changes_state(b"GET", b"/delete_topic?topic=t"))
        self.assertTrue(changes_state(b"GET", b"http://nsqd:4151/put?topic=t"))
        self.assertFalse(changes_state(b"GET", b"/stats?format=json"))
        self.assertFalse(changes_state(b"HEAD", b"/ping"))
        self.assertFalse(changes_state(b"OPTIONS", b"/pub"))


class OriginMatchTests(SynchronousTestCase):
    def test_matches(self) -> None:
        cases = [
            ("http://h:4151", "h:4151", False),
            ("http://H:4151", "h:4151", False),
            ("http://h", "h:80", False),
            ("http://h:80", "h", False),
            ("https://h", "h", True),
            ("https://h:443", "h:443", True),
            ("http://[::1]:4151", "[::1]:4151", False),
            ("http://10.0.0.1:4151", "10.0.0.1:4151", False),
        ]
        for origin, host, secure in cases:
            self.assertTrue(origin_matches_host(origin, host, secure), (origin, host))

    def test_mismatches(self) -> None:
        cases = [
            ("http://h:4151", "h:4152", False),
            ("http://other:4151", "h:4151", False),
            ("https://h", "h", False),
            ("http://h", "h", True),
            ("null", "h", False),
            ("ftp://h", "h:21", False),
            ("http://h:4151", None, False),
            ("http://h/path", "h", False),
            ("http://h:x", "h", False),
            ("http://[::1]:4151", "::1:4151", False),
            ("http://[::1", "[::1", False),
            ("http://", "", False),
        ]
        for origin, host, secure in cases:
            self.assertFalse(origin_matches_host(origin, host, secure), (origin, host))


class DebugDisabledTests(Base):
    def test_not_found(self) -> None:
        for method, path in (
            ("GET", "/debug/threads"),
            ("GET", "/debug/gc"),
            ("POST", "/debug/freememory"),
            ("GET", "/debug/pprof/"),
        ):
            self.assertError(self.request(method, path), 404, "NOT_FOUND")

    def test_option_defaults_off(self) -> None:
        self.assertFalse(self.nsqd.options.http_debug)
        self.assertReply(self.request("GET", "/config/http_debug"), 200, b"false", json=True)


class DebugTests(Base):
    overrides = {"http_debug": True}

    def test_threads(self) -> None:
        reply = self.request("GET", "/debug/threads")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        text = reply.body.decode("utf-8")
        self.assertIn("thread MainThread (", text)
        self.assertIn("in test_threads", text)

    def test_thread_stacks_names_other_threads(self) -> None:
        started = threading.Event()
        release = threading.Event()

        def park() -> None:
            started.set()
            release.wait(10)

        worker = threading.Thread(target=park, name="parked-worker")
        worker.start()
        try:
            started.wait(10)
            text = thread_stacks()
        finally:
            release.set()
            worker.join(10)
        self.assertIn("thread parked-worker (", text)
        self.assertIn("in park", text)

    def test_gc(self) -> None:
        reply = self.request("GET", "/debug/gc")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), JSON)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
        report = json.loads(reply.body)
        self.assertEqual(
            list(report),
            ["enabled", "thresholds", "counts", "generations", "tracked_objects", "uncollectable", "frozen"],
        )
        self.assertEqual(len(report["generations"]), len(report["thresholds"]))
        self.assertGreater(report["tracked_objects"], 0)

    def test_freememory(self) -> None:
        before = sum(generation["collections"] for generation in gc.get_stats())
        self.assertReply(self.post("/debug/freememory"), 200, b"")
        after = sum(generation["collections"] for generation in gc.get_stats())
        self.assertGreater(after, before)
        self.assertError(self.request("GET", "/debug/freememory"), 405, "METHOD_NOT_ALLOWED")

    def test_freememory_cross_site(self) -> None:
        reply = call_with(self.stub, "POST", "/debug/freememory", {b"Sec-Fetch-Site": b"cross-site"})
        self.assertReply(reply, 403, CROSS_SITE)
