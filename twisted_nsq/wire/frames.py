"""
Server-to-client frames and the message record.

A frame is ``[int32 size][int32 frame_type][data]`` (big-endian, ``size = 4 + len(data)``). A message
frame's data is the 26-byte message header (int64 timestamp in nanoseconds, uint16 attempts, 16-byte
ID) followed by the body; the same record, without the frame header, is what go-diskqueue stores.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC_V2 = b"  V2"
MAGIC_V1 = b"  V1"

FRAME_TYPE_RESPONSE = 0
FRAME_TYPE_ERROR = 1
FRAME_TYPE_MESSAGE = 2

MSG_ID_LENGTH = 16
MESSAGE_HEADER_SIZE = 26  # int64 timestamp + uint16 attempts + 16-byte ID

_FRAME_HEADER = struct.Struct(">ii")
_MESSAGE_FRAME_HEADER = struct.Struct(">iiqH")
_RECORD_HEADER = struct.Struct(">qH")
_INT32 = struct.Struct(">i")

# Payloads at least this large are copied out through a memoryview (one copy instead of two).
_LARGE_FRAME = 65536

# Everything in a message frame's size field besides the body: the type field and the header.
_MESSAGE_FRAME_OVERHEAD = 4 + MESSAGE_HEADER_SIZE


def encode_frame(frame_type: int, data: bytes) -> bytes:
    """Build a complete frame: ``[int32 4+len(data)][int32 frame_type][data]``."""
    return b"".join((_FRAME_HEADER.pack(4 + len(data), frame_type), data))


def response_frame(data: bytes) -> bytes:
    """Build a response frame (type 0), e.g. ``OK`` or the IDENTIFY JSON."""
    return encode_frame(FRAME_TYPE_RESPONSE, data)


def error_frame(data: bytes) -> bytes:
    """Build an error frame (type 1) from a complete ``b"CODE description"`` payload."""
    return encode_frame(FRAME_TYPE_ERROR, data)


OK_FRAME = response_frame(b"OK")
HEARTBEAT_FRAME = response_frame(b"_heartbeat_")
CLOSE_WAIT_FRAME = response_frame(b"CLOSE_WAIT")


def message_frame_header(body_length: int, timestamp: int, attempts: int) -> bytes:
    """
    The 18 bytes in front of the message ID in a message frame: size, type 2, timestamp, attempts.

    A delivery is written as C{writeSequence((header, message_id, body))}, which avoids copying the
    body into a new frame.
    """
    return _MESSAGE_FRAME_HEADER.pack(
        _MESSAGE_FRAME_OVERHEAD + body_length, FRAME_TYPE_MESSAGE, timestamp, attempts
    )


class DecodedMessage(NamedTuple):
    """A message record split into its fields."""

    timestamp: int
    attempts: int
    id: bytes
    body: bytes


def encode_message(timestamp: int, attempts: int, message_id: bytes, body: bytes) -> bytes:
    """
    Encode a message record: int64 timestamp, uint16 attempts, the 16-byte ID, then the body.

    This is a message frame's payload and also go-diskqueue's record payload.

    @raise ValueError: if C{message_id} is not 16 bytes long.
    """
    if len(message_id) != MSG_ID_LENGTH:
        raise ValueError(f"message ID must be 16 bytes, got {len(message_id)}")
    return b"".join((_RECORD_HEADER.pack(timestamp, attempts), message_id, body))


def decode_message(data: bytes) -> DecodedMessage:
    """
    Split a message record (a message frame's payload) into its fields.

    @raise ValueError: if C{data} is shorter than the 26-byte header.
    """
    if len(data) < MESSAGE_HEADER_SIZE:
        raise ValueError(f"message record too short: {len(data)} < {MESSAGE_HEADER_SIZE} bytes")
    timestamp, attempts = _RECORD_HEADER.unpack_from(data)
    return DecodedMessage(timestamp, attempts, bytes(data[10:MESSAGE_HEADER_SIZE]), bytes(data[26:]))


parse_message = decode_message


class FrameError(ValueError):
    """
    The peer sent a frame whose size field cannot be valid.

    C{frames} holds the complete frames that preceded the bad one in the same L{FrameParser.feed}
    call, so that nothing already received is lost.
    """

    def __init__(self, message: str, frames: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(message)
        self.frames: list[tuple[int, bytes]] = [] if frames is None else frames


class FrameParser:
    """
    The client-side frame parser: bytes from nsqd in, complete C{(frame_type, payload)} pairs out.

    Partial frames stay in one buffer; a size field is checked against C{max_frame_size} as soon as
    its 4 bytes arrive, so a hostile size never makes the parser wait for (or buffer) that much.
    After a L{FrameError} the parser is broken: every later C{feed} raises L{FrameError} too.
    """

    def __init__(self, max_frame_size: int = 8 * 1024 * 1024 + 64) -> None:
        self._max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are held while waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """
        Add received bytes; return every frame they complete, in order.

        @raise FrameError: if a size field is below 4 or above C{max_frame_size}.
        """
        if self._error is not None:
            raise FrameError(self._error)
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        offset = 0
        frames: list[tuple[int, bytes]] = []
        unpack_from = _FRAME_HEADER.unpack_from
        max_frame_size = self._max_frame_size
        while end - offset >= 4:
            (size,) = _INT32.unpack_from(buffer, offset)
            if size < 4 or size > max_frame_size:
                self._error = f"invalid frame size {size} (allowed 4-{max_frame_size})"
                self._buffer = bytearray()
                raise FrameError(self._error, frames)
            frame_end = offset + 4 + size
            if frame_end > end:
                break
            frame_type = unpack_from(buffer, offset)[1]
            if size < _LARGE_FRAME:
                payload = bytes(buffer[offset + 8 : frame_end])
            else:
                with memoryview(buffer) as view:
                    payload = view[offset + 8 : frame_end].tobytes()
            frames.append((frame_type, payload))
            offset = frame_end
        if offset:
            # CPython drops a bytearray's head without moving the tail, so this is cheap.
            del buffer[:offset]
        return frames
