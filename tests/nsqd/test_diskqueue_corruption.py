"""
DiskQueue over damaged files and stale metadata: never crash, never loop, never write over data,
and deliver every intact record that comes before the damage.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd.test_diskqueue import NAME, QueueTestMixin, formats, golden_metadata, golden_record, message
from twisted_nsq.nsqd.diskqueue import DiskQueue
from twisted_nsq.nsqd.message import Message

MAX_MSG = 100
MAX_BYTES = 150


class UsableMixin(QueueTestMixin):
    assertIsNone: Callable[..., None]
    assertEqual: Callable[..., None]

    def assert_usable(self, queue: DiskQueue) -> None:
        """After whatever happened, the queue is empty and works as a FIFO again."""
        self.assertIsNone(queue.read())
        self.assertEqual(queue.depth(), 0)
        fresh = [message(1000 + n, b"fresh") for n in range(3)]
        for m in fresh:
            queue.put(m)
        self.assertEqual(queue.depth(), 3)
        self.assertEqual([m.id for m in self.drain(queue)], [m.id for m in fresh])
        self.assertEqual(queue.depth(), 0)


class DamageTests(UsableMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def fill(self, count: int, max_bytes: int = 64) -> list[bytes]:
        """``count`` 32-byte records (two per 64-byte file), then a clean close."""
        queue = self.make(max_bytes_per_file=max_bytes, max_msg_size=MAX_MSG)
        ids = []
        for n in range(count):
            m = message(n, b"ab")
            queue.put(m)
            ids.append(m.id)
        queue.close()
        return ids

    def reopen_queue(self, max_bytes: int = 64) -> DiskQueue:
        return self.make(max_bytes_per_file=max_bytes, max_msg_size=MAX_MSG)

    def patch(self, num: int, offset: int, data: bytes) -> None:
        with open(self.file(num), "r+b") as f:
            f.seek(offset)
            f.write(data)

    def truncate(self, num: int, size: int) -> None:
        with open(self.file(num), "r+b") as f:
            f.truncate(size)

    def test_truncated_mid_record_in_completed_file(self) -> None:
        ids = self.fill(5)
        self.truncate(0, 50)
        events = self.capture_logs()
        queue = self.reopen_queue()
        got = [m.id for m in self.drain(queue)]
        self.assertEqual(got, [ids[0], *ids[2:]])
        self.assertEqual(queue.bad_file_count, 1)
        self.assertTrue(os.path.exists(self.file(0) + ".bad"))
        self.assertIn("data loss", formats(events))
        self.assert_usable(queue)

    def test_truncated_mid_record_in_write_file(self) -> None:
        ids = self.fill(3, max_bytes=1000)
        self.truncate(0, 80)
        queue = self.reopen_queue(max_bytes=1000)
        queue.put(message(7, b"new"))
        self.clock.advance(0)
        # The damaged file is not appended to: the new record starts file 1.
        self.assertEqual(os.path.getsize(self.file(0)), 80)
        self.assertEqual(os.path.getsize(self.file(1)), 33)
        self.assertEqual([m.id for m in self.drain(queue)], [ids[0], ids[1], b"%016x" % 7])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_flipped_high_bit_in_length(self) -> None:
        ids = self.fill(5)
        self.patch(0, 32, b"\x80")  # the second record's size becomes negative
        queue = self.reopen_queue()
        self.assertEqual([m.id for m in self.drain(queue)], [ids[0], *ids[2:]])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_length_past_the_end_of_the_write_file(self) -> None:
        ids = self.fill(5)
        self.patch(2, 3, b"\x64")  # the fifth record claims 100 bytes (valid), the file holds 28
        queue = self.reopen_queue()
        self.assertEqual([m.id for m in self.drain(queue)], ids[:4])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_zero_length(self) -> None:
        ids = self.fill(5)
        self.patch(1, 32, struct.pack(">i", 0))
        queue = self.reopen_queue()
        self.assertEqual([m.id for m in self.drain(queue)], ids[:3] + ids[4:])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_oversize_length(self) -> None:
        ids = self.fill(5)
        self.patch(1, 0, struct.pack(">i", MAX_MSG + 27))
        queue = self.reopen_queue()
        self.assertEqual([m.id for m in self.drain(queue)], ids[:2] + ids[4:])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_largest_valid_length_is_accepted(self) -> None:
        queue = self.make(max_msg_size=MAX_MSG)
        queue.put(message(0, b"m" * MAX_MSG))
        queue.put(message(1, b""))
        self.assertEqual([len(m.body) for m in self.drain(queue)], [MAX_MSG, 0])
        self.assertEqual(queue.bad_file_count, 0)

    def test_damage_in_write_file(self) -> None:
        ids = self.fill(3, max_bytes=1000)
        self.patch(0, 64, b"\xff\xff")
        events = self.capture_logs()
        queue = self.reopen_queue(max_bytes=1000)
        self.assertEqual([m.id for m in self.drain(queue)], ids[:2])
        self.assertEqual(queue.bad_file_count, 1)
        self.assertIn("jump to next file and saving bad file", formats(events))
        # Writing moved on too, so nothing new lands in the renamed file.
        queue.put(message(8, b"after"))
        self.assertEqual(queue.read().body, b"after")  # type: ignore[union-attr]
        self.assertEqual(os.path.getsize(self.file(0) + ".bad"), 96)
        self.assert_usable(queue)

    def test_damage_in_write_file_while_running(self) -> None:
        queue = self.make(max_bytes_per_file=1000, max_msg_size=MAX_MSG)
        for n in range(3):
            queue.put(message(n, b"ab"))
        self.clock.advance(0)
        self.patch(0, 32, struct.pack(">i", 5))
        queue.put(message(3, b"ab"))  # still buffered when the reader finds the damage
        self.assertEqual([m.id for m in self.drain(queue)], [b"%016x" % 0])
        self.assertEqual(queue.bad_file_count, 1)
        # As in Go, the buffered record was written to the file that is now .bad.
        self.assertEqual(os.path.getsize(self.file(0) + ".bad"), 128)
        self.assert_usable(queue)
        queue = self.reopen(queue, max_bytes_per_file=1000, max_msg_size=MAX_MSG)
        self.assertEqual(queue.depth(), 0)

    def test_missing_file_in_the_middle(self) -> None:
        ids = self.fill(6)
        os.unlink(self.file(1))
        events = self.capture_logs()
        queue = self.reopen_queue()
        self.assertEqual([m.id for m in self.drain(queue)], ids[:2] + ids[4:])
        self.assertIn("is missing", formats(events))
        self.assertEqual(queue.bad_file_count, 0)
        self.assert_usable(queue)

    def test_huge_gap_in_file_numbers(self) -> None:
        m = message(0, b"ab")
        self.write_bytes(self.file(0), golden_record(m.timestamp, m.attempts, m.id, m.body))
        self.write_bytes(self.meta(), golden_metadata(1, 0, 0, 5_000_000, 0))
        queue = self.reopen_queue()
        self.assertEqual([x.id for x in self.drain(queue)], [m.id])
        self.assert_usable(queue)
        queue.empty()
        self.assert_usable(queue)

    def test_empty_over_huge_gap(self) -> None:
        m = message(0, b"ab")
        self.write_bytes(self.file(0), golden_record(m.timestamp, m.attempts, m.id, m.body))
        self.write_bytes(self.file(3), b"stray")
        self.write_bytes(self.meta(), golden_metadata(1, 0, 0, 5_000_000, 0))
        queue = self.reopen_queue()
        queue.empty()
        self.assertEqual(self.listing(), [])
        self.assert_usable(queue)
        # Three 35-byte records in 64-byte files, from the file after the old write file on.
        self.assertTrue(os.path.exists(self.file(5_000_003)))

    def test_huge_gap_with_missing_first_file(self) -> None:
        self.write_bytes(self.meta(), golden_metadata(3, 2, 0, 9_000_000, 0))
        queue = self.reopen_queue()
        self.assertIsNone(queue.read())
        self.assertEqual(queue.depth(), 0)
        self.assert_usable(queue)


class StaleMetadataTests(UsableMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpQueueDir()

    def records(self, *nums: int) -> bytes:
        out: list[bytes] = []
        for n in nums:
            m = message(n, b"ab")
            out.append(golden_record(m.timestamp, m.attempts, m.id, m.body))
        return b"".join(out)

    def reopen_queue(self) -> DiskQueue:
        return self.make(max_bytes_per_file=64, max_msg_size=MAX_MSG)

    def ids(self, messages: list[Message]) -> list[bytes]:
        return [m.id for m in messages]

    def test_read_pos_beyond_completed_file(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.file(1), self.records(2))
        self.write_bytes(self.meta(), golden_metadata(3, 0, 100, 1, 32))
        queue = self.reopen_queue()
        self.assertEqual(self.ids(self.drain(queue)), [b"%016x" % 2])
        self.assertEqual(queue.bad_file_count, 1)
        self.assert_usable(queue)

    def test_read_pos_beyond_write_pos(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(0, 0, 200, 0, 64))
        events = self.capture_logs()
        queue = self.reopen_queue()
        self.assertIn("skipping to next writeFileNum", formats(events))
        self.assertIsNone(queue.read())
        self.assert_usable(queue)
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 3, 35, 3, 35))

    def test_read_file_beyond_write_file(self) -> None:
        self.write_bytes(self.file(2), self.records(0))
        self.write_bytes(self.meta(), golden_metadata(4, 5, 0, 2, 32))
        queue = self.reopen_queue()
        self.assertIsNone(queue.read())
        self.assertEqual(queue.depth(), 0)
        queue.put(message(9, b"x"))
        queue.close()
        # Both positions start over after the highest file number either one named.
        self.assertTrue(os.path.exists(self.file(6)))
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(1, 6, 0, 6, 31))

    def test_write_pos_beyond_file_size(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(2, 0, 0, 0, 500))
        queue = self.reopen_queue()
        queue.put(message(2, b"ab"))
        self.clock.advance(0)
        # No hole: the new record went to file 1.
        self.assertEqual(os.path.getsize(self.file(0)), 64)
        self.assertEqual(self.ids(self.drain(queue)), [b"%016x" % n for n in range(3)])
        self.assertEqual(queue.bad_file_count, 0)

    def test_write_file_missing(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(3, 0, 0, 1, 32))
        queue = self.reopen_queue()
        queue.put(message(2, b"ab"))
        self.assertEqual(self.ids(self.drain(queue)), [b"%016x" % n for n in range(3)])
        self.assertEqual(queue.depth(), 0)

    def test_depth_too_high(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(10, 0, 0, 0, 64))
        events = self.capture_logs()
        queue = self.reopen_queue()
        self.assertEqual(queue.depth(), 10)
        self.assertEqual(len(self.drain(queue)), 2)
        self.assertEqual(queue.depth(), 0)
        self.assertIn("positive depth at tail ({depth}), data loss", formats(events))
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 0, 64, 0, 64))

    def test_depth_too_low(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(-3, 0, 0, 0, 64))
        events = self.capture_logs()
        queue = self.reopen_queue()
        self.assertEqual(queue.depth(), 0)
        self.assertEqual(len(self.drain(queue)), 2)  # delivered although depth says 0
        self.assertIn("metadata corruption", formats(events))
        queue.close()
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 0, 64, 0, 64))

    def test_wrong_depth_at_tail_on_startup(self) -> None:
        self.write_bytes(self.file(0), self.records(0, 1))
        self.write_bytes(self.meta(), golden_metadata(4, 0, 64, 0, 64))
        queue = self.reopen_queue()
        self.assertEqual(queue.depth(), 0)
        self.assertEqual(self.read_bytes(self.meta()), golden_metadata(0, 0, 64, 0, 64))

    def test_metadata_shapes(self) -> None:
        for text in (b"", b"1\n2\n", b"x\n0,0\n0,0\n", b"1\n-1,0\n0,0\n", b"\xff" * 10000):
            path = os.path.join(self.path, "q")
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            with open(os.path.join(path, f"{NAME}.diskqueue.meta.dat"), "wb") as f:
                f.write(text)
            queue = DiskQueue(
                NAME,
                path,
                max_bytes_per_file=64,
                max_msg_size=MAX_MSG,
                sync_every=1,
                sync_timeout=1.0,
                clock=self.clock,
                sync_runner=self.runner,
            )
            self.assertEqual(queue.depth(), 0)
            queue.put(message(1, b"ok"))
            self.assertEqual(self.ids(self.drain(queue)), [b"%016x" % 1])
            queue.close()
            self.assertTrue(os.path.exists(os.path.join(path, f"{NAME}.diskqueue.meta.dat.bad")))


class RandomDamageTests(QueueTestMixin, SynchronousTestCase):
    """Whatever is damaged, the intact records in front of the damage all come out, in order."""

    def setUp(self) -> None:
        self.setUpQueueDir()
        self.round = 0

    def fresh_dir(self) -> str:
        self.round += 1
        path = os.path.join(self.path, str(self.round))
        os.makedirs(path)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def queue(self, path: str) -> DiskQueue:
        q = DiskQueue(
            NAME,
            path,
            max_bytes_per_file=MAX_BYTES,
            max_msg_size=MAX_MSG,
            sync_every=1000,
            sync_timeout=1.0,
            clock=self.clock,
            sync_runner=self.runner,
        )
        self.addCleanup(q.close)
        return q

    def bounded_drain(self, queue: DiskQueue) -> list[Message]:
        out: list[Message] = []
        for _ in range(1000):
            m = queue.read()
            if m is None:
                return out
            out.append(m)
        raise AssertionError("read() never ran dry")

    def check_usable(self, queue: DiskQueue) -> None:
        self.assertEqual(queue.depth(), 0)
        fresh = [message(5000 + n, b"fresh") for n in range(3)]
        for m in fresh:
            queue.put(m)
        self.assertEqual([m.id for m in self.bounded_drain(queue)], [m.id for m in fresh])

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(st.integers(0, 60), min_size=1, max_size=25),
        st.integers(0, 10_000),
        st.one_of(
            st.tuples(st.just("truncate"), st.integers(0, 10_000)),
            st.tuples(st.just("overwrite"), st.binary(min_size=1, max_size=8)),
        ),
    )
    def test_random_damage(self, sizes: list[int], where: int, damage: tuple[str, object]) -> None:
        path = self.fresh_dir()
        queue = self.queue(path)
        # Where every record lands (file number, offset, size, id), by go-diskqueue's roll rule.
        layout: list[tuple[int, int, int, bytes]] = []
        file_num = pos = 0
        for n, size in enumerate(sizes):
            m = message(n, bytes([n % 256]) * size)
            queue.put(m)
            total = 4 + 26 + size
            if pos > 0 and pos + total > MAX_BYTES:
                file_num += 1
                pos = 0
            layout.append((file_num, pos, total, m.id))
            pos += total
        queue.close()
        files = sorted({f for f, _, _, _ in layout})
        target = files[where % len(files)]
        file_path = os.path.join(path, f"{NAME}.diskqueue.{target:06d}.dat")
        file_size = os.path.getsize(file_path)
        kind, arg = damage
        with open(file_path, "r+b") as f:
            if kind == "truncate":
                assert isinstance(arg, int)
                damaged_at = arg % file_size
                f.truncate(damaged_at)
            else:
                assert isinstance(arg, bytes)
                damaged_at = where % file_size
                f.seek(damaged_at)
                original = f.read(len(arg))
                f.seek(damaged_at)
                f.write(arg)
                if original == arg[: len(original)] and damaged_at + len(arg) <= file_size:
                    damaged_at = file_size  # nothing actually changed
        must = [
            record_id
            for file_num, offset, size, record_id in layout
            if file_num != target or offset + size <= damaged_at
        ]
        queue = self.queue(path)
        delivered = [m.id for m in self.bounded_drain(queue)]
        # Every intact record, in order; damaged ones may come out as garbage or not at all.
        remaining = iter(delivered)
        missing = [record_id for record_id in must if record_id not in remaining]
        self.assertEqual(missing, [])
        self.check_usable(queue)

    @settings(max_examples=150, deadline=None)
    @given(
        st.integers(-5, 20),
        st.integers(0, 4),
        st.integers(0, 200),
        st.integers(0, 4),
        st.integers(0, 200),
    )
    def test_random_metadata(self, depth: int, rfn: int, rpos: int, wfn: int, wpos: int) -> None:
        path = self.fresh_dir()
        queue = self.queue(path)
        for n in range(12):
            queue.put(message(n, b"m" * (n * 3)))
        queue.close()
        with open(os.path.join(path, f"{NAME}.diskqueue.meta.dat"), "wb") as f:
            f.write(golden_metadata(depth, rfn, rpos, wfn, wpos))
        before = {}
        for name in os.listdir(path):
            with open(os.path.join(path, name), "rb") as f:
                before[name] = f.read()
        queue = self.queue(path)
        self.bounded_drain(queue)
        self.check_usable(queue)
        queue.close()
        # No data file was written over: each one that is left starts as it did.
        for name, content in before.items():
            current = os.path.join(path, name)
            if "meta" not in name and os.path.exists(current):
                with open(current, "rb") as f:
                    self.assertEqual(f.read(len(content)), content)


class CrashDepthTests(QueueTestMixin, SynchronousTestCase):
    """A crash between syncs leaves data newer than the metadata: depth must count it."""

    def setUp(self) -> None:
        self.setUpQueueDir()

    def test_unsynced_tail_is_counted_and_delivered(self) -> None:
        queue = self.make()
        for n in range(10):
            queue.put(message(n, b"synced"))
        queue.sync()
        for n in range(10, 25):
            queue.put(message(n, b"unsynced"))
        queue.flush()
        # "Crash": the process dies with the data in the files but stale metadata.
        crashed = self.make(sync_runner=self.runner)
        self.assertEqual(crashed.depth(), 25)
        self.assertEqual(len(self.drain(crashed)), 25)
        self.assertEqual(crashed.depth(), 0)
