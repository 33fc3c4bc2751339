"""
Message IDs: 64-bit snowflakes written as 16 lowercase hex ASCII bytes.

Layout: ``ts << 22 | node_id << 12 | seq`` where ``ts`` is ``now_ns >> 20`` (pseudo-milliseconds) minus
the Twitter epoch, ``node_id`` has 10 bits and ``seq`` 12 bits.
"""

from __future__ import annotations

import hashlib
import zlib

TWITTER_EPOCH_MS = 1288834974288

NODE_ID_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE_ID = (1 << NODE_ID_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
_NODE_ID_SHIFT = SEQUENCE_BITS
_TIMESTAMP_SHIFT = NODE_ID_BITS + SEQUENCE_BITS


def default_node_id(hostname: str) -> int:
    """nsqd's default C{--node-id}: the IEEE CRC-32 of the MD5 digest of the hostname, modulo 1024."""
    return zlib.crc32(hashlib.md5(hostname.encode("utf-8")).digest()) % (MAX_NODE_ID + 1)


class IDGenerator:
    """
    Generates strictly increasing, unique message IDs for one node.

    nsqd sleeps a millisecond when its clock goes backwards or the 12-bit sequence runs out. A
    reactor cannot sleep, so instead the timestamp never goes below the last one used (a clock that
    goes backwards keeps using it) and a sequence overflow moves the timestamp on by one logically.
    """

    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node ID {node_id} out of range [0, {MAX_NODE_ID + 1})")
        self.node_id = node_id
        self._node_bits = node_id << _NODE_ID_SHIFT
        # Starting at timestamp 0 with sequence -1 makes the first ID at least (0, node, 0), so no
        # ID is ever negative even for a clock set before the epoch.
        self._last_ts = 0
        self._sequence = -1

    def next_id(self, now_ns: int) -> bytes:
        """Return the next ID as 16 lowercase hex ASCII bytes, given the current time in nanoseconds."""
        ts = (now_ns >> 20) - TWITTER_EPOCH_MS
        if ts > self._last_ts:
            self._last_ts = ts
            self._sequence = sequence = 0
        else:
            ts = self._last_ts
            sequence = self._sequence + 1
            if sequence > MAX_SEQUENCE:
                self._last_ts = ts = ts + 1
                sequence = 0
            self._sequence = sequence
        return b"%016x" % ((ts << _TIMESTAMP_SHIFT) | self._node_bits | sequence)

    def next_ids(self, now_ns: int, count: int) -> list[bytes]:
        """``count`` consecutive IDs at once (an MPUB batch): the same IDs ``next_id`` would give."""
        ts = (now_ns >> 20) - TWITTER_EPOCH_MS
        if ts > self._last_ts:
            sequence = 0
        else:
            ts = self._last_ts
            sequence = self._sequence + 1
        ids: list[bytes] = []
        node_bits = self._node_bits
        hex_format = b"%016x".__mod__
        while count > 0:
            if sequence > MAX_SEQUENCE:
                ts += 1
                sequence = 0
            take = min(count, MAX_SEQUENCE + 1 - sequence)
            first = (ts << _TIMESTAMP_SHIFT) | node_bits | sequence
            ids += map(hex_format, range(first, first + take))
            sequence += take
            count -= take
        self._last_ts = ts
        self._sequence = sequence - 1
        return ids
