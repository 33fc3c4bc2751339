"""Tests for L{twisted_nsq.wire.lookup}: the exact bytes nsqd sends to nsqlookupd, and its reply parsing."""

from __future__ import annotations

import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.wire._chunks import byte_by_byte, cut_points, split_at
from twisted_nsq.wire.lookup import (
    MAGIC_V1,
    PING,
    LookupdInfo,
    LookupReplyError,
    ReplyParser,
    encode_identify,
    encode_register,
    encode_unregister,
    identify_body,
    is_error_reply,
    parse_identify_reply,
)

IDENTIFY_REPLY = (
    b'{"tcp_port":4160,"http_port":4161,"version":"1.3.0",'
    b'"broadcast_address":"lookupd-1","hostname":"lookupd-host"}'
)


def sized(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


class CommandTests(SynchronousTestCase):
    """Every command, byte for byte."""

    def test_magic_and_ping(self) -> None:
        self.assertEqual(MAGIC_V1, b"  V1")
        self.assertEqual(PING, b"PING\n")

    def test_identify_body_go_key_order(self) -> None:
        """Go marshals a map: keys sorted, compact."""
        body = identify_body(
            broadcast_address="127.0.0.1", hostname="box", http_port=4151, tcp_port=4150, version="1.3.0"
        )
        self.assertEqual(
            body,
            b'{"broadcast_address":"127.0.0.1","hostname":"box","http_port":4151,'
            b'"tcp_port":4150,"version":"1.3.0"}',
        )

    def test_identify_body_escapes_like_go(self) -> None:
        """HTML characters are escaped; other non-ASCII text stays UTF-8."""
        body = identify_body(
            broadcast_address="a<b>&", hostname="h\u00e9", http_port=1, tcp_port=2, version="v"
        )
        self.assertIn(b'"broadcast_address":"a\\u003cb\\u003e\\u0026"', body)
        self.assertIn('"hostname":"h\u00e9"'.encode(), body)
        self.assertEqual(json.loads(body)["broadcast_address"], "a<b>&")

    def test_identify(self) -> None:
        self.assertEqual(encode_identify(b"{}"), b"IDENTIFY\n\x00\x00\x00\x02{}")
        body = b"x" * 300
        self.assertEqual(encode_identify(body), b"IDENTIFY\n\x00\x00\x01\x2c" + body)

    def test_register(self) -> None:
        self.assertEqual(encode_register("t"), b"REGISTER t\n")
        self.assertEqual(encode_register("t", "c"), b"REGISTER t c\n")
        self.assertEqual(encode_register("t", ""), b"REGISTER t\n")
        self.assertEqual(encode_register("t#ephemeral", "c#ephemeral"), b"REGISTER t#ephemeral c#ephemeral\n")

    def test_unregister(self) -> None:
        self.assertEqual(encode_unregister("t"), b"UNREGISTER t\n")
        self.assertEqual(encode_unregister("t", "c"), b"UNREGISTER t c\n")
        self.assertEqual(encode_unregister("t", None), b"UNREGISTER t\n")


class ReplyTests(SynchronousTestCase):
    """lookupd's replies: OK, its IDENTIFY JSON, E_ errors."""

    def test_error_reply(self) -> None:
        self.assertTrue(is_error_reply(b"E_INVALID client must IDENTIFY"))
        self.assertTrue(is_error_reply(b"E_BAD_BODY IDENTIFY missing fields"))
        self.assertFalse(is_error_reply(b"OK"))
        self.assertFalse(is_error_reply(IDENTIFY_REPLY))

    def test_identify_reply(self) -> None:
        self.assertEqual(
            parse_identify_reply(IDENTIFY_REPLY),
            LookupdInfo(
                tcp_port=4160,
                http_port=4161,
                version="1.3.0",
                broadcast_address="lookupd-1",
                hostname="lookupd-host",
            ),
        )

    def test_identify_reply_lenient_as_go(self) -> None:
        """Missing fields stay empty; unknown ones (master's topology fields) are ignored."""
        info = parse_identify_reply(b'{"http_port":4161,"topology_zone":"z","broadcast_address":"b"}')
        self.assertEqual(info, LookupdInfo(http_port=4161, broadcast_address="b"))
        self.assertEqual(parse_identify_reply(b"{}"), LookupdInfo())

    def test_identify_reply_invalid(self) -> None:
        for reply in (
            b"OK",
            b"E_INVALID cannot IDENTIFY again",
            b"[1]",
            b'{"http_port":"4161"}',
            b'{"http_port":true}',
            b'{"broadcast_address":1}',
            b"\xff",
        ):
            self.assertRaises(LookupReplyError, parse_identify_reply, reply)

    def test_http_address(self) -> None:
        self.assertEqual(LookupdInfo(http_port=4161, broadcast_address="h").http_address(), "h:4161")
        self.assertEqual(LookupdInfo(http_port=4161, broadcast_address="::1").http_address(), "[::1]:4161")
        self.assertIsNone(LookupdInfo(http_port=4161).http_address())


STREAM = sized(b"OK") + sized(IDENTIFY_REPLY) + sized(b"") + sized(b"E_INVALID invalid command X")
REPLIES = [b"OK", IDENTIFY_REPLY, b"", b"E_INVALID invalid command X"]


class ReplyParserTests(SynchronousTestCase):
    """C{[int32 size][data]} replies, however the stream is cut."""

    def feed_all(self, chunks: list[bytes], max_size: int = 1024) -> list[bytes]:
        parser = ReplyParser(max_size)
        replies: list[bytes] = []
        for chunk in chunks:
            replies.extend(parser.feed(chunk))
        return replies

    def test_whole(self) -> None:
        self.assertEqual(ReplyParser(1024).feed(STREAM), REPLIES)

    def test_byte_by_byte(self) -> None:
        self.assertEqual(self.feed_all(byte_by_byte(STREAM)), REPLIES)

    def test_trailing_partial(self) -> None:
        parser = ReplyParser(1024)
        self.assertEqual(parser.feed(sized(b"OK") + sized(b"OK")[:5]), [b"OK"])
        self.assertEqual(parser.feed(b""), [])
        self.assertEqual(parser.feed(b"K"), [b"OK"])

    @settings(max_examples=150, deadline=None)
    @given(cut_points(len(STREAM)))
    def test_split_points(self, cuts: list[int]) -> None:
        self.assertEqual(self.feed_all(split_at(STREAM, cuts)), REPLIES)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.binary(max_size=40), max_size=10), st.data())
    def test_any_replies(self, replies: list[bytes], data: st.DataObject) -> None:
        stream = b"".join(sized(reply) for reply in replies)
        cuts = data.draw(cut_points(len(stream)))
        self.assertEqual(self.feed_all(split_at(stream, cuts), max_size=40), replies)

    def test_limit(self) -> None:
        """A reply above the limit is refused from its size alone, before its data arrives."""
        parser = ReplyParser(4)
        self.assertEqual(parser.feed(sized(b"1234")), [b"1234"])
        self.assertRaises(LookupReplyError, parser.feed, struct.pack(">i", 5))

    def test_negative_size(self) -> None:
        self.assertRaises(LookupReplyError, ReplyParser(10).feed, struct.pack(">i", -1))

    def test_long_stream_compacts(self) -> None:
        """Consumed bytes do not pile up in the buffer."""
        parser = ReplyParser(100_000)
        big = sized(b"x" * 70_000)
        self.assertEqual(parser.feed(big + big[:10]), [b"x" * 70_000])
        self.assertEqual(parser.feed(big[10:]), [b"x" * 70_000])
        self.assertLess(len(parser._buffer), 10)
