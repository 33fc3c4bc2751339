"""
Snappy and DEFLATE stream upgrades of nsqd's TCP protocol, over real sockets (spec 1.4-1.6).

The raw client's codecs are written from the format descriptions, independently of nsqd's.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._rawclient import RawClient
from twisted_nsq.wire.frames import FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE

OK = (FRAME_TYPE_RESPONSE, b"OK")

SNAPPY_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"


def identify_reply(snappy: bool = False, deflate: bool = False, deflate_level: int = 6) -> bytes:
    """nsqd's exact IDENTIFY JSON for a client sending only the given compression fields."""
    return (
        b'{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,'
        b'"tls_v1":false,"deflate":%s,"deflate_level":%d,"max_deflate_level":6,"snappy":%s,'
        b'"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}'
        % (json.dumps(deflate).encode(), deflate_level, json.dumps(snappy).encode())
    )


def large_body() -> bytes:
    """512 KiB: half incompressible, half very compressible, so both chunk kinds are used."""
    return os.urandom(256 * 1024) + b"nsq-compression-" * (256 * 1024 // 16)


class CompressionTests(SynchronousTestCase):
    """IDENTIFY negotiation and compressed traffic in both directions."""

    def connect(self, nsqd: NSQDProcess) -> RawClient:
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        return client

    def roundtrip(self, nsqd: NSQDProcess, fields: dict[str, Any], topic: str, bodies: list[bytes]) -> None:
        """
        Publish C{bodies} on one compressed connection, SUB/RDY/receive/FIN them on another,
        and check that FIN took effect (a second FIN fails without closing the connection).
        """
        producer = self.connect(nsqd)
        producer.identify(fields)
        consumer = self.connect(nsqd)
        consumer.identify(fields)
        for body in bodies:
            self.assertEqual(producer.pub(topic, body), OK)
        self.assertEqual(consumer.sub(topic, "ch"), OK)
        consumer.rdy(len(bodies))
        received = [consumer.read_message() for _ in bodies]
        self.assertEqual(sorted(m.body for m in received), sorted(bodies))
        self.assertEqual({m.attempts for m in received}, {1})
        for message in received:
            consumer.fin(message.id)
        consumer.fin(received[0].id)
        self.assertEqual(
            consumer.read_frame(),
            (FRAME_TYPE_ERROR, b"E_FIN_FAILED FIN " + received[0].id + b" failed ID not in flight"),
        )
        self.assertEqual(consumer.pub(topic, b"still open"), OK)
        message = consumer.read_message()
        self.assertEqual((message.body, message.attempts), (b"still open", 1))
        consumer.fin(message.id)
        consumer.assert_silent(0.3)

    def test_snappy_negotiation(self) -> None:
        """
        IDENTIFY with snappy: the JSON reply (snappy true) comes in plaintext, then the stream
        switches to snappy framing, starting with the stream identifier and a compressed C{OK}.
        """
        nsqd = start_nsqd(self)
        client = self.connect(nsqd)
        reply = client.identify({"feature_negotiation": True, "snappy": True})
        self.assertEqual(reply, (FRAME_TYPE_RESPONSE, identify_reply(snappy=True)))
        self.assertTrue(
            bytes(client.compressed_prefix).startswith(SNAPPY_IDENTIFIER),
            f"snappy stream starts {bytes(client.compressed_prefix[:32])!r}",
        )
        self.assertEqual(client.pub("snappy-first", b"after upgrade"), OK)

    def test_snappy_publish_and_consume(self) -> None:
        """PUB, SUB, RDY, message delivery and FIN all work over snappy-compressed connections."""
        nsqd = start_nsqd(self)
        bodies = [b"snappy-%d" % i for i in range(5)]
        self.roundtrip(nsqd, {"feature_negotiation": True, "snappy": True}, "snappy", bodies)

    def test_deflate_negotiation(self) -> None:
        """
        IDENTIFY with deflate level 9: the reply grants deflate at the default maximum level 6,
        and the C{OK} that follows is raw DEFLATE ending in a sync flush.
        """
        nsqd = start_nsqd(self)
        client = self.connect(nsqd)
        reply = client.identify({"feature_negotiation": True, "deflate": True, "deflate_level": 9})
        self.assertEqual(reply, (FRAME_TYPE_RESPONSE, identify_reply(deflate=True, deflate_level=6)))
        self.assertTrue(
            bytes(client.compressed_prefix).endswith(b"\x00\x00\xff\xff"),
            f"deflated OK was {bytes(client.compressed_prefix)!r}",
        )
        self.assertEqual(client.pub("deflate-first", b"after upgrade"), OK)

    def test_deflate_publish_and_consume(self) -> None:
        """PUB, SUB, RDY, message delivery and FIN all work over deflate-compressed connections."""
        nsqd = start_nsqd(self)
        bodies = [b"deflate-%d" % i for i in range(5)]
        self.roundtrip(
            nsqd, {"feature_negotiation": True, "deflate": True, "deflate_level": 1}, "deflate", bodies
        )

    def test_deflate_level_capped(self) -> None:
        """
        With C{--max-deflate-level=3}, a requested level above 3 becomes 3, a level of 0 (the
        default 6) becomes 3, and a level below the cap is kept; no request is an error.
        """
        nsqd = start_nsqd(self, "--max-deflate-level=3")
        for requested, granted in [(9, 3), (0, 3), (1, 1), (3, 3)]:
            client = self.connect(nsqd)
            reply = client.identify(
                {"feature_negotiation": True, "deflate": True, "deflate_level": requested}
            )
            self.assertEqual(reply.type, FRAME_TYPE_RESPONSE)
            fields = json.loads(reply.data)
            self.assertEqual(
                (fields["deflate"], fields["deflate_level"], fields["max_deflate_level"]),
                (True, granted, 3),
                f"deflate_level {requested}",
            )
            self.assertEqual(client.pub("capped", b"level %d" % requested), OK)

    def test_large_message_snappy(self) -> None:
        """A 512 KiB message survives a snappy round trip byte for byte."""
        nsqd = start_nsqd(self)
        self.roundtrip(nsqd, {"feature_negotiation": True, "snappy": True}, "big-snappy", [large_body()])

    def test_large_message_deflate(self) -> None:
        """A 512 KiB message survives a deflate round trip byte for byte."""
        nsqd = start_nsqd(self)
        self.roundtrip(nsqd, {"feature_negotiation": True, "deflate": True}, "big-deflate", [large_body()])

    def assertGarbageCloses(self, nsqd: NSQDProcess, fields: dict[str, Any], garbage: bytes) -> None:
        client = self.connect(nsqd)
        client.identify(fields)
        self.assertEqual(client.pub("before-garbage", b"x"), OK)
        client.send_wire(garbage)
        frames = client.read_until_closed(timeout=5.0)
        self.assertEqual(
            [f for f in frames if f.type in (FRAME_TYPE_RESPONSE, FRAME_TYPE_MESSAGE)],
            [],
            f"frames after garbage: {[f.describe() for f in frames]}",
        )
        self.assertTrue(nsqd.alive(), nsqd.output())
        fresh = self.connect(nsqd)
        fresh.identify(fields)
        self.assertEqual(fresh.pub("after-garbage", b"y"), OK)

    def test_garbage_snappy_stream(self) -> None:
        """
        A snappy chunk with a wrong checksum makes nsqd close that connection; nsqd keeps
        serving new ones.
        """
        nsqd = start_nsqd(self)
        payload = os.urandom(64)
        chunk = struct.pack("<I", 0x00 | ((len(payload) + 4) << 8)) + b"\x00\x00\x00\x00" + payload
        self.assertGarbageCloses(nsqd, {"feature_negotiation": True, "snappy": True}, chunk)

    def test_garbage_deflate_stream(self) -> None:
        """
        Bytes that are not DEFLATE (a reserved block type) make nsqd close that connection;
        nsqd keeps serving new ones.
        """
        nsqd = start_nsqd(self)
        self.assertGarbageCloses(nsqd, {"feature_negotiation": True, "deflate": True}, b"\xff" * 64)

    def test_both_compressions_refused(self) -> None:
        """Asking for snappy and deflate at once is the fatal E_IDENTIFY_FAILED, with no JSON reply."""
        nsqd = start_nsqd(self)
        client = self.connect(nsqd)
        reply = client.identify({"feature_negotiation": True, "snappy": True, "deflate": True})
        self.assertEqual(reply.type, FRAME_TYPE_ERROR, reply.describe())
        self.assertEqual(reply.data, b"E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")
        self.assertEqual(client.read_until_closed(timeout=5.0), [])

    def test_no_upgrade_without_feature_negotiation(self) -> None:
        """Without feature_negotiation, IDENTIFY answers C{OK} and the stream stays plaintext."""
        nsqd = start_nsqd(self)
        client = self.connect(nsqd)
        self.assertEqual(client.identify({"snappy": True}), OK)
        self.assertEqual(client.pub("plain", b"z"), OK)

    def test_compression_disabled_by_flags(self) -> None:
        """With C{--snappy=false --deflate=false} neither upgrade is granted; traffic stays plain."""
        nsqd = start_nsqd(self, "--snappy=false", "--deflate=false")
        for fields in ({"snappy": True}, {"deflate": True}):
            client = self.connect(nsqd)
            reply = client.identify({"feature_negotiation": True, **fields})
            self.assertEqual(reply.type, FRAME_TYPE_RESPONSE, reply.describe())
            granted = json.loads(reply.data)
            self.assertEqual((granted["snappy"], granted["deflate"]), (False, False))
            self.assertEqual(client.pub("plain", b"z"), OK)
