"""
Stream codecs for the IDENTIFY compression upgrades: raw DEFLATE and snappy framing.

Each codec object holds the state of one connection's two directions: ``compress`` turns
outgoing plaintext into bytes for the wire, ``decompress`` turns bytes read from the wire,
split anywhere, into plaintext.  Both are pure byte transformations with no I/O.

After a L{CompressionError} the codec is in an undefined state: the connection that owns it
must be closed.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

# cramjam and google_crc32c are imported where they are used: an nsqd whose clients never ask for
# snappy does not load them (2.5 MiB of an idle nsqd's memory, docs/performance.md). Importing a
# module that is already loaded is a dictionary lookup, once per frame or chunk.

__all__ = [
    "SNAPPY_MAX_CHUNK_SIZE",
    "SNAPPY_STREAM_IDENTIFIER",
    "Codec",
    "CompressionError",
    "DeflateCodec",
    "SnappyCodec",
    "masked_crc32c",
]


class CompressionError(ValueError):
    """
    The compressed stream from the peer is corrupt, or decoding it would exceed a limit.
    """


class Codec(Protocol):
    """
    What the protocol needs from a stream codec.
    """

    def compress(self, data: bytes) -> bytes:
        """
        Encode C{data} so the peer can decode everything written so far.
        """

    def decompress(self, data: bytes, *, max_output: int | None = None) -> bytes:
        """
        Decode the next piece of the peer's stream.
        """


def _check_max_output(max_output: int | None) -> None:
    if max_output is not None and max_output < 0:
        raise ValueError(f"max_output must be >= 0, not {max_output}")


class DeflateCodec:
    """
    Raw DEFLATE (RFC 1951, no zlib header) in both directions, as nsqd's C{deflate} upgrade.

    Every C{compress} call ends with a sync flush (trailer C{00 00 ff ff}), so the peer can
    decode each write as soon as it arrives.
    """

    def __init__(self, level: int) -> None:
        """
        @param level: the compression level for outgoing data, 1..9 (zlib's levels).
        """
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)

    def compress(self, data: bytes) -> bytes:
        """
        Compress C{data} and sync-flush, so the output decodes completely on its own.
        """
        compressor = self._compressor
        return b"".join((compressor.compress(data), compressor.flush(zlib.Z_SYNC_FLUSH)))

    def decompress(self, data: bytes, *, max_output: int | None = None) -> bytes:
        """
        Decode the next piece of the peer's DEFLATE stream.

        @param max_output: the most plaintext this one call may produce; a stream that would
            inflate to more raises L{CompressionError} without inflating the rest.
        @raise CompressionError: corrupt input, data after the end of the stream, or more than
            C{max_output} bytes of output.
        """
        _check_max_output(max_output)
        decompressor = self._decompressor
        try:
            if max_output is None:
                out = decompressor.decompress(data)
            else:
                # Asking for one byte more than allowed tells "exactly the limit" (everything
                # consumed) apart from "more to come" without inflating the rest.  zlib treats
                # a max_length of 0 as unlimited, which max_output + 1 never is.
                out = decompressor.decompress(data, max_output + 1)
                if len(out) > max_output:
                    raise CompressionError(f"deflate stream inflates to more than {max_output} bytes")
        except zlib.error as e:
            raise CompressionError(f"corrupt deflate stream: {e}") from e
        if decompressor.unused_data:
            raise CompressionError("data after the end of the deflate stream")
        return out


#: The chunk every snappy framed stream starts with (type 0xff, length 6, "sNaPpY").
SNAPPY_STREAM_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
#: The most uncompressed data one snappy frame chunk may carry.
SNAPPY_MAX_CHUNK_SIZE = 65536
# Snappy's worst-case expansion of a 64 KiB block: 32 + n + n / 6.
_MAX_COMPRESSED_CHUNK = 32 + SNAPPY_MAX_CHUNK_SIZE + SNAPPY_MAX_CHUNK_SIZE // 6
_CRC_SIZE = 4
_HEADER_SIZE = 4

_CHUNK_COMPRESSED = 0x00
_CHUNK_UNCOMPRESSED = 0x01
_CHUNK_STREAM_IDENTIFIER = 0xFF

_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<I")  # type in the low byte, length in the high three


def masked_crc32c(data: bytes) -> int:
    """
    The CRC-32C of C{data}, masked as the snappy framing format stores it.
    """
    import google_crc32c

    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class SnappyCodec:
    """
    Snappy's framing format in both directions, as nsqd's C{snappy} upgrade.

    Decoding accepts the stream identifier again at any chunk boundary (pynsq starts a new
    stream for every write), verifies every checksum, and skips padding and skippable chunks.
    """

    def __init__(self) -> None:
        self._identifier_sent = False
        self._buffer = bytearray()
        self._identifier_seen = False
        # Bytes of a skippable chunk still to drop; such chunks may be up to 16 MiB and are
        # dropped as they arrive rather than buffered.
        self._skip = 0

    def compress(self, data: bytes) -> bytes:
        """
        Frame C{data} as compressed (or, where compression does not pay, stored) chunks of at
        most 64 KiB, after the stream identifier if this is the first output.
        """
        if not data:
            return b""
        import cramjam

        parts: list[bytes] = []
        if not self._identifier_sent:
            parts.append(SNAPPY_STREAM_IDENTIFIER)
            self._identifier_sent = True
        pack_header = _HEADER.pack
        pack_crc = _CRC.pack
        compress_raw = cramjam.snappy.compress_raw
        for start in range(0, len(data), SNAPPY_MAX_CHUNK_SIZE):
            # The CRC-32C binding takes bytes only; a message of one chunk is not copied.
            chunk = (
                data if len(data) <= SNAPPY_MAX_CHUNK_SIZE else data[start : start + SNAPPY_MAX_CHUNK_SIZE]
            )
            size = len(chunk)
            compressed = bytes(compress_raw(chunk))
            crc = pack_crc(masked_crc32c(chunk))
            # Stored when compression saves less than 1/8, which is also cheaper to decode.
            if len(compressed) >= size - (size >> 3):
                parts.append(pack_header(_CHUNK_UNCOMPRESSED | ((size + _CRC_SIZE) << 8)))
                parts.append(crc)
                parts.append(chunk)
            else:
                parts.append(pack_header(_CHUNK_COMPRESSED | ((len(compressed) + _CRC_SIZE) << 8)))
                parts.append(crc)
                parts.append(compressed)
        return b"".join(parts)

    def decompress(self, data: bytes, *, max_output: int | None = None) -> bytes:
        """
        Decode the next piece of the peer's framed stream; a chunk split across calls is kept
        until it is complete.

        @param max_output: the most plaintext this one call may produce; checked from each
            chunk's header before the chunk is decompressed.
        @raise CompressionError: a missing stream identifier, a bad checksum, corrupt or oversize
            chunks, a reserved unskippable chunk type, or more than C{max_output} bytes.
        """
        import cramjam

        _check_max_output(max_output)
        buf = self._buffer
        pos = 0
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            buf += memoryview(data)[dropped:]
        else:
            buf += data
        parts: list[bytes] = []
        produced = 0
        end = len(buf)
        unpack_header = _HEADER.unpack_from
        unpack_crc = _CRC.unpack_from
        # A view avoids copying each chunk out of the buffer twice; it must be released
        # before the buffer is resized, hence the with block.
        with memoryview(buf) as view:
            try:
                while end - pos >= _HEADER_SIZE:
                    (header,) = unpack_header(buf, pos)
                    chunk_type = header & 0xFF
                    length = header >> 8
                    body = pos + _HEADER_SIZE
                    if chunk_type == _CHUNK_STREAM_IDENTIFIER:
                        if length != 6:
                            raise CompressionError(f"bad snappy stream identifier length {length}")
                        if end - body < 6:
                            break
                        if not buf.startswith(b"sNaPpY", body):
                            raise CompressionError("bad snappy stream identifier")
                        self._identifier_seen = True
                        pos = body + 6
                        continue
                    if not self._identifier_seen:
                        raise CompressionError("snappy stream does not start with the stream identifier")
                    if chunk_type == _CHUNK_COMPRESSED or chunk_type == _CHUNK_UNCOMPRESSED:
                        if chunk_type == _CHUNK_COMPRESSED:
                            limit = _MAX_COMPRESSED_CHUNK
                        else:
                            limit = SNAPPY_MAX_CHUNK_SIZE
                        if length < _CRC_SIZE or length > limit + _CRC_SIZE:
                            raise CompressionError(f"bad snappy chunk length {length}")
                        if end - body < length:
                            break
                        (expected_crc,) = unpack_crc(buf, body)
                        # Released at once: a live slice would pin the buffer's size.
                        with view[body + _CRC_SIZE : body + length] as stored:
                            if chunk_type == _CHUNK_COMPRESSED:
                                size = cramjam.snappy.decompress_raw_len(stored)
                                if size > SNAPPY_MAX_CHUNK_SIZE:
                                    raise CompressionError(f"snappy chunk inflates to {size} bytes")
                            else:
                                size = len(stored)
                            produced += size
                            if max_output is not None and produced > max_output:
                                raise CompressionError(
                                    f"snappy stream inflates to more than {max_output} bytes"
                                )
                            if chunk_type == _CHUNK_COMPRESSED:
                                payload = bytes(cramjam.snappy.decompress_raw(stored))
                                if len(payload) != size:
                                    raise CompressionError("snappy chunk length does not match its header")
                            else:
                                payload = bytes(stored)
                        if masked_crc32c(payload) != expected_crc:
                            raise CompressionError("snappy chunk checksum mismatch")
                        parts.append(payload)
                        pos = body + length
                    elif chunk_type >= 0x80:
                        # Padding (0xfe) and the skippable range 0x80-0xfd carry nothing for us.
                        available = end - body
                        if available >= length:
                            pos = body + length
                        else:
                            self._skip = length - available
                            pos = end
                    else:
                        raise CompressionError(f"reserved unskippable snappy chunk type 0x{chunk_type:02x}")
            except cramjam.DecompressionError as e:
                raise CompressionError(f"corrupt snappy chunk: {e}") from e
        if pos:
            del buf[:pos]
        return b"".join(parts)
