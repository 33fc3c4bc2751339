"""
Ordered channels (beyond NSQ, docs/extensions/ordered.md): the head file, the
C{--ordered-channel} patterns and the order keys of channels ordered by key.

An ordered channel's queue is one FIFO across memory and disk, and a message that was taken off
it (in flight, or put back by REQ, a timeout or a disconnect) is its *head*: it goes out again
before anything behind it. Go nsqd's clean stop appends in-flight messages to the channel's disk
queue, behind newer messages already on disk. To keep the head first across a restart, the
channel still writes the head into the queue files exactly as Go does (so Go nsqd reading the
data directory loses nothing), and also into C{<topic>:<channel>.diskqueue.head.dat}, a file Go
nsqd never reads. At start-up the channel delivers the file's messages first and skips their
copies when it reaches them in the queue.

Format: a sequence of records C{[1 byte kind][int64 BE wait][int32 BE length][payload]}:

  - kind C{M}: C{payload} is a message record (C{[8 ts][2 attempts][16 id][body]}), to deliver
    before the queue, in file order; C{wait} is the clock time in nanoseconds before which it
    must not be delivered (a C{REQ} with a delay; 0 for none). One copy of it sits in the queue.
  - kind C{S}: C{payload} is a 16-byte message ID: one copy of it sits in the queue (its head
    record was written at an earlier stop) and is skipped when read.

The file is written atomically (tmp file, fsync, rename) and removed when there is nothing to
record; a torn last record is ignored. A channel ordered by key writes, key after key, each key's
in-flight messages and then its pending ones, so the file order keeps every key's order; each
C{wait} then holds back only the key of its message.

An *order key* spec (C{json:FIELD} or C{prefix:DELIM}) names where a channel ordered by key finds
each message's key in its body; L{parse_order_key} turns it into a function from body to key.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence

import attrs

from twisted_nsq.nsqd.files import replace_file
from twisted_nsq.nsqd.message import Message
from twisted_nsq.wire.frames import decode_message, encode_message

_HEAD = struct.Struct(">cqi")
_JSON_PREFIX = "json:"
_BYTES_PREFIX = "prefix:"
_COMPACT = (",", ":")

#: A message's key in a channel ordered by key: C{None} is the one shared "no key" lane.
OrderKey = str | bytes | None
KeyFunction = Callable[[bytes], OrderKey]
_MESSAGE = b"M"
_SKIP = b"S"


def head_path(data_path: str, queue_name: str) -> str:
    """Where the head file of the queue named ``queue_name`` (``topic:channel``) lives."""
    return os.path.join(data_path, f"{queue_name}.diskqueue.head.dat")


@attrs.frozen
class HeadState:
    """What a head file holds: messages to deliver first (with wait times) and IDs to skip."""

    messages: tuple[tuple[Message, int], ...] = ()
    skips: tuple[bytes, ...] = ()


def save_head(path: str, messages: Iterable[tuple[Message, int]], skips: Iterable[bytes]) -> None:
    """Write ``(message, wait_ns)`` pairs and skip IDs atomically; remove the file when empty."""
    parts: list[bytes] = []
    for message, wait in messages:
        record = encode_message(message.timestamp, message.attempts & 0xFFFF, message.id, message.body)
        parts.append(_HEAD.pack(_MESSAGE, wait, len(record)))
        parts.append(record)
    for message_id in skips:
        parts.append(_HEAD.pack(_SKIP, 0, len(message_id)))
        parts.append(message_id)
    if not parts:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return
    replace_file(path, b"".join(parts))


def load_head(path: str) -> HeadState:
    """Read a head file (missing: empty); a torn or unknown record ends the reading."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return HeadState()
    messages: list[tuple[Message, int]] = []
    skips: list[bytes] = []
    offset = 0
    while offset + _HEAD.size <= len(data):
        kind, wait, length = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        end = start + length
        if length < 0 or end > len(data):
            break
        payload = data[start:end]
        if kind == _MESSAGE and length >= 26:
            decoded = decode_message(payload)
            messages.append((Message(decoded.id, decoded.body, decoded.timestamp, decoded.attempts), wait))
        elif kind == _SKIP and length == 16:
            skips.append(payload)
        else:
            break
        offset = end
    return HeadState(tuple(messages), tuple(skips))


class OrderedPatterns:
    """The C{--ordered-channel} regular expressions, each matched against a whole channel name."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = [re.compile(pattern) for pattern in patterns]

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def matches(self, channel_name: str) -> bool:
        """Whether a new channel called ``channel_name`` starts ordered."""
        return any(pattern.fullmatch(channel_name) for pattern in self._patterns)


def check_patterns(patterns: Sequence[str]) -> None:
    """@raise ValueError: a pattern is not a valid regular expression (naming the flag)."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"--ordered-channel {pattern!r}: not a valid regular expression: {e}") from e


def parse_order_key(spec: str) -> KeyFunction:
    """
    The function that reads a message's key from its body, for an order key ``spec``.

      - C{json:FIELD}: the top-level C{FIELD} of a JSON object body; a string value is the key
        as it is, any other value its compact JSON text.
      - C{prefix:DELIM}: the bytes before the first C{DELIM} (one or more bytes, UTF-8).

    A body without a key (not JSON, not an object, no such field, no delimiter) gives C{None}.

    @raise ValueError: ``spec`` is neither form, or its field or delimiter is empty.
    """
    if spec.startswith(_JSON_PREFIX) and len(spec) > len(_JSON_PREFIX):
        return _json_key(spec[len(_JSON_PREFIX) :])
    if spec.startswith(_BYTES_PREFIX) and len(spec) > len(_BYTES_PREFIX):
        return _prefix_key(spec[len(_BYTES_PREFIX) :].encode("utf-8"))
    raise ValueError(f"order key {spec!r}: must be json:FIELD or prefix:DELIM")


def _json_key(field: str) -> KeyFunction:
    loads = json.loads
    dumps = json.dumps

    def key(body: bytes) -> OrderKey:
        try:
            document = loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict):
            return None
        value = document.get(field, _MISSING)
        if value is _MISSING:
            return None
        if isinstance(value, str):
            return value
        return dumps(value, separators=_COMPACT)

    return key


_MISSING = object()


def _prefix_key(delimiter: bytes) -> KeyFunction:
    def key(body: bytes) -> OrderKey:
        end = body.find(delimiter)
        if end < 0:
            return None
        return body[:end]

    return key


def check_order_key(spec: str) -> None:
    """@raise ValueError: ``spec`` is not empty and not a valid order key (naming the flag)."""
    if spec:
        try:
            parse_order_key(spec)
        except ValueError as e:
            raise ValueError(f"--ordered-channel-key: {e}") from e
