"""Decoding of command bodies and parameters the way nsqd does it."""

from __future__ import annotations

import struct

from twisted_nsq.wire.errors import E_BAD_BODY, E_BAD_MESSAGE, NSQError

_INT32 = struct.Struct(">i")

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MASK = (1 << 64) - 1


def max_mpub_count(max_body_size: int) -> int:
    """The largest MPUB message count nsqd accepts: each message takes at least 5 bytes after the count."""
    return (max_body_size - 4) // 5


def parse_mpub_body(
    body: bytes, max_msg_size: int, max_body_size: int, *, prefix: str = "MPUB"
) -> list[bytes]:
    """
    Split a binary MPUB body, ``[int32 n][int32 len1][b1]...``, into its messages.

    Every message is checked before anything is returned, so a batch is accepted or refused as a
    whole. Bytes after the n-th message are ignored. The error descriptions are nsqd's, with
    C{prefix} in front.

    @raise NSQError: C{E_BAD_BODY} for a missing or out-of-range count, C{E_BAD_MESSAGE} for a
        message whose length is missing, not positive, above C{max_msg_size}, or longer than the
        bytes left.
    """
    view = memoryview(body)
    total = len(view)
    if total < 4:
        raise NSQError(E_BAD_BODY, prefix + " failed to read message count")
    unpack_from = _INT32.unpack_from
    (count,) = unpack_from(view, 0)
    if count <= 0 or count > max_mpub_count(max_body_size):
        raise NSQError(E_BAD_BODY, f"{prefix} invalid message count {count}")
    messages: list[bytes] = []
    offset = 4
    for index in range(count):
        if total - offset < 4:
            raise NSQError(E_BAD_MESSAGE, f"{prefix} failed to read message({index}) body size")
        (length,) = unpack_from(view, offset)
        offset += 4
        if length <= 0:
            raise NSQError(E_BAD_MESSAGE, f"{prefix} invalid message({index}) body size {length}")
        if length > max_msg_size:
            raise NSQError(E_BAD_MESSAGE, f"{prefix} message too big {length} > {max_msg_size}")
        end = offset + length
        if end > total:
            raise NSQError(E_BAD_MESSAGE, prefix + " failed to read message body")
        messages.append(view[offset:end].tobytes())
        offset = end
    return messages


def split_text_mpub(body: bytes) -> list[bytes]:
    """
    Split a text-mode HTTP ``/mpub`` body into messages: one per ``\\n``-terminated line.

    Empty lines are skipped; a ``\\r`` before the ``\\n`` is kept, as nsqd keeps it.
    """
    return [line for line in body.split(b"\n") if line]


def parse_int(value: bytes) -> int | None:
    """
    Parse a decimal integer the way Go's C{strconv.Atoi} does, or return C{None}.

    An optional leading ``-`` or ``+`` and at least one ASCII digit; nothing else (no spaces, no
    underscores). Values outside the int64 range are refused, as Atoi refuses them.
    """
    digits = value[1:] if value[:1] in (b"-", b"+") else value
    # bytes.isdigit() accepts ASCII digits only, unlike str.isdigit().
    if not digits.isdigit():
        return None
    # Leading zeros are allowed; anything longer than 19 significant digits is out of range, and
    # stopping here also keeps int() away from its limit on very long digit strings.
    if len(digits.lstrip(b"0")) > 19:
        return None
    number = int(value)
    if number < _INT64_MIN or number > _INT64_MAX:
        return None
    return number


def parse_base10_unsigned(value: bytes) -> int | None:
    """
    Parse an unsigned decimal the way nsqd's C{ByteToBase10} does (used by RDY), or return C{None}.

    Every byte must be an ASCII digit. Like the Go function, an empty value is 0 and a value too
    large for 64 bits wraps around modulo 2**64.
    """
    if not value:
        return 0
    if not value.isdigit():
        return None
    if len(value) <= 19:
        return int(value)
    # Reduce chunk by chunk: int() refuses digit strings beyond a few thousand characters, and a
    # 16 KiB command line can carry more.
    number = 0
    for start in range(0, len(value), 1000):
        chunk = value[start : start + 1000]
        number = (number * 10 ** len(chunk) + int(chunk)) & _UINT64_MASK
    return number
