"""
The nsqlookupd TCP protocol "V1", nsqd's side: the commands nsqd sends and the replies it reads.

A connection starts with the magic C{"  V1"}. Commands are text lines; IDENTIFY is followed by a
sized JSON body. Every reply, success or error, is C{[int32 size][data]} with no frame type: C{OK},
lookupd's IDENTIFY JSON, or a string starting with C{E_}.

Pure code: bytes in, values out.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

from twisted_nsq.wire.frames import MAGIC_V1

__all__ = [
    "MAGIC_V1",
    "PING",
    "LookupReplyError",
    "LookupdInfo",
    "ReplyParser",
    "encode_identify",
    "encode_register",
    "encode_unregister",
    "identify_body",
    "is_error_reply",
    "parse_identify_reply",
]

_INT32 = struct.Struct(">i")

#: The heartbeat nsqd sends every 15 seconds; lookupd answers C{OK}.
PING = b"PING\n"

# Go's encoding/json escapes these inside strings; they only occur inside strings.
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class LookupReplyError(Exception):
    """A reply from lookupd that nsqd cannot use (too large, or an IDENTIFY reply that is not JSON)."""


def identify_body(
    *, broadcast_address: str, hostname: str, http_port: int, tcp_port: int, version: str
) -> bytes:
    """
    The JSON nsqd identifies itself with, as Go nsqd writes it.

    Go builds it as a C{map[string]interface{}}, and C{json.Marshal} writes a map's keys sorted, so
    the order is C{broadcast_address, hostname, http_port, tcp_port, version}; compact, UTF-8,
    HTML characters escaped.
    """
    fields = {
        "broadcast_address": broadcast_address,
        "hostname": hostname,
        "http_port": http_port,
        "tcp_port": tcp_port,
        "version": version,
    }
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return text.translate(_GO_JSON_ESCAPES).encode("utf-8")


def encode_identify(body: bytes) -> bytes:
    """C{IDENTIFY\\n}, the body's 4-byte big-endian length, then the body."""
    return b"IDENTIFY\n" + _INT32.pack(len(body)) + body


def _line(command: bytes, topic: str, channel: str | None) -> bytes:
    parts = [command, topic.encode("utf-8")]
    if channel:
        parts.append(channel.encode("utf-8"))
    return b" ".join(parts) + b"\n"


def encode_register(topic: str, channel: str | None = None) -> bytes:
    """C{REGISTER <topic>\\n}, or C{REGISTER <topic> <channel>\\n}; an empty channel is left out."""
    return _line(b"REGISTER", topic, channel)


def encode_unregister(topic: str, channel: str | None = None) -> bytes:
    """C{UNREGISTER <topic>\\n}, or C{UNREGISTER <topic> <channel>\\n}; an empty channel is left out."""
    return _line(b"UNREGISTER", topic, channel)


def is_error_reply(reply: bytes) -> bool:
    """Whether a reply is one of lookupd's errors (C{E_INVALID ...}, C{E_BAD_BODY ...}, ...)."""
    return reply.startswith(b"E_")


@attrs.frozen
class LookupdInfo:
    """What lookupd says about itself in its IDENTIFY reply; nsqd builds lookupd's HTTP address from it."""

    tcp_port: int = 0
    http_port: int = 0
    version: str = ""
    broadcast_address: str = ""
    hostname: str = ""

    def http_address(self) -> str | None:
        """C{broadcast_address:http_port} (IPv6 in brackets), or None without a broadcast address."""
        if not self.broadcast_address:
            return None
        host = self.broadcast_address
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.http_port}"


_INT_FIELDS = ("tcp_port", "http_port")
_STR_FIELDS = ("version", "broadcast_address", "hostname")


def parse_identify_reply(reply: bytes) -> LookupdInfo:
    """
    Read lookupd's IDENTIFY reply, as Go's C{json.Unmarshal} into nsqd's peer info does: missing
    fields stay empty, unknown fields are ignored, a field of the wrong type is an error.

    @raise LookupReplyError: the reply is not a JSON object of that shape (an C{E_} error is not).
    """
    try:
        document = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise LookupReplyError(f"invalid IDENTIFY reply {reply[:200]!r}: {e}") from None
    if not isinstance(document, dict):
        raise LookupReplyError(f"invalid IDENTIFY reply {reply[:200]!r}: not a JSON object")
    values: dict[str, Any] = {}
    for name in _INT_FIELDS:
        value = document.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise LookupReplyError(f"invalid IDENTIFY reply: {name} is {value!r}, not an integer")
        values[name] = value
    for name in _STR_FIELDS:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise LookupReplyError(f"invalid IDENTIFY reply: {name} is {value!r}, not a string")
        values[name] = value
    return LookupdInfo(**values)


class ReplyParser:
    """
    Splits the byte stream from lookupd into replies (C{[int32 size][data]}).

    One buffer and an offset; a reply larger than C{max_size} (nsqd uses C{--max-body-size}) or
    with a negative size is an error, raised before its data is buffered.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._offset = 0

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add received bytes; return every reply now complete, in order.

        @raise LookupReplyError: a reply's size is negative or above C{max_size}.
        """
        buffer = self._buffer
        buffer += data
        offset = self._offset
        replies: list[bytes] = []
        end = len(buffer)
        while end - offset >= 4:
            (size,) = _INT32.unpack_from(buffer, offset)
            if size < 0:
                raise LookupReplyError(f"invalid response body size ({size})")
            if size > self.max_size:
                raise LookupReplyError(f"response body size ({size}) is greater than limit ({self.max_size})")
            if end - offset - 4 < size:
                break
            start = offset + 4
            replies.append(bytes(buffer[start : start + size]))
            offset = start + size
        if offset == end:
            buffer.clear()
            offset = 0
        elif offset > 65536:
            del buffer[:offset]
            offset = 0
        self._offset = offset
        return replies
