"""
Tests for L{twisted_nsq.nsqlookupd.protocol}: nsqlookupd's TCP protocol V1 over a
L{StringTransport}, with the exact reply bytes of every command and error, each conversation
fed whole, byte by byte and split at arbitrary points.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from hypothesis import given, settings
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.wire._chunks import byte_by_byte, cut_points, split_at
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.protocol import (
    CLOSE_GRACE,
    MAX_IDENTIFY_BODY,
    MAX_LINE_LENGTH,
    LookupdFactory,
    LookupdProtocol,
    decode_identify,
    reply,
    trim_space,
)
from twisted_nsq.nsqlookupd.registration import Registration

_INT32 = struct.Struct(">i")

MAGIC = b"  V1"
OK = b"\x00\x00\x00\x02OK"
NSQD_INFO = {
    "broadcast_address": "nsqd.local",
    "hostname": "nsqd-host",
    "http_port": 4151,
    "tcp_port": 4150,
    "version": "1.3.0",
}
IDENTIFY_REPLY = (
    b'{"broadcast_address":"lookupd.local","hostname":"lookupd-host","http_port":4161,'
    b'"tcp_port":4160,"version":"1.3.0"}'
)


def identify(fields: object = None, raw: bytes | None = None) -> bytes:
    """An IDENTIFY command with C{fields} as its JSON body (or C{raw} as the body)."""
    body = raw if raw is not None else json.dumps(NSQD_INFO if fields is None else fields).encode()
    return b"IDENTIFY\n" + _INT32.pack(len(body)) + body


def error(text: bytes) -> bytes:
    return reply(text)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        options = NSQLookupdOptions(broadcast_address="lookupd.local")
        self.lookupd = NSQLookupd(options, self.clock, hostname=lambda: "lookupd-host")
        self.lookupd.tcp_port, self.lookupd.http_port = 4160, 4161
        self.factory = LookupdFactory(self.lookupd)

    def connect(
        self, port: int = 40000, address: IPv4Address | IPv6Address | UNIXAddress | None = None
    ) -> tuple[LookupdProtocol, StringTransport]:
        peer = address if address is not None else IPv4Address("TCP", "127.0.0.1", port)
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def run_chunks(self, chunks: list[bytes], port: int = 40000) -> tuple[LookupdProtocol, StringTransport]:
        protocol, transport = self.connect(port)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        return protocol, transport

    def converse(self, data: bytes, expected: bytes, closed: bool) -> None:
        """Feed C{data} whole, byte by byte and in halves; each time the replies are C{expected}."""
        splitters: list[Callable[[bytes], list[bytes]]] = [
            lambda d: [d],
            byte_by_byte,
            lambda d: split_at(d, [len(d) // 2]),
        ]
        for port, split in enumerate(splitters, start=41000):
            protocol, transport = self.run_chunks(split(data), port)
            self.assertEqual(transport.value(), expected)
            self.assertEqual(transport.disconnecting, closed)
            protocol.connectionLost(Failure(ConnectionError()))

    def fails(self, data: bytes, text: bytes, before: bytes = b"") -> None:
        """C{data} after the magic gets C{before}, then the fatal error C{text}, and is closed."""
        self.converse(MAGIC + data, before + error(text), closed=True)


class MagicTests(Base):
    def test_good_magic(self) -> None:
        self.converse(MAGIC + b"PING\n", OK, closed=False)

    def test_bad_magic(self) -> None:
        self.converse(b"  V2PING\n", b"\x00\x00\x00\x0eE_BAD_PROTOCOL", closed=True)

    def test_bad_magic_http(self) -> None:
        self.converse(b"GET / HTTP/1.1\r\n\r\n", error(b"E_BAD_PROTOCOL"), closed=True)

    def test_nothing_before_the_magic_is_complete(self) -> None:
        protocol, transport = self.run_chunks([b"  V"])
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        protocol.dataReceived(b"1PING\n")
        self.assertEqual(transport.value(), OK)

    def test_no_read_deadline(self) -> None:
        _, transport = self.run_chunks([MAGIC])
        self.clock.advance(86400)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(transport.disconnecting)


class PingTests(Base):
    def test_ping_before_identify(self) -> None:
        self.converse(MAGIC + b"PING\nPING\n", OK + OK, closed=False)

    def test_ping_refreshes_last_update(self) -> None:
        protocol, _ = self.run_chunks([MAGIC + identify()])
        assert protocol.peer is not None
        self.assertEqual(protocol.peer.last_update, 1000)
        self.clock.advance(15)
        protocol.dataReceived(b"PING\n")
        self.assertEqual(protocol.peer.last_update, 1015)

    def test_ping_with_arguments(self) -> None:
        self.converse(MAGIC + b"PING now\n", OK, closed=False)


class IdentifyTests(Base):
    def test_identify(self) -> None:
        self.converse(MAGIC + identify(), reply(IDENTIFY_REPLY), closed=False)

    def test_identify_registers_client(self) -> None:
        protocol, _ = self.run_chunks([MAGIC + identify()], port=40123)
        peer = protocol.peer
        assert peer is not None
        self.assertEqual(
            (peer.id, peer.remote_address, peer.hostname, peer.broadcast_address),
            ("127.0.0.1:40123", "127.0.0.1:40123", "nsqd-host", "nsqd.local"),
        )
        self.assertEqual((peer.tcp_port, peer.http_port, peer.version), (4150, 4151, "1.3.0"))
        db = self.lookupd.db
        self.assertEqual([p.peer for p in db.producers(Registration("client", "", ""))], [peer])

    def test_reply_reflects_ports_and_hostname_now(self) -> None:
        self.lookupd.tcp_port, self.lookupd.http_port = 1, 2
        self.lookupd.options.broadcast_address = "<b&>"
        _, transport = self.run_chunks([MAGIC + identify()])
        self.assertEqual(
            transport.value(),
            reply(
                b'{"broadcast_address":"\\u003cb\\u0026\\u003e","hostname":"lookupd-host","http_port":2,'
                b'"tcp_port":1,"version":"1.3.0"}'
            ),
        )

    def test_remote_address_overrides_body(self) -> None:
        protocol, _ = self.run_chunks([MAGIC + identify(dict(NSQD_INFO, remote_address="1.2.3.4:5"))])
        assert protocol.peer is not None
        self.assertEqual(protocol.peer.remote_address, "127.0.0.1:40000")

    def test_hostname_optional_and_extra_fields_ignored(self) -> None:
        fields = {k: v for k, v in NSQD_INFO.items() if k != "hostname"}
        fields.update(topology_zone="z", extra={"nested": [1, 2.5, None]})
        self.converse(MAGIC + identify(fields), reply(IDENTIFY_REPLY), closed=False)

    def test_identify_again(self) -> None:
        # Refused on the command line, before any body is read.
        self.fails(identify() + b"IDENTIFY\n", b"E_INVALID cannot IDENTIFY again", reply(IDENTIFY_REPLY))

    def test_missing_fields(self) -> None:
        for name, empty in (("broadcast_address", ""), ("tcp_port", 0), ("http_port", 0), ("version", "")):
            for fields in (
                {k: v for k, v in NSQD_INFO.items() if k != name},
                dict(NSQD_INFO, **{name: empty}),
                dict(NSQD_INFO, **{name: None}),
            ):
                self.fails(identify(fields), b"E_BAD_BODY IDENTIFY missing fields")

    def test_null_body_is_missing_fields(self) -> None:
        self.fails(identify(raw=b"null"), b"E_BAD_BODY IDENTIFY missing fields")

    def test_bad_json(self) -> None:
        for raw in (
            b"{",
            b"not json",
            b"[]",
            b'"text"',
            b"42",
            b'{"tcp_port": NaN}',
            b'{"x": Infinity}',
            b'{"tcp_port": "4150"}',
            b'{"tcp_port": 4150.0}',
            b'{"tcp_port": 4e3}',
            b'{"tcp_port": true}',
            b'{"tcp_port": 9223372036854775808}',
            b'{"version": 1}',
            b'{"hostname": ["a"]}',
            b'{"remote_address": {}}',
            b"\xef\xbb\xbf{}",
        ):
            self.fails(identify(raw=raw), b"E_BAD_BODY IDENTIFY failed to decode JSON body")

    def test_empty_body(self) -> None:
        self.fails(b"IDENTIFY\n\x00\x00\x00\x00", b"E_BAD_BODY IDENTIFY failed to decode JSON body")

    def test_negative_body_size(self) -> None:
        self.fails(b"IDENTIFY\n\xff\xff\xff\xff", b"E_BAD_BODY IDENTIFY failed to read body")

    def test_body_too_big_refused_before_buffering(self) -> None:
        size = _INT32.pack(MAX_IDENTIFY_BODY + 1)
        self.fails(
            b"IDENTIFY\n" + size,
            b"E_BAD_BODY IDENTIFY body too big %d > %d" % (MAX_IDENTIFY_BODY + 1, MAX_IDENTIFY_BODY),
        )

    def test_largest_body(self) -> None:
        body = json.dumps(NSQD_INFO).encode()
        body = body[:-1] + b', "pad": "' + b"x" * (MAX_IDENTIFY_BODY - len(body) - 11) + b'"}'
        self.assertEqual(len(body), MAX_IDENTIFY_BODY)
        _, transport = self.run_chunks([MAGIC + identify(raw=body)])
        self.assertEqual(transport.value(), reply(IDENTIFY_REPLY))

    def test_body_waits_for_all_bytes(self) -> None:
        data = MAGIC + identify()
        protocol, transport = self.run_chunks([data[:-1]])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(data[-1:] + b"PING\n")
        self.assertEqual(transport.value(), reply(IDENTIFY_REPLY) + OK)


class DecodeIdentifyTests(SynchronousTestCase):
    """Go's json.Unmarshal rules for the IDENTIFY body."""

    def test_keys_case_insensitive_last_wins(self) -> None:
        fields = decode_identify(
            b'{"TCP_PORT": 1, "Tcp_Port": 2, "Version": "v", "hostname": "a", "HOSTNAME": null}'
        )
        self.assertEqual((fields["tcp_port"], fields["version"], fields["hostname"]), (2, "v", "a"))

    def test_unicode_folding(self) -> None:
        # The Kelvin sign folds to k, the long s to s, as in Go.
        fields = decode_identify('{"ver\u017fion": "v", "hostname": "\u212a"}'.encode())
        self.assertEqual((fields["version"], fields["hostname"]), ("v", "\u212a"))

    def test_invalid_utf8_and_lone_surrogates_become_replacement_characters(self) -> None:
        fields = decode_identify(b'{"hostname": "a\xffb", "version": "\\ud800"}')
        self.assertEqual((fields["hostname"], fields["version"]), ("a\ufffdb", "\ufffd"))

    def test_huge_numbers_in_unknown_fields(self) -> None:
        fields = decode_identify(b'{"other": ' + b"9" * 5000 + b', "tcp_port": -1}')
        self.assertEqual(fields["tcp_port"], -1)
        with self.assertRaises(ValueError):
            decode_identify(b'{"tcp_port": ' + b"9" * 5000 + b"}")

    def test_deep_nesting(self) -> None:
        with self.assertRaises(ValueError):
            decode_identify(b"[" * 100000)


class RegisterTests(Base):
    def identified(self, port: int = 40000) -> tuple[LookupdProtocol, StringTransport]:
        protocol, transport = self.run_chunks([MAGIC + identify()], port)
        transport.clear()
        return protocol, transport

    def test_register_topic_and_channel(self) -> None:
        self.converse(
            MAGIC + identify() + b"REGISTER t c\nREGISTER u\n", reply(IDENTIFY_REPLY) + OK + OK, closed=False
        )

    def test_register_effects(self) -> None:
        protocol, transport = self.identified()
        protocol.dataReceived(b"REGISTER t c\nREGISTER u\n")
        self.assertEqual(transport.value(), OK + OK)
        db = self.lookupd.db
        self.assertEqual(db.topics(), ["t", "u"])
        self.assertEqual(db.channels("t"), ["c"])
        self.assertEqual(db.lookup("t"), (["c"], [protocol.peer]))

    def test_unregister(self) -> None:
        protocol, transport = self.identified()
        protocol.dataReceived(b"REGISTER t c\nREGISTER t d\nUNREGISTER t c\n")
        db = self.lookupd.db
        assert protocol.peer is not None
        self.assertEqual(db.producers(Registration("channel", "t", "c")), [])
        self.assertEqual(len(db.producers(Registration("channel", "t", "d"))), 1)
        protocol.dataReceived(b"UNREGISTER t\n")
        self.assertEqual(transport.value(), OK * 4)
        self.assertEqual(db.lookup_registrations(protocol.peer.id), [Registration("client", "", "")])
        self.assertEqual(db.channels("t"), ["c", "d"])

    def test_unregister_ephemeral_channel(self) -> None:
        protocol, _ = self.identified()
        protocol.dataReceived(b"REGISTER t c#ephemeral\nUNREGISTER t c#ephemeral\n")
        self.assertEqual(self.lookupd.db.channels("t"), [])

    def test_whitespace_trimmed(self) -> None:
        protocol, transport = self.identified()
        protocol.dataReceived(b"  REGISTER t c \t\r\n\tPING\xc2\xa0\n")
        self.assertEqual(transport.value(), OK + OK)
        self.assertEqual(self.lookupd.db.channels("t"), ["c"])

    def test_double_space_before_channel_means_no_channel(self) -> None:
        protocol, transport = self.identified()
        protocol.dataReceived(b"REGISTER t  c\n")
        self.assertEqual(transport.value(), OK)
        self.assertEqual((self.lookupd.db.topics(), self.lookupd.db.channels("t")), (["t"], []))

    def test_extra_params_ignored(self) -> None:
        protocol, transport = self.identified()
        protocol.dataReceived(b"REGISTER t c extra\n")
        self.assertEqual(transport.value(), OK)

    def test_register_before_identify(self) -> None:
        self.fails(b"REGISTER t\n", b"E_INVALID client must IDENTIFY")
        self.fails(b"UNREGISTER t\n", b"E_INVALID client must IDENTIFY")
        self.fails(b"REGISTER\n", b"E_INVALID client must IDENTIFY")

    def test_insufficient_params(self) -> None:
        before = reply(IDENTIFY_REPLY)
        for command in (b"REGISTER", b"UNREGISTER"):
            for line in (command + b"\n", command + b" \n"):
                self.fails(
                    identify() + line, b"E_INVALID " + command + b" insufficient number of params", before
                )

    def test_insufficient_params_text(self) -> None:
        self.fails(
            identify() + b"REGISTER\n",
            b"E_INVALID REGISTER insufficient number of params",
            reply(IDENTIFY_REPLY),
        )

    def test_bad_topic(self) -> None:
        before = reply(IDENTIFY_REPLY)
        self.fails(
            identify() + b"REGISTER a*b\n", b"E_BAD_TOPIC REGISTER topic name 'a*b' is not valid", before
        )
        self.fails(
            identify() + b"UNREGISTER " + b"x" * 65 + b"\n",
            b"E_BAD_TOPIC UNREGISTER topic name '" + b"x" * 65 + b"' is not valid",
            before,
        )
        self.fails(identify() + b"REGISTER  t\n", b"E_BAD_TOPIC REGISTER topic name '' is not valid", before)
        self.fails(
            identify() + b"REGISTER \xff\xfe\n",
            b"E_BAD_TOPIC REGISTER topic name '\xff\xfe' is not valid",
            before,
        )

    def test_bad_channel(self) -> None:
        before = reply(IDENTIFY_REPLY)
        self.fails(
            identify() + b"REGISTER t c:d\n",
            b"E_BAD_CHANNEL REGISTER channel name 'c:d' is not valid",
            before,
        )
        self.fails(
            identify() + b"UNREGISTER t \xc3\xa9\n",
            b"E_BAD_CHANNEL UNREGISTER channel name '\xc3\xa9' is not valid",
            before,
        )

    def test_topic_checked_before_channel(self) -> None:
        self.fails(
            identify() + b"REGISTER a! b!\n",
            b"E_BAD_TOPIC REGISTER topic name 'a!' is not valid",
            reply(IDENTIFY_REPLY),
        )


class CommandErrorTests(Base):
    def test_invalid_command(self) -> None:
        self.fails(b"SUB t c\n", b"E_INVALID invalid command SUB")
        self.fails(b"ping\n", b"E_INVALID invalid command ping")
        self.fails(b"\n", b"E_INVALID invalid command ")
        self.fails(b" \t \r\n", b"E_INVALID invalid command ")
        # A lone 0x85 byte is not U+0085: Go's TrimSpace leaves it.
        self.fails(b"PING\x85\n", b"E_INVALID invalid command PING\x85")

    def test_line_too_long(self) -> None:
        self.fails(b"P" * MAX_LINE_LENGTH, b"E_INVALID command line too long")

    def test_nothing_read_after_a_fatal_error(self) -> None:
        protocol, transport = self.run_chunks([MAGIC + b"BAD\nPING\n"])
        protocol.dataReceived(b"PING\n")
        self.assertEqual(transport.value(), error(b"E_INVALID invalid command BAD"))

    def test_after_bad_magic_nothing_read(self) -> None:
        protocol, transport = self.run_chunks([b"XXXX"])
        protocol.dataReceived(b"PING\n")
        self.assertEqual(transport.value(), error(b"E_BAD_PROTOCOL"))


class SplitTests(Base):
    """One long conversation, cut anywhere, always gives the same replies."""

    DATA = (
        MAGIC
        + b"PING\n"
        + identify()
        + b"REGISTER t c\r\nREGISTER u\nPING\nUNREGISTER t c\n  PING  \n"
        + identify()
    )
    EXPECTED = OK + reply(IDENTIFY_REPLY) + OK * 5 + error(b"E_INVALID cannot IDENTIFY again")

    def test_whole_and_byte_by_byte(self) -> None:
        self.converse(self.DATA, self.EXPECTED, closed=True)

    @settings(max_examples=150, deadline=None)
    @given(cut_points(len(DATA)))
    def test_any_split(self, cuts: list[int]) -> None:
        protocol, transport = self.run_chunks(split_at(self.DATA, cuts))
        self.assertEqual(transport.value(), self.EXPECTED)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionError()))


class TrimSpaceTests(SynchronousTestCase):
    def test_trim_space(self) -> None:
        self.assertEqual(trim_space(b" \t\v\f\r\nA B \n"), b"A B")
        self.assertEqual(trim_space("\u3000\u00a0A\u2028\u0085".encode()), b"A")
        self.assertEqual(trim_space(b"\xffA\x85"), b"\xffA\x85")
        self.assertEqual(trim_space(b"\x1cA"), b"\x1cA")
        self.assertEqual(trim_space(b""), b"")


class ConnectionTests(Base):
    def test_disconnect_removes_registrations(self) -> None:
        protocol, _ = self.run_chunks([MAGIC + identify() + b"REGISTER t c\nREGISTER u#ephemeral\n"])
        other, _ = self.run_chunks([MAGIC + identify() + b"REGISTER t\n"], port=40001)
        db = self.lookupd.db
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(db.lookup_registrations("127.0.0.1:40000"), [])
        self.assertEqual(db.topics(), ["t"])
        self.assertEqual(db.channels("t"), ["c"])
        self.assertEqual(db.lookup("t"), (["c"], [other.peer]))
        self.assertEqual([n.peer for n in db.nodes()], [other.peer])

    def test_disconnect_before_identify(self) -> None:
        protocol, _ = self.run_chunks([MAGIC + b"PING\n"])
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.lookupd.db.registrations(), [])
        self.assertEqual(self.factory.connections, set())

    def test_ipv6_remote_address(self) -> None:
        protocol, _ = self.connect(address=IPv6Address("TCP", "::1", 40000))
        protocol.dataReceived(MAGIC + identify())
        assert protocol.peer is not None
        self.assertEqual((protocol.remote_address, protocol.peer.id), ("[::1]:40000", "[::1]:40000"))

    def test_unix_peers_get_distinct_ids(self) -> None:
        first, _ = self.connect(address=UNIXAddress(None))
        second, _ = self.connect(address=UNIXAddress(None))
        self.assertNotEqual(first.remote_address, second.remote_address)

    def test_back_pressure(self) -> None:
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_close_connections(self) -> None:
        first, t1 = self.run_chunks([MAGIC + identify()])
        second, t2 = self.run_chunks([MAGIC], port=40001)
        done = self.factory.close_connections()
        self.assertTrue(t1.disconnecting and t2.disconnecting)
        self.assertNoResult(done)
        first.connectionLost(Failure(ConnectionError()))
        self.assertNoResult(done)
        second.connectionLost(Failure(ConnectionError()))
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.lookupd.db.registrations(), [Registration("client", "", "")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_connections_aborts_a_stuck_peer(self) -> None:
        protocol, transport = self.run_chunks([MAGIC])
        done = self.factory.close_connections()
        self.clock.advance(CLOSE_GRACE - 0.001)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionError()))
        self.successResultOf(done)

    def test_close_connections_with_none(self) -> None:
        self.assertIsNone(self.successResultOf(self.factory.close_connections()))

    def test_when_lost_after_loss(self) -> None:
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionError()))
        self.successResultOf(protocol.when_lost())
