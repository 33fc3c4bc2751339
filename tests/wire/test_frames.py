# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.frames}."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.wire._chunks import byte_by_byte, cut_points, split_at
from twisted_nsq.wire.frames import (
    CLOSE_WAIT_FRAME,
    FRAME_TYPE_ERROR,
    FRAME_TYPE_MESSAGE,
    FRAME_TYPE_RESPONSE,
    HEARTBEAT_FRAME,
    MAGIC_V1,
    MAGIC_V2,
    MESSAGE_HEADER_SIZE,
    MSG_ID_LENGTH,
    OK_FRAME,
    DecodedMessage,
    FrameError,
    FrameParser,
    decode_message,
    encode_frame,
    encode_message,
    error_frame,
    message_frame_header,
    parse_message,
    response_frame,
)

MESSAGE_ID = b"18a7874809669000"
TIMESTAMP = 0x17E0A4B1C2D3E4F5


class ConstantTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(MAGIC_V2, b"  V2")
        self.assertEqual(MAGIC_V1, b"  V1")
        self.assertEqual((FRAME_TYPE_RESPONSE, FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE), (0, 1, 2))
        self.assertEqual(MESSAGE_HEADER_SIZE, 26)
        self.assertEqual(MSG_ID_LENGTH, 16)

    def test_precomputed_frames(self) -> None:
        self.assertEqual(OK_FRAME, b"\x00\x00\x00\x06\x00\x00\x00\x00OK")
        self.assertEqual(HEARTBEAT_FRAME, b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_")
        self.assertEqual(CLOSE_WAIT_FRAME, b"\x00\x00\x00\x0e\x00\x00\x00\x00CLOSE_WAIT")


class EncodeTests(SynchronousTestCase):
    def test_encode_frame(self) -> None:
        """Size is 4 + len(data), then the type, both big-endian int32."""
        self.assertEqual(encode_frame(0, b"OK"), b"\x00\x00\x00\x06\x00\x00\x00\x00OK")
        self.assertEqual(encode_frame(2, b""), b"\x00\x00\x00\x04\x00\x00\x00\x02")
        self.assertEqual(encode_frame(1, b"x" * 300), b"\x00\x00\x01\x30\x00\x00\x00\x01" + b"x" * 300)

    def test_response_and_error_frames(self) -> None:
        self.assertEqual(response_frame(b'{"a":1}'), b"\x00\x00\x00\x0b\x00\x00\x00\x00" + b'{"a":1}')
        self.assertEqual(
            error_frame(b"E_INVALID invalid command FOO"),
            b"\x00\x00\x00\x21\x00\x00\x00\x01E_INVALID invalid command FOO",
        )

    def test_encode_message(self) -> None:
        """int64 timestamp, uint16 attempts, 16-byte ID, body."""
        self.assertEqual(
            encode_message(TIMESTAMP, 1, MESSAGE_ID, b"hello"),
            b"\x17\xe0\xa4\xb1\xc2\xd3\xe4\xf5\x00\x01" + MESSAGE_ID + b"hello",
        )
        self.assertEqual(
            encode_message(1, 65535, MESSAGE_ID, b""),
            b"\x00\x00\x00\x00\x00\x00\x00\x01\xff\xff" + MESSAGE_ID,
        )

    def test_encode_message_rejects_bad_id(self) -> None:
        self.assertRaises(ValueError, encode_message, 1, 1, b"short", b"x")
        self.assertRaises(ValueError, encode_message, 1, 1, MESSAGE_ID + b"0", b"x")

    def test_message_frame_header(self) -> None:
        """The 18 bytes in front of the ID: size 4+26+body, type 2, timestamp, attempts."""
        header = message_frame_header(5, TIMESTAMP, 3)
        self.assertEqual(
            header,
            b"\x00\x00\x00\x23\x00\x00\x00\x02\x17\xe0\xa4\xb1\xc2\xd3\xe4\xf5\x00\x03",
        )
        self.assertEqual(len(header), 18)

    @settings(max_examples=150, deadline=None)
    @given(
        timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        attempts=st.integers(min_value=0, max_value=65535),
        message_id=st.binary(min_size=16, max_size=16),
        body=st.binary(max_size=200),
    )
    def test_header_id_body_is_a_message_frame(
        self, timestamp: int, attempts: int, message_id: bytes, body: bytes
    ) -> None:
        """Writing (header, id, body) produces the same bytes as framing the encoded message."""
        self.assertEqual(
            message_frame_header(len(body), timestamp, attempts) + message_id + body,
            encode_frame(FRAME_TYPE_MESSAGE, encode_message(timestamp, attempts, message_id, body)),
        )


class DecodeTests(SynchronousTestCase):
    def test_decode(self) -> None:
        data = b"\x17\xe0\xa4\xb1\xc2\xd3\xe4\xf5\x00\x02" + MESSAGE_ID + b"body"
        decoded = decode_message(data)
        self.assertEqual(decoded, DecodedMessage(TIMESTAMP, 2, MESSAGE_ID, b"body"))
        self.assertEqual(decoded.timestamp, TIMESTAMP)
        self.assertEqual(decoded.attempts, 2)
        self.assertEqual(decoded.id, MESSAGE_ID)
        self.assertEqual(decoded.body, b"body")
        self.assertIs(type(decoded.id), bytes)
        self.assertIs(type(decoded.body), bytes)

    def test_decode_empty_body(self) -> None:
        self.assertEqual(decode_message(encode_message(5, 1, MESSAGE_ID, b"")).body, b"")

    def test_decode_too_short(self) -> None:
        self.assertRaises(ValueError, decode_message, b"")
        self.assertRaises(ValueError, decode_message, b"\x00" * 25)

    def test_parse_message_is_decode_message(self) -> None:
        data = encode_message(7, 9, MESSAGE_ID, b"x")
        self.assertEqual(parse_message(data), decode_message(data))

    @settings(max_examples=150, deadline=None)
    @given(
        timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        attempts=st.integers(min_value=0, max_value=65535),
        message_id=st.binary(min_size=16, max_size=16),
        body=st.binary(max_size=200),
    )
    def test_round_trip(self, timestamp: int, attempts: int, message_id: bytes, body: bytes) -> None:
        self.assertEqual(
            decode_message(encode_message(timestamp, attempts, message_id, body)),
            (timestamp, attempts, message_id, body),
        )


# A stream of frames as nsqd would send them, and what the parser must produce for it.
STREAM_FRAMES: list[tuple[int, bytes]] = [
    (FRAME_TYPE_RESPONSE, b"OK"),
    (FRAME_TYPE_RESPONSE, b"_heartbeat_"),
    (FRAME_TYPE_MESSAGE, encode_message(TIMESTAMP, 1, MESSAGE_ID, b"hello")),
    (FRAME_TYPE_ERROR, b"E_FIN_FAILED FIN 0000000000000000 failed ID not in flight"),
    (FRAME_TYPE_MESSAGE, encode_message(TIMESTAMP, 2, MESSAGE_ID, b"")),
    (FRAME_TYPE_RESPONSE, b""),
    (FRAME_TYPE_RESPONSE, b"CLOSE_WAIT"),
]
STREAM = b"".join(encode_frame(frame_type, data) for frame_type, data in STREAM_FRAMES)


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    for chunk in chunks:
        frames.extend(parser.feed(chunk))
    return frames


class FrameParserTests(SynchronousTestCase):
    def test_whole(self) -> None:
        parser = FrameParser()
        self.assertEqual(parser.feed(STREAM), STREAM_FRAMES)
        self.assertEqual(parser.buffered, 0)

    def test_byte_by_byte(self) -> None:
        parser = FrameParser()
        self.assertEqual(feed_all(parser, byte_by_byte(STREAM)), STREAM_FRAMES)
        self.assertEqual(parser.buffered, 0)

    def test_trailing_data(self) -> None:
        """A partial frame at the end is held until it completes."""
        parser = FrameParser()
        tail = encode_frame(FRAME_TYPE_RESPONSE, b"later")
        self.assertEqual(parser.feed(STREAM + tail[:7]), STREAM_FRAMES)
        self.assertEqual(parser.buffered, 7)
        self.assertEqual(parser.feed(tail[7:]), [(FRAME_TYPE_RESPONSE, b"later")])
        self.assertEqual(parser.buffered, 0)

    def test_payload_types(self) -> None:
        """Payloads are immutable bytes, not views of the buffer."""
        ((frame_type, payload),) = FrameParser().feed(OK_FRAME)
        self.assertIs(type(payload), bytes)
        self.assertIs(type(frame_type), int)

    def test_empty_feed(self) -> None:
        self.assertEqual(FrameParser().feed(b""), [])

    def test_unknown_frame_type_passed_through(self) -> None:
        self.assertEqual(FrameParser().feed(encode_frame(7, b"x")), [(7, b"x")])

    @settings(max_examples=200, deadline=None)
    @given(cuts=cut_points(len(STREAM)))
    def test_split_points(self, cuts: list[int]) -> None:
        parser = FrameParser()
        self.assertEqual(feed_all(parser, split_at(STREAM, cuts)), STREAM_FRAMES)
        self.assertEqual(parser.buffered, 0)

    @settings(max_examples=100, deadline=None)
    @given(
        frames=st.lists(
            st.tuples(st.integers(min_value=0, max_value=2), st.binary(max_size=100)), max_size=10
        ),
        data=st.data(),
    )
    def test_any_frames_any_split(self, frames: list[tuple[int, bytes]], data: st.DataObject) -> None:
        stream = b"".join(encode_frame(frame_type, payload) for frame_type, payload in frames)
        cuts = data.draw(cut_points(len(stream)))
        self.assertEqual(feed_all(FrameParser(), split_at(stream, cuts)), frames)

    def test_large_frame_in_pieces(self) -> None:
        body = bytes(range(256)) * 4096  # 1 MiB
        stream = encode_frame(FRAME_TYPE_MESSAGE, encode_message(1, 1, MESSAGE_ID, body))
        parser = FrameParser()
        frames = feed_all(parser, [stream[index : index + 65536] for index in range(0, len(stream), 65536)])
        self.assertEqual(len(frames), 1)
        self.assertEqual(decode_message(frames[0][1]).body, body)

    def test_max_frame_size_accepted(self) -> None:
        """A frame whose size field equals the maximum is fine."""
        parser = FrameParser(max_frame_size=20)
        self.assertEqual(parser.feed(encode_frame(0, b"x" * 16)), [(0, b"x" * 16)])

    def assertRejects(self, size_field: bytes, max_frame_size: int = 8 * 1024 * 1024 + 64) -> None:
        parser = FrameParser(max_frame_size)
        with self.assertRaises(FrameError):
            parser.feed(size_field)
        self.assertEqual(parser.buffered, 0)

    def test_size_too_big(self) -> None:
        self.assertRejects(struct.pack(">i", 21), max_frame_size=20)
        self.assertRejects(struct.pack(">i", 8 * 1024 * 1024 + 65))

    def test_hostile_sizes(self) -> None:
        """2 GiB and 4 GiB claims (read as signed: huge or negative) fail at once, unbuffered."""
        self.assertRejects(b"\x7f\xff\xff\xff")
        self.assertRejects(b"\xff\xff\xff\xff")
        self.assertRejects(b"\xff\xff\xff\xfc")
        self.assertRejects(b"\x80\x00\x00\x00")

    def test_size_too_small(self) -> None:
        """A frame must at least hold its type field."""
        for size in (0, 1, 3, -1):
            self.assertRejects(struct.pack(">i", size))

    def test_size_checked_before_payload(self) -> None:
        """The size is checked on its own 4 bytes, with nothing else buffered."""
        parser = FrameParser()
        self.assertEqual(parser.feed(b"\x7f\xff"), [])
        self.assertRaises(FrameError, parser.feed, b"\xff\xff")

    def test_frames_before_error(self) -> None:
        """Frames completed by the failing feed are attached to the error."""
        parser = FrameParser()
        with self.assertRaises(FrameError) as caught:
            parser.feed(OK_FRAME + HEARTBEAT_FRAME + b"\xff\xff\xff\xff\x00\x00")
        self.assertEqual(caught.exception.frames, [(0, b"OK"), (0, b"_heartbeat_")])
        self.assertIsInstance(caught.exception, ValueError)

    def test_broken_after_error(self) -> None:
        """After a bad size the stream cannot be resynchronised: later feeds fail too."""
        parser = FrameParser()
        self.assertRaises(FrameError, parser.feed, b"\x00\x00\x00\x00")
        self.assertRaises(FrameError, parser.feed, OK_FRAME)
        self.assertEqual(parser.buffered, 0)
