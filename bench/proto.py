"""
The little of NSQ's TCP protocol the load clients need, as plain functions over bytes.

Written for the client side of a benchmark: commands are built once and reused, frames are
scanned out of one C{bytearray} without copying anything but the message IDs, and nothing here
touches a socket, so every piece can be checked on fixed bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from fractions import Fraction

MAGIC_V2 = b"  V2"

FRAME_RESPONSE = 0
FRAME_ERROR = 1
FRAME_MESSAGE = 2

#: The frame nsqd sends for a successful PUB, MPUB or SUB: size 6, type 0, "OK".
OK_FRAME = b"\x00\x00\x00\x06\x00\x00\x00\x00OK"
HEARTBEAT = b"_heartbeat_"
NOP = b"NOP\n"

_INT32 = struct.Struct(">i")
_FRAME_HEADER = struct.Struct(">ii")
#: A latency body starts with a sequence number and the publisher's monotonic clock in ns.
LATENCY_STAMP = struct.Struct(">qq")

# In a message frame: size(4) type(4) timestamp(8) attempts(2) id(16) body.
_ID_START = 4 + 4 + 8 + 2
_ID_END = _ID_START + 16
_BODY_START = _ID_END
#: Largest frame the clients accept; anything bigger means the stream is out of step.
MAX_FRAME = 16 * 1024 * 1024


class ProtocolError(Exception):
    """nsqd sent an error frame, a frame the client did not expect, or bytes that are not frames."""


def pub_command(topic: str, body: bytes) -> bytes:
    """The complete bytes of C{PUB topic} carrying C{body}."""
    return b"PUB " + topic.encode("ascii") + b"\n" + _INT32.pack(len(body)) + body


def mpub_command(topic: str, bodies: Sequence[bytes]) -> bytes:
    """The complete bytes of C{MPUB topic} carrying C{bodies}, in order."""
    parts = [_INT32.pack(len(bodies))]
    for body in bodies:
        parts.append(_INT32.pack(len(body)))
        parts.append(body)
    payload = b"".join(parts)
    return b"MPUB " + topic.encode("ascii") + b"\n" + _INT32.pack(len(payload)) + payload


def fin_lines(ids: Sequence[bytes | bytearray]) -> bytes:
    """One C{FIN <id>\\n} line per message ID, joined so they go out in a single send."""
    return b"FIN " + b"\nFIN ".join(ids) + b"\n"


def take_frames(buffer: bytearray, offset: int, ids: list[bytearray], others: list[tuple[int, bytes]]) -> int:
    """
    Scan the complete frames in C{buffer} from C{offset}.

    Each message frame adds its 16-byte ID to C{ids}; every other frame adds C{(type, payload)} to
    C{others}. Stops at the first incomplete frame and returns the offset where it starts (the
    caller drops the bytes before it once per read).

    @raise ProtocolError: a size field below 4 or above L{MAX_FRAME}.
    """
    end = len(buffer)
    unpack_from = _FRAME_HEADER.unpack_from
    append_id = ids.append
    while end - offset >= 8:
        size, frame_type = unpack_from(buffer, offset)
        if size < 4 or size > MAX_FRAME:
            raise ProtocolError(f"bad frame size {size}")
        frame_end = offset + 4 + size
        if frame_end > end:
            break
        if frame_type == FRAME_MESSAGE:
            append_id(buffer[offset + _ID_START : offset + _ID_END])
        else:
            others.append((frame_type, bytes(buffer[offset + 8 : frame_end])))
        offset = frame_end
    return offset


def take_messages(
    buffer: bytearray, offset: int, messages: list[tuple[bytes, bytes]], others: list[tuple[int, bytes]]
) -> int:
    """
    Like L{take_frames}, but each message frame adds C{(id, body)} to C{messages}.

    @raise ProtocolError: a size field below 4 or above L{MAX_FRAME}, or a message frame too short
        to hold its 26-byte header.
    """
    end = len(buffer)
    unpack_from = _FRAME_HEADER.unpack_from
    while end - offset >= 8:
        size, frame_type = unpack_from(buffer, offset)
        if size < 4 or size > MAX_FRAME:
            raise ProtocolError(f"bad frame size {size}")
        frame_end = offset + 4 + size
        if frame_end > end:
            break
        if frame_type == FRAME_MESSAGE:
            if size < 4 + 26:
                raise ProtocolError(f"message frame of size {size} is too short")
            messages.append(
                (
                    bytes(buffer[offset + _ID_START : offset + _ID_END]),
                    bytes(buffer[offset + _BODY_START : frame_end]),
                )
            )
        else:
            others.append((frame_type, bytes(buffer[offset + 8 : frame_end])))
        offset = frame_end
    return offset


def latency_body(sequence: int, sent_ns: int, size: int) -> bytes:
    """A latency-probe body of C{size} bytes: the stamp, then padding."""
    stamp = LATENCY_STAMP.pack(sequence, sent_ns)
    if size < len(stamp):
        raise ValueError(f"a latency body needs at least {len(stamp)} bytes, not {size}")
    return stamp + b"x" * (size - len(stamp))


def read_latency_stamp(body: bytes) -> tuple[int, int]:
    """The C{(sequence, sent_ns)} at the start of a latency-probe body."""
    sequence, sent_ns = LATENCY_STAMP.unpack_from(body, 0)
    return sequence, sent_ns


def percentile(ordered: Sequence[int | float], p: float) -> float:
    """
    The nearest-rank C{p}-th percentile of C{ordered}, which must already be sorted ascending.

    The smallest value such that at least C{p} percent of the values are at or below it: no
    interpolation, so every answer is a value that was measured.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    # Exact arithmetic: in floats, 99.9 / 100 * 1000 is just above 999 and would round up to 1000.
    rank = math.ceil(Fraction(str(p)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99, p99.9, max and mean of C{latencies_ns}, in microseconds."""
    ordered = sorted(latencies_ns)
    return {
        "count": len(ordered),
        "p50_us": percentile(ordered, 50) / 1000,
        "p90_us": percentile(ordered, 90) / 1000,
        "p99_us": percentile(ordered, 99) / 1000,
        "p999_us": percentile(ordered, 99.9) / 1000,
        "max_us": ordered[-1] / 1000,
        "mean_us": sum(ordered) / len(ordered) / 1000,
    }
