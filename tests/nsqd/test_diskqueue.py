"""
DiskQueue: go-diskqueue 1.1.0's files byte for byte, rolling, syncing, errors, and FIFO order.

The golden bytes are built here with struct from the layout in nsq-spec 2.7, independently of the
code under test.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import struct
from collections.abc import Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._manual_runner import ManualRunner
from twisted_nsq.nsqd.backend import BackendError, IBackendQueue
from twisted_nsq.nsqd.diskqueue import FLUSH_THRESHOLD, DiskQueue
from twisted_nsq.nsqd.message import Message

NAME = "t1:ch1"
TS = 1_700_000_000_123_456_789


def golden_record(timestamp: int, attempts: int, message_id: bytes, body: bytes) -> bytes:
    """One record as go-diskqueue writes it for nsqd: int32 size, int64 ts, uint16 attempts, ID, body."""
    payload = struct.pack(">q", timestamp) + struct.pack(">H", attempts) + message_id + body
    return struct.pack(">i", len(payload)) + payload


def golden_metadata(depth: int, rfn: int, rpos: int, wfn: int, wpos: int) -> bytes:
    return f"{depth}\n{rfn},{rpos}\n{wfn},{wpos}\n".encode()


def message(n: int, body: bytes, attempts: int = 1, timestamp: int = TS) -> Message:
    return Message(b"%016x" % n, body, timestamp + n, attempts)


class CountingRunner:
    """A synchronous sync_runner that counts the jobs, and tells a data fsync from a metadata write."""

    def __init__(self) -> None:
        self.calls = 0
        self.jobs: list[str] = []

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        self.calls += 1
        name = getattr(getattr(work, "func", work), "__name__", "?")
        self.jobs.append({"_fsync_work": "fsync", "_write_metadata": "metadata"}.get(name, name))
        return maybeDeferred(work)


class QueueTestMixin:
    """Makes queues over a real directory with a Clock and a synchronous sync_runner."""

    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]

    def setUpQueueDir(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(self.path)
        self.clock = Clock()
        self.runner = CountingRunner()
        self.errors: list[str | None] = []
        self.queues: list[DiskQueue] = []

    def make(self, name: str = NAME, **overrides: Any) -> DiskQueue:
        options: dict[str, Any] = {
            "max_bytes_per_file": 1024 * 1024,
            "max_msg_size": 1024 * 1024,
            "sync_every": 2500,
            "sync_timeout": 2.0,
            "clock": self.clock,
            "sync_runner": self.runner,
            "on_error": self.errors.append,
        }
        options.update(overrides)
        queue = DiskQueue(name, self.path, **options)
        self.queues.append(queue)
        self.addCleanup(queue.close)
        return queue

    def reopen(self, queue: DiskQueue, **overrides: Any) -> DiskQueue:
        queue.close()
        return self.make(queue.name, **overrides)

    def file(self, num: int, name: str = NAME) -> str:
        return os.path.join(self.path, f"{name}.diskqueue.{num:06d}.dat")

    def meta(self, name: str = NAME) -> str:
        return os.path.join(self.path, f"{name}.diskqueue.meta.dat")

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    def drain(self, queue: DiskQueue, limit: int = 10_000) -> list[Message]:
        out: list[Message] = []
        for _ in range(limit):
            m = queue.read()
            if m is None:
                return out
            out.append(m)
        raise AssertionError("read() did not run dry")

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.path))

    def capture_logs(self) -> list[LogEvent]:
        """Every log event from now until the end of the test."""
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events


def formats(events: list[LogEvent]) -> str:
    return "\n".join(str(e.get("log_format", "")) for e in events)


class RoundTripTests(QueueTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_interface(self) -> None:
        queue = self.make()
        self.assertTrue(IBackendQueue.providedBy(queue))
        self.assertTrue(queue.unbounded)
        self.assertEqual(queue.name, NAME)
        self.assertEqual(queue.bad_file_count, 0)

    def test_round_trip_keeps_fields(self) -> None:
        queue = self.make()
        sent = [message(1, b"first", attempts=1), message(2, b"", attempts=7), message(3, b"x" * 5000, 65535)]
        for m in sent:
            queue.put(m)
        self.assertEqual(queue.depth(), 3)
        got = self.drain(queue)
        self.assertEqual(
            [(m.id, m.body, m.timestamp, m.attempts) for m in got],
            [(m.id, m.body, m.timestamp, m.attempts) for m in sent],
        )
        self.assertEqual(queue.depth(), 0)
        self.assertIsNone(queue.read())

    def test_read_empty(self) -> None:
        self.assertIsNone(self.make().read())

    def test_interleaved_put_and_read(self) -> None:
        queue = self.make(max_bytes_per_file=200)
        expected = []
        got: list[bytes] = []
        for n in range(50):
            m = message(n, b"b" * (n % 7))
            queue.put(m)
            expected.append(m.id)
            if n % 3 == 0:
                self.clock.advance(0)
            if n % 2:
                got.extend(x.id for x in self.drain(queue))
        got.extend(x.id for x in self.drain(queue))
        self.assertEqual(got, expected)
        self.assertEqual(queue.bad_file_count, 0)

    def test_close_and_reopen_resumes(self) -> None:
        queue = self.make(max_bytes_per_file=100)
        for n in range(5):
            queue.put(message(n, b"abcdefgh"))
        self.assertEqual([m.id for m in (queue.read(), queue.read()) if m], [b"%016x" % 0, b"%016x" % 1])
        queue = self.reopen(queue, max_bytes_per_file=100)
        self.assertEqual(queue.depth(), 3)
        self.assertEqual([m.body for m in self.drain(queue)], [b"abcdefgh"] * 3)

    def test_put_after_close_fails(self) -> None:
        queue = self.make()
        queue.close()
        self.assertRaises(BackendError, queue.put, message(1, b"x"))
        self.assertIsNone(queue.read())

    def test_too_large_and_bad_id(self) -> None:
        queue = self.make(max_msg_size=10)
        queue.put(message(1, b"x" * 10))
        self.assertRaises(BackendError, queue.put, message(2, b"x" * 11))
        self.assertRaises(BackendError, queue.put, Message(b"short", b"x", TS, 1))
        self.assertEqual(queue.depth(), 1)
        got = self.drain(queue)
        self.assertEqual([m.body for m in got], [b"x" * 10])

    def test_empty(self) -> None:
        queue = self.make(max_bytes_per_file=100)
        for n in range(10):
            queue.put(message(n, b"y" * 20))
        queue.read()
        queue.sync()
        self.assertTrue(os.path.exists(self.meta()))
        queue.empty()
        self.assertEqual(queue.depth(), 0)
        self.assertIsNone(queue.read())
        self.assertEqual(self.listing(), [])
        # Both positions move to the next file number after the last one used.
        queue.put(message(99, b"after"))
        self.assertEqual([m.body for m in self.drain(queue)], [b"after"])
        self.assertEqual(self.listing(), [os.path.basename(self.file(5))])
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 5, 35, 5, 35))

    def test_delete(self) -> None:
        queue = self.make(max_bytes_per_file=100)
        for n in range(10):
            queue.put(message(n, b"y" * 20))
        queue.sync()
        other = self.make("t1:ch2")
        other.put(message(1, b"other"))
        other.close()
        queue.delete()
        self.assertEqual([n for n in self.listing() if n.startswith(NAME + ".")], [])
        self.assertEqual(len([n for n in self.listing() if n.startswith("t1:ch2.")]), 2)
        self.assertIsNone(queue.read())
        self.assertRaises(BackendError, queue.put, message(1, b"x"))
        self.assertEqual(self.successResultOf(queue.sync()), None)

    def test_fully_read_file_is_deleted(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        for n in range(4):
            queue.put(message(n, b"ab"))  # 32-byte records: two per file
        self.assertTrue(os.path.exists(self.file(0)))
        queue.read()
        self.assertTrue(os.path.exists(self.file(0)))
        queue.read()
        self.assertFalse(os.path.exists(self.file(0)))
        self.assertTrue(os.path.exists(self.file(1)))


class GoldenFileTests(QueueTestMixin, SynchronousTestCase):
    """What Go nsqd 1.3.0 writes, byte for byte, and reading what it wrote."""

    def setUp(self) -> None:
        self.setUpQueueDir()
        self.id1 = b"18a7874809669000"
        self.id2 = b"18a7874809669001"
        # Two records of 33 and 30 bytes: the observed metadata "2\n0,0\n0,63\n".
        self.rec1 = golden_record(TS, 1, self.id1, b"hi!")
        self.rec2 = golden_record(TS + 5, 3, self.id2, b"")
        self.assertEqual(len(self.rec1) + len(self.rec2), 63)

    def test_written_bytes_match(self) -> None:
        queue = self.make()
        queue.put(Message(self.id1, b"hi!", TS, 1))
        queue.put(Message(self.id2, b"", TS + 5, 3))
        queue.close()
        self.assertEqual(self.listing(), [f"{NAME}.diskqueue.000000.dat", f"{NAME}.diskqueue.meta.dat"])
        self.assertEqual(self.read_bytes(self.file(0)), self.rec1 + self.rec2)
        self.assertEqual(self.read_bytes(self.meta()), b"2\n0,0\n0,63\n")
        for path in (self.file(0), self.meta()):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_written_metadata_after_reads(self) -> None:
        queue = self.make()
        queue.put(Message(self.id1, b"hi!", TS, 1))
        queue.put(Message(self.id2, b"", TS + 5, 3))
        queue.read()
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), b"1\n0,33\n0,63\n")

    def test_read_go_files(self) -> None:
        self.write_bytes(self.file(0), self.rec1 + self.rec2)
        self.write_bytes(self.meta(), b"2\n0,0\n0,63\n")
        queue = self.make()
        self.assertEqual(queue.depth(), 2)
        first, second = self.drain(queue)
        self.assertEqual((first.id, first.body, first.timestamp, first.attempts), (self.id1, b"hi!", TS, 1))
        self.assertEqual(
            (second.id, second.body, second.timestamp, second.attempts), (self.id2, b"", TS + 5, 3)
        )
        self.assertEqual(queue.depth(), 0)
        # Appending continues Go's file where it ended.
        queue.put(Message(self.id1, b"more", TS, 1))
        queue.close()
        self.assertEqual(
            self.read_bytes(self.file(0)), self.rec1 + self.rec2 + golden_record(TS, 1, self.id1, b"more")
        )
        self.assertEqual(self.read_bytes(self.meta()), b"1\n0,63\n0,97\n")

    def test_read_go_files_mid_queue(self) -> None:
        # Go had rolled to file 1 and read the first record of file 0.
        rec3 = golden_record(TS + 9, 2, b"18a7874809669002", b"third")
        self.write_bytes(self.file(0), self.rec1 + self.rec2)
        self.write_bytes(self.file(1), rec3)
        self.write_bytes(self.meta(), b"2\n0,33\n1,35\n")
        queue = self.make(max_bytes_per_file=64)
        self.assertEqual([m.id for m in self.drain(queue)], [self.id2, b"18a7874809669002"])
        self.assertFalse(os.path.exists(self.file(0)))
        self.assertEqual(queue.bad_file_count, 0)

    def test_rolled_files_match(self) -> None:
        # 32-byte records with max_bytes_per_file=64: two fill file 0 exactly, the third rolls.
        queue = self.make(max_bytes_per_file=64)
        records = []
        for n in range(3):
            m = message(n, b"ab", attempts=n + 1)
            queue.put(m)
            records.append(golden_record(m.timestamp, m.attempts, m.id, m.body))
        queue.close()
        self.assertEqual(self.read_bytes(self.file(0)), records[0] + records[1])
        self.assertEqual(self.read_bytes(self.file(1)), records[2])
        self.assertEqual(self.read_bytes(self.meta()), b"3\n0,0\n1,32\n")


class RollTests(QueueTestMixin, SynchronousTestCase):
    """The off-by-one boundaries of writeOne's roll and readOne's end of file."""

    def setUp(self) -> None:
        self.setUpQueueDir()

    def sizes(self) -> list[int]:
        return [os.path.getsize(self.file(n)) for n in range(10) if os.path.exists(self.file(n))]

    def put_all(self, queue: DiskQueue, count: int, body: bytes = b"ab") -> list[bytes]:
        ids = []
        for n in range(count):
            m = message(n, body)
            queue.put(m)
            ids.append(m.id)
        self.clock.advance(0)
        return ids

    def test_record_exactly_fills_file(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        ids = self.put_all(queue, 4)
        self.assertEqual(self.sizes(), [64, 64])
        self.assertEqual([m.id for m in self.drain(queue)], ids)

    def test_one_byte_over_rolls(self) -> None:
        queue = self.make(max_bytes_per_file=63)
        ids = self.put_all(queue, 3)
        self.assertEqual(self.sizes(), [32, 32, 32])
        self.assertEqual([m.id for m in self.drain(queue)], ids)
        self.assertEqual(queue.bad_file_count, 0)

    def test_record_larger_than_file(self) -> None:
        queue = self.make(max_bytes_per_file=20)
        ids = self.put_all(queue, 3)
        # Each record goes alone into an empty file; no file holds two.
        self.assertEqual(self.sizes(), [32, 32, 32])
        self.assertEqual([m.id for m in self.drain(queue)], ids)
        self.assertEqual(queue.bad_file_count, 0)
        self.assertEqual(self.sizes(), [32])

    def test_large_record_after_small(self) -> None:
        queue = self.make(max_bytes_per_file=100)
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"z" * 200))
        queue.put(message(2, b"ab"))
        self.clock.advance(0)
        self.assertEqual(self.sizes(), [32, 230, 32])
        self.assertEqual([m.body for m in self.drain(queue)], [b"ab", b"z" * 200, b"ab"])

    def test_read_file_rolled_early(self) -> None:
        # A file closed well before max_bytes_per_file ends at its real size.
        queue = self.make(max_bytes_per_file=80)
        queue.put(message(0, b"ab"))  # 32
        queue.put(message(1, b"c" * 40))  # 70: 32 + 70 > 80, rolls
        queue = self.reopen(queue, max_bytes_per_file=80)
        self.assertEqual(self.sizes(), [32, 70])
        self.assertEqual([m.body for m in self.drain(queue)], [b"ab", b"c" * 40])
        self.assertEqual(queue.bad_file_count, 0)

    def test_reader_caught_up_when_writer_rolls(self) -> None:
        # nsqio/go-diskqueue#42: Go 1.1.0 hits EOF here and renames a good file .bad.
        queue = self.make(max_bytes_per_file=64)
        queue.put(message(0, b"ab"))
        self.clock.advance(0)
        self.assertEqual(queue.read().body, b"ab")  # type: ignore[union-attr]
        queue.put(message(1, b"c" * 40))  # rolls: 32 + 70 > 64
        self.clock.advance(0)
        self.assertEqual(queue.read().body, b"c" * 40)  # type: ignore[union-attr]
        self.assertEqual(queue.bad_file_count, 0)
        self.assertEqual([n for n in self.listing() if n.endswith(".bad")], [])
        self.assertFalse(os.path.exists(self.file(0)))

    def test_reader_caught_up_at_exact_end(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        ids = self.put_all(queue, 2)  # file 0 is exactly full
        self.assertEqual([m.id for m in self.drain(queue)], ids)
        self.assertTrue(os.path.exists(self.file(0)))  # still the write file
        queue.put(message(5, b"ab"))
        self.assertEqual(queue.read().id, b"%016x" % 5)  # type: ignore[union-attr]
        self.assertFalse(os.path.exists(self.file(0)))
        self.assertEqual(queue.bad_file_count, 0)

    def test_smaller_max_bytes_after_restart(self) -> None:
        queue = self.make(max_bytes_per_file=1000)
        ids = self.put_all(queue, 10)
        queue.put(message(10, b"ab"))
        queue = self.reopen(queue, max_bytes_per_file=64)
        ids.append(b"%016x" % 10)
        queue.put(message(11, b"ab"))
        ids.append(b"%016x" % 11)
        self.assertEqual([m.id for m in self.drain(queue)], ids)
        self.assertEqual(queue.bad_file_count, 0)

    def test_file_numbers_past_six_digits(self) -> None:
        self.write_bytes(self.meta(), b"0\n999999,0\n999999,0\n")
        queue = self.make(max_bytes_per_file=32)
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"ab"))
        self.clock.advance(0)
        self.assertTrue(os.path.exists(self.file(999999)))
        self.assertTrue(os.path.exists(os.path.join(self.path, f"{NAME}.diskqueue.1000000.dat")))
        self.assertEqual(len(self.drain(queue)), 2)


class BufferingAndSyncTests(QueueTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_writes_wait_for_the_end_of_the_turn(self) -> None:
        queue = self.make()
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"ab"))
        self.assertEqual(os.path.getsize(self.file(0)), 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # one flush, one sync timer
        self.clock.advance(0)
        self.assertEqual(os.path.getsize(self.file(0)), 64)

    def test_large_buffer_is_written_early(self) -> None:
        queue = self.make()
        body = b"z" * 1000
        count = FLUSH_THRESHOLD // 1030 + 2
        for n in range(count):
            queue.put(message(n, body))
        self.assertGreater(os.path.getsize(self.file(0)), FLUSH_THRESHOLD - 1030)

    def test_flush(self) -> None:
        queue = self.make()
        queue.put(message(0, b"ab"))
        queue.flush()
        self.assertEqual(os.path.getsize(self.file(0)), 32)
        self.assertFalse(os.path.exists(self.meta()))

    def test_reader_takes_records_from_the_write_buffer(self) -> None:
        queue = self.make()
        queue.put(message(0, b"ab"))
        self.assertEqual(os.path.getsize(self.file(0)), 0)
        self.assertEqual(queue.read().body, b"ab")  # type: ignore[union-attr]
        self.clock.advance(0)
        self.assertEqual(os.path.getsize(self.file(0)), 32)
        self.assertIsNone(queue.read())

    def test_sync_every_counts_reads_and_writes(self) -> None:
        queue = self.make(sync_every=3)
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"ab"))
        self.assertEqual(self.runner.calls, 0)
        queue.read()
        # A sync: the data fsync, then the metadata.
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"])
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 0, 32, 0, 64))
        queue.put(message(2, b"ab"))
        queue.read()
        self.assertEqual(self.runner.calls, 2)
        queue.read()
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"] * 2)
        # Reads alone leave no data to fsync: only the metadata is written.
        queue.put(message(3, b"ab"))
        queue.put(message(4, b"ab"))
        queue.sync()
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"] * 2 + ["fsync"])
        queue.read()
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"] * 2 + ["fsync", "metadata"])

    def test_sync_timeout_one_timer(self) -> None:
        queue = self.make(sync_timeout=2.0)
        queue.put(message(0, b"ab"))
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for n in range(1, 50):
            queue.put(message(n, b"ab"))
            queue.read()
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.5)
        self.assertEqual(self.runner.calls, 0)
        self.clock.advance(0.5)
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"])
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 0, 49 * 32, 0, 50 * 32))
        # Idle: no timer, no more syncs.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.runner.calls, 2)

    def test_sync_on_roll(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"ab"))
        self.assertEqual(self.runner.calls, 0)
        queue.put(message(2, b"ab"))
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"])
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(2, 0, 0, 1, 0))
        self.assertEqual(os.path.getsize(self.file(0)), 64)

    def test_sync_on_moving_to_next_read_file(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        for n in range(3):
            queue.put(message(n, b"ab"))
        calls = self.runner.calls
        queue.read()
        self.assertEqual(self.runner.calls, calls)
        queue.read()
        # Moving on: the metadata, and the new write file's data and name first.
        self.assertEqual(self.runner.jobs[calls:], ["fsync", "metadata"])
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 1, 0, 1, 32))

    def test_explicit_sync(self) -> None:
        queue = self.make()
        queue.put(message(0, b"ab"))
        d = queue.sync()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(os.path.getsize(self.file(0)), 32)
        # Only the data: the metadata follows Go's schedule (here the timer), off the caller's path.
        self.assertEqual(self.runner.jobs, ["fsync"])
        self.assertFalse(os.path.exists(self.meta()))
        self.clock.advance(2.0)
        self.assertEqual(self.runner.jobs, ["fsync", "metadata"])
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 0, 0, 0, 32))
        # Nothing new: a sync costs no thread round trip.
        self.assertIsNone(self.successResultOf(queue.sync()))
        self.assertEqual(self.runner.calls, 2)

    def test_sync_coalesces(self) -> None:
        runner = ManualRunner()
        queue = self.make(sync_runner=runner)
        queue.put(message(0, b"ab"))
        first = queue.sync()
        queue.put(message(1, b"ab"))
        second = queue.sync()
        third = queue.sync()
        self.assertEqual(len(runner.pending), 1)
        self.assertNoResult(first)
        runner.run()
        self.assertIsNone(self.successResultOf(first))
        # The two requests made meanwhile share one follow-up fsync.
        self.assertEqual(len(runner.pending), 1)
        self.assertNoResult(second)
        runner.run()
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(third))
        self.assertEqual(runner.pending, [])
        # A publisher's sync never writes the metadata.
        self.assertFalse(os.path.exists(self.meta()))

    def test_metadata_written_after_the_data_fsync_without_blocking_it(self) -> None:
        runner = ManualRunner()
        queue = self.make(sync_runner=runner)
        queue.put(message(0, b"ab"))
        self.clock.advance(2.0)
        runner.run()
        # The data is fsynced; the metadata write is queued, and a publisher's sync asked for
        # meanwhile does not wait for it.
        self.assertEqual(len(runner.pending), 1)
        queue.put(message(1, b"ab"))
        waiting = queue.sync()
        self.assertEqual(len(runner.pending), 2)
        self.assertNoResult(waiting)
        runner.run(1)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertFalse(os.path.exists(self.meta()))
        runner.run()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 0, 0, 0, 32))
        self.assertEqual(runner.pending, [])

    def test_sync_snapshots_metadata(self) -> None:
        runner = ManualRunner()
        queue = self.make(sync_runner=runner)
        queue.put(message(0, b"ab"))
        self.clock.advance(2.0)
        runner.run()
        queue.put(message(1, b"ab"))
        runner.run()
        # The metadata was taken when its write started; later puts are not in it.
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 0, 0, 0, 32))
        self.assertEqual(runner.pending, [])

    def test_close_is_synchronous(self) -> None:
        runner = ManualRunner()
        queue = self.make(sync_runner=runner)
        queue.put(message(0, b"ab"))
        self.clock.advance(2.0)
        runner.run()
        # A metadata write (one message) is pending; then a publisher's fsync is too.
        queue.put(message(1, b"ab"))
        waiting = queue.sync()
        self.assertEqual(len(runner.pending), 2)
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(2, 0, 0, 0, 64))
        self.assertEqual(os.path.getsize(self.file(0)), 64)
        # The older jobs finishing late do not overwrite the newer metadata.
        runner.run()
        runner.run()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(2, 0, 0, 0, 64))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([n for n in self.listing() if n.endswith(".tmp")], [])

    def test_empty_retires_running_sync(self) -> None:
        runner = ManualRunner()
        queue = self.make(sync_runner=runner)
        queue.put(message(0, b"ab"))
        d = queue.sync()
        queue.empty()
        runner.run()
        self.successResultOf(d)
        self.assertFalse(os.path.exists(self.meta()))

    def test_sync_failure(self) -> None:
        def failing(work: Callable[[], None]) -> Deferred[None]:
            return maybeDeferred(self.fail_sync)

        queue = self.make(sync_runner=failing)
        queue.put(message(0, b"ab"))
        failure = self.failureResultOf(queue.sync(), BackendError)
        self.assertEqual(str(failure.value), "disk on fire")
        self.assertEqual(self.errors, ["disk on fire"])
        # A failed fsync does not stop writing (as in Go, which only logs it).
        queue.put(message(1, b"ab"))
        self.assertEqual(len(self.drain(queue)), 2)

    def fail_sync(self) -> None:
        raise OSError("disk on fire")


class WriteErrorTests(QueueTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_data_path_replaced_by_a_file(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        queue.put(message(0, b"ab"))
        queue.put(message(1, b"ab"))
        self.clock.advance(0)
        moved = self.path + ".moved"
        os.rename(self.path, moved)
        self.write_bytes(self.path, b"not a directory")
        # The next record needs a new file: it cannot be created.
        self.assertRaises(BackendError, queue.put, message(2, b"ab"))
        self.assertTrue(self.errors and self.errors[-1] is not None)
        self.assertRaises(BackendError, queue.put, message(3, b"ab"))
        self.assertEqual(queue.depth(), 2)
        os.unlink(self.path)
        os.rename(moved, self.path)
        queue.put(message(4, b"ab"))
        self.clock.advance(0)
        self.assertIsNone(self.errors[-1])
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % n for n in (0, 1, 4)])
        queue = self.reopen(queue, max_bytes_per_file=64)
        self.assertEqual(queue.depth(), 0)
        self.assertEqual(queue.bad_file_count, 0)

    def test_disk_full_then_recovery(self) -> None:
        os.symlink("/dev/full", self.file(0))
        queue = self.make()
        queue.put(message(0, b"ab"))  # accepted into the buffer
        self.clock.advance(0)  # the write fails at the end of the turn
        self.assertEqual(len(self.errors), 1)
        self.assertIn("No space left on device", str(self.errors[0]))
        # The accepted record is still held; new ones are refused while the disk is full.
        e = self.assertRaises(BackendError, queue.put, message(1, b"ab"))
        self.assertIn("No space left on device", str(e))
        self.assertEqual(queue.depth(), 1)
        os.unlink(self.file(0))
        queue.put(message(2, b"ab"))
        self.assertIsNone(self.errors[-1])
        self.clock.advance(0)
        self.assertEqual(self.read_bytes(self.file(0)), self.expected(0) + self.expected(2))
        queue = self.reopen(queue)
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % 0, b"%016x" % 2])

    def test_disk_full_sync_fails(self) -> None:
        os.symlink("/dev/full", self.file(0))
        queue = self.make()
        queue.put(message(0, b"ab"))
        self.failureResultOf(queue.sync(), BackendError)
        self.assertEqual(queue.read().body, b"ab")  # type: ignore[union-attr]

    def test_partial_write(self) -> None:
        # RLIMIT_FSIZE makes the kernel write part of the buffer (ending mid-record), then fail
        # with EFBIG. The queue resumes 1 GiB into a sparse file, so that the limit stays far
        # above any other file this process writes meanwhile (trial's log).
        base = 1 << 30
        with open(self.file(0), "wb") as f:
            f.truncate(base)
        self.write_bytes(self.meta(), golden_metadata(0, 0, base, 0, base))
        queue = self.make(max_bytes_per_file=2 * base)
        for n in range(10):
            queue.put(message(n, b"ab"))
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (base + 100, hard))
        try:
            self.clock.advance(0)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        self.assertEqual(os.path.getsize(self.file(0)), base + 100)
        self.assertEqual(len(self.errors), 1)
        # The fourth record is split between the file and the buffer; the reader joins it.
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % n for n in range(10)])
        queue.put(message(10, b"ab"))
        self.assertIsNone(self.errors[-1])
        queue = self.reopen(queue, max_bytes_per_file=2 * base)
        with open(self.file(0), "rb") as f:
            f.seek(base)
            self.assertEqual(f.read(), b"".join(self.expected(n) for n in range(11)))
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % 10])

    def expected(self, n: int) -> bytes:
        m = message(n, b"ab")
        return golden_record(m.timestamp, m.attempts, m.id, m.body)


class StartupTests(QueueTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_torn_tail_garbage(self) -> None:
        queue = self.make()
        for n in range(3):
            queue.put(message(n, b"ab"))
        queue.close()
        with open(self.file(0), "ab") as f:
            f.write(b"\x00\x00\x00\x40partial")
        events = self.capture_logs()
        queue = self.make()
        self.assertIn("skipping to new file", formats(events))
        queue.put(message(9, b"new"))
        self.clock.advance(0)
        # The new record went to a new file; file 0 was not written over.
        self.assertEqual(os.path.getsize(self.file(0)), 96 + 11)
        self.assertEqual(os.path.getsize(self.file(1)), 33)
        got = self.drain(queue)
        self.assertEqual([m.id for m in got], [b"%016x" % n for n in (0, 1, 2, 9)])
        self.assertEqual(queue.bad_file_count, 1)
        self.assertTrue(os.path.exists(self.file(0) + ".bad"))
        self.assertEqual(queue.depth(), 0)

    def test_torn_tail_complete_record_beyond_metadata(self) -> None:
        # Go wrote a record, then crashed before the metadata caught up.
        queue = self.make()
        queue.put(message(0, b"ab"))
        queue.close()
        with open(self.file(0), "ab") as f:
            m = message(1, b"late")
            f.write(golden_record(m.timestamp, m.attempts, m.id, m.body))
        queue = self.make()
        queue.put(message(2, b"new"))
        self.assertEqual([m.body for m in self.drain(queue)], [b"ab", b"late", b"new"])
        self.assertEqual(queue.bad_file_count, 0)
        self.assertEqual(queue.depth(), 0)

    def test_later_file_with_data_is_not_written_over(self) -> None:
        queue = self.make(max_bytes_per_file=64)
        for n in range(2):
            queue.put(message(n, b"ab"))
        queue.close()
        # A stale metadata file from before the roll into file 1, and file 1 already has data.
        m = message(2, b"ab")
        self.write_bytes(self.file(1), golden_record(m.timestamp, m.attempts, m.id, m.body))
        self.write_bytes(self.meta(), golden_metadata(1, 0, 32, 0, 32))
        queue = self.make(max_bytes_per_file=64)
        queue.put(message(3, b"ab"))
        self.clock.advance(0)
        self.assertEqual(os.path.getsize(self.file(1)), 32)
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % n for n in (1, 2, 3)])
        self.assertEqual(queue.bad_file_count, 0)

    def test_rolling_into_a_file_with_data(self) -> None:
        # File 2 holds data the metadata does not know about (after a gap, so startup does not
        # see it): rolling into it must not clobber it.
        stray = message(50, b"stray")
        self.write_bytes(self.file(2), golden_record(stray.timestamp, stray.attempts, stray.id, stray.body))
        events = self.capture_logs()
        queue = self.make(max_bytes_per_file=64)
        for n in range(5):
            queue.put(message(n, b"ab"))
        self.clock.advance(0)
        self.assertIn("already holds", formats(events))
        self.assertEqual(os.path.getsize(self.file(2)), 35)
        self.assertEqual(os.path.getsize(self.file(3)), 32)
        # The reader salvages it in file order.
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % n for n in (0, 1, 2, 3, 50, 4)])

    def test_file_with_data_appears_while_caught_up(self) -> None:
        queue = self.make()
        self.assertIsNone(queue.read())  # caught up with the writer
        stray = message(50, b"stray")
        self.write_bytes(self.file(0), golden_record(stray.timestamp, stray.attempts, stray.id, stray.body))
        queue.put(message(1, b"mine"))
        self.assertEqual(os.path.getsize(self.file(0)), 35)
        self.assertEqual([m.id for m in self.drain(queue)], [stray.id, b"%016x" % 1])

    def test_next_file_with_data_at_startup(self) -> None:
        # A crash after a roll, before the metadata naming the new file was written.
        queue = self.make(max_bytes_per_file=64)
        for n in range(2):
            queue.put(message(n, b"ab"))
        queue.close()
        late = message(2, b"ab")
        self.write_bytes(self.file(1), golden_record(late.timestamp, late.attempts, late.id, late.body))
        queue = self.make(max_bytes_per_file=64)
        queue.put(message(3, b"ab"))
        self.clock.advance(0)
        self.assertEqual(os.path.getsize(self.file(1)), 32)
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % n for n in range(4)])
        self.assertEqual(queue.bad_file_count, 0)

    def test_unparsable_metadata(self) -> None:
        queue = self.make()
        queue.put(message(0, b"ab"))
        queue.close()
        self.write_bytes(self.meta(), b"garbage\n")
        events = self.capture_logs()
        queue = self.make()
        self.assertIn("failed to retrieveMetaData", formats(events))
        self.assertEqual(self.read_bytes(self.meta() + ".bad"), b"garbage\n")
        # A fresh start: the old file is read (salvaged), new writes go to a new file.
        queue.put(message(1, b"cd"))
        self.assertEqual([m.body for m in self.drain(queue)], [b"ab", b"cd"])
        self.assertEqual(queue.depth(), 0)

    def test_files_outside_the_metadata_range_are_left_alone(self) -> None:
        self.write_bytes(self.file(0), b"old data")
        self.write_bytes(self.file(7), b"stray")
        self.write_bytes(self.meta(), golden_metadata(0, 3, 0, 3, 0))
        queue = self.make()
        queue.put(message(0, b"ab"))
        self.assertEqual(len(self.drain(queue)), 1)
        queue.close()
        self.assertEqual(self.read_bytes(self.file(0)), b"old data")
        self.assertEqual(self.read_bytes(self.file(7)), b"stray")


class KeepUntilDoneTests(QueueTestMixin, SynchronousTestCase):
    """--durable: a message read but not done is read again after a restart."""

    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_unfinished_messages_come_back(self) -> None:
        queue = self.make(keep_until_done=True, max_bytes_per_file=64)
        for n in range(5):
            queue.put(message(n, b"ab"))
        got = self.drain(queue)
        self.assertEqual(queue.depth(), 0)
        queue.done(got[0])
        queue.done(got[2])  # out of order: 1 is still pending, so 1 and 2 come back
        # File 0 (messages 0 and 1) must stay while message 1 is unfinished.
        self.assertTrue(os.path.exists(self.file(0)))
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(4, 0, 32, 2, 32))
        queue = self.make(keep_until_done=True, max_bytes_per_file=64)
        self.assertEqual(queue.depth(), 4)
        again = self.drain(queue)
        self.assertEqual([m.id for m in again], [b"%016x" % n for n in (1, 2, 3, 4)])
        for m in again:
            queue.done(m)
        self.assertFalse(os.path.exists(self.file(0)))
        self.assertFalse(os.path.exists(self.file(1)))
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 2, 32, 2, 32))

    def test_done_ignores_foreign_and_stale_refs(self) -> None:
        queue = self.make(keep_until_done=True)
        queue.put(message(0, b"ab"))
        m = queue.read()
        assert m is not None
        queue.empty()
        queue.done(m)
        queue.done(message(5, b"never read"))
        plain = self.make("other")
        plain.put(message(1, b"x"))
        n = plain.read()
        assert n is not None
        self.assertIsNone(n.ref)
        plain.done(n)
        self.assertEqual(queue.depth(), 0)


class FifoPropertyTests(QueueTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()
        self.round = 0

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("put"), st.integers(0, 120)),
                st.tuples(st.just("read"), st.integers(1, 4)),
                st.tuples(st.just("turn"), st.just(0)),
                st.tuples(st.just("reopen"), st.just(0)),
            ),
            max_size=60,
        ),
        st.sampled_from([40, 64, 100, 333]),
        st.integers(1, 5),
    )
    def test_fifo_and_depth(self, ops: list[tuple[str, int]], max_bytes: int, sync_every: int) -> None:
        self.round += 1
        path = os.path.join(self.path, str(self.round))
        os.makedirs(path)
        self.addCleanup(shutil.rmtree, path, True)

        def make() -> DiskQueue:
            q = DiskQueue(
                NAME,
                path,
                max_bytes_per_file=max_bytes,
                max_msg_size=200,
                sync_every=sync_every,
                sync_timeout=1.0,
                clock=self.clock,
                sync_runner=self.runner,
            )
            self.addCleanup(q.close)
            return q

        queue = make()
        model: list[bytes] = []
        serial = 0
        for op, arg in ops:
            if op == "put":
                serial += 1
                m = message(serial, bytes([serial % 256]) * arg)
                queue.put(m)
                model.append(m.id)
            elif op == "read":
                for _ in range(arg):
                    got = queue.read()
                    if not model:
                        self.assertIsNone(got)
                        break
                    assert got is not None
                    self.assertEqual(got.id, model.pop(0))
            elif op == "turn":
                self.clock.advance(0.5)
            else:
                queue.close()
                queue = make()
            self.assertEqual(queue.depth(), len(model))
        self.assertEqual([m.id for m in self.drain(queue)], model)
        self.assertEqual(queue.depth(), 0)
        self.assertEqual(queue.bad_file_count, 0)
