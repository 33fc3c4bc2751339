"""
Tests for L{twisted_nsq.wire.compression}.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable

import cramjam
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.wire.compression import (
    SNAPPY_MAX_CHUNK_SIZE,
    SNAPPY_STREAM_IDENTIFIER,
    CompressionError,
    DeflateCodec,
    SnappyCodec,
    masked_crc32c,
)

_messages = st.lists(st.binary(max_size=3000), max_size=8)
_cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=10)


def _split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    Cut C{data} at the given offsets (taken modulo its length plus one).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    start = 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def _feed(decompress: Callable[[bytes], bytes], pieces: Iterable[bytes]) -> bytes:
    return b"".join(decompress(piece) for piece in pieces)


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _chunk(chunk_type: int, body: bytes) -> bytes:
    return struct.pack("<I", chunk_type | (len(body) << 8)) + body


def _chunks(stream: bytes) -> list[tuple[int, bytes]]:
    """
    Parse a complete snappy framed stream into (type, body) pairs.
    """
    out = []
    pos = 0
    while pos < len(stream):
        (header,) = struct.unpack_from("<I", stream, pos)
        length = header >> 8
        out.append((header & 0xFF, stream[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _compressible(size: int) -> bytes:
    return (b"nsq message body %d " * (size // 16 + 1))[:size]


class DeflateCodecTests(SynchronousTestCase):
    """
    L{DeflateCodec} is raw DEFLATE with a sync flush after each write.
    """

    def test_sync_flush_trailer(self) -> None:
        """
        Every compressed write ends with the empty stored block of a sync flush.
        """
        codec = DeflateCodec(6)
        for message in (b"OK", b"", _compressible(10000), os.urandom(5000)):
            self.assertEqual(codec.compress(message)[-4:], b"\x00\x00\xff\xff")

    @settings(max_examples=150, deadline=None)
    @given(messages=_messages, cuts=_cuts, level=st.integers(min_value=1, max_value=9))
    def test_round_trip_split_anywhere(self, messages: list[bytes], cuts: list[int], level: int) -> None:
        """
        A sequence of writes, cut at arbitrary points, decodes to the concatenated plaintext.
        """
        sender = DeflateCodec(level)
        receiver = DeflateCodec(level)
        stream = b"".join(sender.compress(m) for m in messages)
        self.assertEqual(_feed(receiver.decompress, _split(stream, cuts)), b"".join(messages))

    def test_each_write_decodes_on_arrival(self) -> None:
        """
        The output of each C{compress} call decodes completely without later data.
        """
        sender = DeflateCodec(6)
        receiver = DeflateCodec(6)
        for message in (b"first", _compressible(70000), b"", b"last"):
            self.assertEqual(receiver.decompress(sender.compress(message)), message)

    def test_byte_by_byte(self) -> None:
        """
        Feeding the stream one byte at a time yields the same plaintext.
        """
        plaintext = _compressible(5000) + os.urandom(2000)
        stream = DeflateCodec(9).compress(plaintext)
        self.assertEqual(_feed(DeflateCodec(9).decompress, _bytewise(stream)), plaintext)

    def test_decodes_zlib_raw_deflate(self) -> None:
        """
        A stream made by zlib's raw DEFLATE compressor (as Go's flate writer or pynsq send) decodes.
        """
        compressor = zlib.compressobj(3, zlib.DEFLATED, -15)
        plaintext = [b"IDENTIFY", _compressible(40000), os.urandom(3000)]
        stream = b"".join(compressor.compress(p) + compressor.flush(zlib.Z_SYNC_FLUSH) for p in plaintext)
        self.assertEqual(
            _feed(DeflateCodec(6).decompress, _split(stream, [7, 100, 9000])), b"".join(plaintext)
        )

    def test_zlib_decodes_output(self) -> None:
        """
        zlib's raw DEFLATE decompressor decodes our output write by write.
        """
        codec = DeflateCodec(1)
        decompressor = zlib.decompressobj(-15)
        for message in (b"OK", _compressible(100000), os.urandom(1000)):
            self.assertEqual(decompressor.decompress(codec.compress(message)), message)

    def test_corrupt(self) -> None:
        """
        Input that is not DEFLATE raises L{CompressionError}, a L{ValueError}.
        """
        codec = DeflateCodec(6)
        with self.assertRaises(CompressionError):
            codec.decompress(b"\xff\xff\xff\xff garbage")
        self.assertTrue(issubclass(CompressionError, ValueError))

    def test_data_after_end_of_stream(self) -> None:
        """
        Bytes after a final DEFLATE block are an error, not silently dropped.
        """
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        stream = compressor.compress(b"bye") + compressor.flush(zlib.Z_FINISH)
        with self.assertRaises(CompressionError):
            DeflateCodec(6).decompress(stream + b"more")

    def test_bomb_guard(self) -> None:
        """
        A small input that would inflate past C{max_output} raises instead of inflating.
        """
        bomb = DeflateCodec(9).compress(b"\x00" * (8 * 1024 * 1024))
        self.assertLess(len(bomb), 10000)
        with self.assertRaises(CompressionError):
            DeflateCodec(6).decompress(bomb, max_output=1024 * 1024)

    def test_max_output_exact(self) -> None:
        """
        Output of exactly C{max_output} bytes, sync-flush trailer included, is allowed; one byte
        more is not.
        """
        message = _compressible(50000)
        stream = DeflateCodec(6).compress(message)
        self.assertEqual(DeflateCodec(6).decompress(stream, max_output=len(message)), message)
        with self.assertRaises(CompressionError):
            DeflateCodec(6).decompress(stream, max_output=len(message) - 1)
        self.assertEqual(DeflateCodec(6).decompress(DeflateCodec(6).compress(b""), max_output=0), b"")

    def test_max_output_per_call(self) -> None:
        """
        The limit applies to each call, so a long stream fed in pieces is fine.
        """
        sender = DeflateCodec(6)
        receiver = DeflateCodec(6)
        for _ in range(5):
            message = _compressible(1000)
            self.assertEqual(receiver.decompress(sender.compress(message), max_output=1000), message)

    def test_negative_max_output(self) -> None:
        """
        A negative limit is a programming error.
        """
        with self.assertRaises(ValueError):
            DeflateCodec(6).decompress(b"", max_output=-1)


class SnappyCodecTests(SynchronousTestCase):
    """
    L{SnappyCodec} speaks snappy's framing format.
    """

    def test_crc_vector(self) -> None:
        """
        L{masked_crc32c} masks the CRC-32C check value of "123456789" (0xe3069283).
        """
        crc = 0xE3069283
        self.assertEqual(masked_crc32c(b"123456789"), (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    def test_crc_matches_python_snappy(self) -> None:
        """
        The checksum in python-snappy's chunks equals L{masked_crc32c} of the data.
        """
        data = os.urandom(1000)
        [_, (chunk_type, body)] = _chunks(snappy.StreamCompressor().compress(data))
        self.assertEqual(chunk_type, 0x01)
        self.assertEqual(struct.unpack("<I", body[:4])[0], masked_crc32c(data))

    def test_stream_identifier_once(self) -> None:
        """
        The stream identifier precedes the first output only; empty writes produce nothing.
        """
        codec = SnappyCodec()
        self.assertEqual(codec.compress(b""), b"")
        first = codec.compress(b"OK")
        self.assertTrue(first.startswith(SNAPPY_STREAM_IDENTIFIER))
        self.assertEqual(SNAPPY_STREAM_IDENTIFIER, bytes.fromhex("ff060000734e61507059"))
        second = codec.compress(b"OK")
        self.assertFalse(second.startswith(SNAPPY_STREAM_IDENTIFIER))
        self.assertEqual(first[len(SNAPPY_STREAM_IDENTIFIER) :], second)

    def test_chunk_layout(self) -> None:
        """
        Data is cut into chunks of at most 64 KiB, compressed where that helps and stored where
        it does not, each with the masked CRC-32C of its uncompressed data.
        """
        compressible = _compressible(SNAPPY_MAX_CHUNK_SIZE + 1000)
        random = os.urandom(SNAPPY_MAX_CHUNK_SIZE + 20)
        codec = SnappyCodec()
        codec.compress(b"x")
        chunks = _chunks(codec.compress(compressible) + codec.compress(random))
        self.assertEqual([t for t, _ in chunks], [0x00, 0x00, 0x01, 0x01])
        plain = [
            bytes(cramjam.snappy.decompress_raw(body[4:])) if t == 0x00 else body[4:] for t, body in chunks
        ]
        self.assertEqual(
            plain,
            [
                compressible[:SNAPPY_MAX_CHUNK_SIZE],
                compressible[SNAPPY_MAX_CHUNK_SIZE:],
                random[:SNAPPY_MAX_CHUNK_SIZE],
                random[SNAPPY_MAX_CHUNK_SIZE:],
            ],
        )
        for (_, body), data in zip(chunks, plain, strict=True):
            self.assertEqual(struct.unpack("<I", body[:4])[0], masked_crc32c(data))

    @settings(max_examples=150, deadline=None)
    @given(messages=_messages, cuts=_cuts)
    def test_round_trip_split_anywhere(self, messages: list[bytes], cuts: list[int]) -> None:
        """
        A sequence of writes, cut at arbitrary points, decodes to the concatenated plaintext.
        """
        sender = SnappyCodec()
        receiver = SnappyCodec()
        stream = b"".join(sender.compress(m) for m in messages)
        self.assertEqual(_feed(receiver.decompress, _split(stream, cuts)), b"".join(messages))

    def test_large_message(self) -> None:
        """
        A 1 MiB message spans 16 chunks and survives the round trip.
        """
        message = os.urandom(512 * 1024) + _compressible(512 * 1024)
        stream = SnappyCodec().compress(message)
        self.assertEqual(len(_chunks(stream)), 1 + 16)
        self.assertEqual(_feed(SnappyCodec().decompress, _split(stream, [1, 70000, 500000])), message)

    def test_byte_by_byte(self) -> None:
        """
        Feeding the stream one byte at a time yields the same plaintext.
        """
        plaintext = _compressible(3000) + os.urandom(1000)
        codec = SnappyCodec()
        stream = codec.compress(plaintext) + codec.compress(b"tail")
        self.assertEqual(_feed(SnappyCodec().decompress, _bytewise(stream)), plaintext + b"tail")

    def test_python_snappy_decodes_output(self) -> None:
        """
        python-snappy's StreamDecompressor decodes our stream.
        """
        codec = SnappyCodec()
        decompressor = snappy.StreamDecompressor()
        for message in (b"OK", _compressible(200000), os.urandom(70000)):
            self.assertEqual(decompressor.decompress(codec.compress(message)), message)

    def test_decodes_python_snappy(self) -> None:
        """
        A stream from one python-snappy StreamCompressor decodes, split anywhere.
        """
        compressor = snappy.StreamCompressor()
        messages = [b"SUB t c\n", _compressible(100000), os.urandom(70000)]
        stream = b"".join(compressor.compress(m) for m in messages)
        self.assertEqual(
            _feed(SnappyCodec().decompress, _split(stream, [3, 4, 11, 5000, 150000])), b"".join(messages)
        )

    def test_repeated_stream_identifiers(self) -> None:
        """
        pynsq starts a new StreamCompressor for each write, so the stream identifier recurs.
        """
        messages = [b"RDY 1\n", b"FIN 0123456789abcdef\n", _compressible(5000)]
        stream = b"".join(snappy.StreamCompressor().compress(m) for m in messages)
        self.assertEqual(stream.count(SNAPPY_STREAM_IDENTIFIER), 3)
        receiver = SnappyCodec()
        self.assertEqual(_feed(receiver.decompress, _bytewise(stream)), b"".join(messages))

    def test_corrupt_crc(self) -> None:
        """
        A chunk whose checksum does not match its data is rejected.
        """
        for data in (b"stored", _compressible(1000)):
            stream = bytearray(SnappyCodec().compress(data))
            stream[len(SNAPPY_STREAM_IDENTIFIER) + 4] ^= 0x01
            with self.assertRaises(CompressionError):
                SnappyCodec().decompress(bytes(stream))

    def test_corrupt_compressed_data(self) -> None:
        """
        A compressed chunk that is not valid snappy is rejected.
        """
        body = struct.pack("<I", masked_crc32c(b"")) + b"\x05\xff\xff\xff"
        with self.assertRaises(CompressionError):
            SnappyCodec().decompress(SNAPPY_STREAM_IDENTIFIER + _chunk(0x00, body))

    def test_missing_stream_identifier(self) -> None:
        """
        A stream must begin with the stream identifier.
        """
        stream = SnappyCodec().compress(b"data")[len(SNAPPY_STREAM_IDENTIFIER) :]
        with self.assertRaises(CompressionError):
            SnappyCodec().decompress(stream)

    def test_bad_stream_identifier(self) -> None:
        """
        A stream identifier chunk must have length 6 and the body "sNaPpY".
        """
        for bad in (b"\xff\x06\x00\x00sNaPpX", b"\xff\x07\x00\x00sNaPpYY"):
            with self.assertRaises(CompressionError):
                SnappyCodec().decompress(bad)

    def test_padding_and_skippable_chunks(self) -> None:
        """
        Padding (0xfe) and skippable chunks (0x80-0xfd), even large ones split across calls, are
        dropped.
        """
        sender = SnappyCodec()
        stream = (
            sender.compress(b"one")
            + _chunk(0xFE, b"\x00" * 10)
            + _chunk(0x80, b"skip me")
            + _chunk(0xFD, os.urandom(200000))
            + sender.compress(b"two")
        )
        self.assertEqual(
            _feed(SnappyCodec().decompress, _split(stream, [30, 40, 50, 60, 1000, 150000])), b"onetwo"
        )

    def test_reserved_unskippable_chunk(self) -> None:
        """
        Chunk types 0x02-0x7f are reserved and must not be skipped.
        """
        for chunk_type in (0x02, 0x7F):
            with self.assertRaises(CompressionError):
                SnappyCodec().decompress(SNAPPY_STREAM_IDENTIFIER + _chunk(chunk_type, b"xx"))

    def test_oversize_chunks(self) -> None:
        """
        Chunks longer than the format allows are rejected from their header, before their data
        arrives, and a compressed chunk that inflates past 64 KiB is rejected.
        """
        stored_header = struct.pack("<I", 0x01 | ((SNAPPY_MAX_CHUNK_SIZE + 5) << 8))
        compressed_header = struct.pack("<I", 0x00 | (100000 << 8))
        for header in (stored_header, compressed_header):
            with self.assertRaises(CompressionError):
                SnappyCodec().decompress(SNAPPY_STREAM_IDENTIFIER + header)
        big = _compressible(SNAPPY_MAX_CHUNK_SIZE + 1)
        body = struct.pack("<I", masked_crc32c(big)) + bytes(cramjam.snappy.compress_raw(big))
        with self.assertRaises(CompressionError):
            SnappyCodec().decompress(SNAPPY_STREAM_IDENTIFIER + _chunk(0x00, body))

    def test_short_chunk(self) -> None:
        """
        A data chunk too short to hold its checksum is rejected.
        """
        with self.assertRaises(CompressionError):
            SnappyCodec().decompress(SNAPPY_STREAM_IDENTIFIER + _chunk(0x01, b"abc"))

    def test_bomb_guard(self) -> None:
        """
        A call that would produce more than C{max_output} raises; exactly the limit is fine.
        """
        message = b"\x00" * (4 * SNAPPY_MAX_CHUNK_SIZE)
        stream = SnappyCodec().compress(message)
        self.assertLess(len(stream), 20000)
        with self.assertRaises(CompressionError):
            SnappyCodec().decompress(stream, max_output=len(message) - 1)
        self.assertEqual(SnappyCodec().decompress(stream, max_output=len(message)), message)

    def test_negative_max_output(self) -> None:
        """
        A negative limit is a programming error.
        """
        with self.assertRaises(ValueError):
            SnappyCodec().decompress(b"", max_output=-1)
