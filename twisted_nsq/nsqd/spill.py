"""
Deferred messages beyond a channel's memory cap, kept on disk in time buckets.

Go nsqd holds every deferred message in memory (nsqio/nsq#1142, #1340). With
``--deferred-memory-limit N`` a channel keeps at most N deferred messages in memory; the rest
go to append-only bucket files, one per ``BUCKET_SECONDS`` of due time, named
``<topic>:<channel>.deferred-spill.<bucket>.dat``. Memory then holds one small entry per
non-empty bucket. When a bucket's time comes, its file is read back whole and deleted, and its
messages rejoin the channel's deferred heap (or its queue, if already due).

Record format: ``[int64 due, ns since the epoch][int32 length][message record]`` where the
message record is nsqd's usual ``[8 ts][2 attempts][16 id][body]``. Go nsqd never reads these
files; at a clean stop their messages are moved into the channel's queue like any deferred
message, so the queue files stay readable by Go nsqd.
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

from twisted.logger import Logger

from twisted_nsq.nsqd.message import Message
from twisted_nsq.wire.frames import decode_message, encode_message

log = Logger()

BUCKET_SECONDS = 10.0
_HEADER = struct.Struct(">qi")


class DeferredSpill:
    """The bucket files of one channel. See the module docstring."""

    def __init__(self, data_path: str, queue_name: str, bucket_seconds: float = BUCKET_SECONDS) -> None:
        self._data_path = data_path
        self._prefix = f"{queue_name}.deferred-spill."
        self._bucket_seconds = bucket_seconds
        self._files: dict[int, BinaryIO] = {}
        self._counts: dict[int, int] = {}
        self._pattern = re.compile(re.escape(self._prefix) + r"(-?\d+)\.dat$")
        self._load_existing()

    def __len__(self) -> int:
        return sum(self._counts.values())

    def _path(self, bucket: int) -> str:
        return os.path.join(self._data_path, f"{self._prefix}{bucket}.dat")

    def _load_existing(self) -> None:
        """Count the records of bucket files left by an earlier run (after a crash)."""
        try:
            names = os.listdir(self._data_path)
        except OSError:
            return
        for name in names:
            match = self._pattern.match(name)
            if match:
                bucket = int(match.group(1))
                self._counts[bucket] = len(self._read(bucket))

    def add(self, message: Message, due: float) -> None:
        """Append ``message`` (due at clock time ``due``) to its bucket."""
        bucket = int(due // self._bucket_seconds)
        handle = self._files.get(bucket)
        if handle is None:
            handle = self._files[bucket] = open(self._path(bucket), "ab")
        record = encode_message(message.timestamp, message.attempts, message.id, message.body)
        handle.write(_HEADER.pack(int(due * 1e9), len(record)))
        handle.write(record)
        self._counts[bucket] = self._counts.get(bucket, 0) + 1

    def next_time(self) -> float | None:
        """When the earliest bucket opens (clock seconds), or None when nothing is spilled."""
        if not self._counts:
            return None
        return min(self._counts) * self._bucket_seconds

    def take(self, now: float) -> list[tuple[float, Message]]:
        """Read back and delete every bucket that has opened by ``now``: ``(due, message)`` pairs."""
        out: list[tuple[float, Message]] = []
        for bucket in sorted(b for b in self._counts if b * self._bucket_seconds <= now):
            out.extend(self._read(bucket))
            self._drop(bucket)
        return out

    def take_all(self) -> list[tuple[float, Message]]:
        """Everything spilled, earliest bucket first (a clean stop moves it into the queue)."""
        return self.take(float("inf"))

    def _read(self, bucket: int) -> list[tuple[float, Message]]:
        handle = self._files.get(bucket)
        if handle is not None:
            handle.flush()
        try:
            with open(self._path(bucket), "rb") as f:
                data = f.read()
        except OSError as e:
            log.error("deferred spill {path} unreadable: {error}", path=self._path(bucket), error=e)
            return []
        records: list[tuple[float, Message]] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            due_ns, length = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            if length < 26 or start + length > len(data):
                # A torn tail (crash while appending): what came before it is intact.
                log.warn(
                    "deferred spill {path}: torn record at {offset}", path=self._path(bucket), offset=offset
                )
                break
            decoded = decode_message(data[start : start + length])
            records.append(
                (due_ns / 1e9, Message(decoded.id, decoded.body, decoded.timestamp, decoded.attempts))
            )
            offset = start + length
        return records

    def _drop(self, bucket: int) -> None:
        handle = self._files.pop(bucket, None)
        if handle is not None:
            handle.close()
        self._counts.pop(bucket, None)
        try:
            os.remove(self._path(bucket))
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        """Drop every spilled message (channel emptied or deleted)."""
        for bucket in list(self._counts):
            self._drop(bucket)

    def close(self) -> None:
        """Flush and close the open bucket files."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()
