"""
DiskQueue crash points: an acknowledged message (its ``sync()`` fired) survives a crash at any
moment, whatever the metadata file says.

A crash drops the queue object without closing it (what was buffered in memory is gone) and
reopens the directory. Two models of what the disk kept:

- a process crash (C{SIGKILL}): everything handed to the OS stays;
- a power loss: each data file keeps only what was fsynced, a file exists only if it existed
  when its directory was last fsynced, and the metadata file holds what it held then.

The fsyncs are observed by wrapping ``os.fsync``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._manual_runner import ManualRunner
from twisted_nsq.nsqd.diskqueue import DiskQueue, batched_close
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.persistence import immediate_sync_runner

NAME = "t1:ch1"
META = NAME + ".diskqueue.meta.dat"


def message(n: int) -> Message:
    return Message(b"%016x" % n, b"body-%06d" % n, 1_700_000_000_000_000_000 + n, 1)


class Disk:
    """Watches fsyncs in one directory and can reduce it to what a power loss would leave."""

    def __init__(self, path: str, real_fsync: Callable[[int], None]) -> None:
        self.path = path
        self._real_fsync = real_fsync
        # inode -> size at its last fsync; names present at the last directory fsync.
        self.synced_size: dict[int, int] = {}
        self.durable_names: set[str] = set()
        self.durable_meta: bytes | None = None
        self.dir_fsyncs = 0
        self.file_fsyncs = 0

    def fsync(self, fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            self.dir_fsyncs += 1
            self.durable_names = set(os.listdir(self.path))
            meta = os.path.join(self.path, META)
            self.durable_meta = self.read(meta) if os.path.exists(meta) else None
        else:
            self.file_fsyncs += 1
            self.synced_size[info.st_ino] = info.st_size
        self._real_fsync(fd)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def power_loss(self) -> None:
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if name == META:
                continue
            if name not in self.durable_names:
                os.unlink(full)
            elif name.endswith(".dat"):
                os.truncate(full, self.synced_size.get(os.stat(full).st_ino, 0))
        meta = os.path.join(self.path, META)
        if self.durable_meta is None:
            if os.path.exists(meta):
                os.unlink(meta)
        else:
            with open(meta, "wb") as f:
                f.write(self.durable_meta)


class CrashTestMixin:
    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]
    patch: Callable[..., Any]

    def setUpDisk(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(self.path)
        self.disk = Disk(self.path, os.fsync)
        self.patch(os, "fsync", self.disk.fsync)
        self.clock = Clock()
        self.runner = ManualRunner()

    def make(self, keep: bool = True, **overrides: Any) -> DiskQueue:
        options: dict[str, Any] = {
            "max_bytes_per_file": 1024 * 1024,
            "max_msg_size": 1024,
            "sync_every": 2500,
            "sync_timeout": 2.0,
            "clock": self.clock,
            "sync_runner": self.runner,
            "keep_until_done": keep,
        }
        options.update(overrides)
        return DiskQueue(NAME, self.path, **options)

    def crash(self, queue: DiskQueue, power_loss: bool) -> None:
        """Drop the queue as a crash would: its buffer and pending jobs are lost, its files stay."""
        for fd in queue._open_write_fds():
            os.close(fd)
        queue._wfd = None
        queue._handoff = []
        queue._wbuf.clear()
        queue._stop()
        for work, _ in self.runner.pending:
            closure = getattr(work, "args", ())
            if closure and isinstance(closure[0], list):
                for fd in closure[0]:
                    os.close(fd)
        self.runner.pending.clear()
        if power_loss:
            self.disk.power_loss()

    def recover(self, keep: bool = True, **overrides: Any) -> list[bytes]:
        """Reopen the directory, read and finish everything it holds, close cleanly."""
        queue = DiskQueue(
            NAME,
            self.path,
            max_bytes_per_file=overrides.get("max_bytes_per_file", 1024 * 1024),
            max_msg_size=1024,
            sync_every=2500,
            sync_timeout=2.0,
            clock=Clock(),
            sync_runner=immediate_sync_runner,
            keep_until_done=keep,
        )
        ids = []
        while (m := queue.read()) is not None:
            ids.append(m.id)
            queue.done(m)
        queue.close()
        return ids

    def put_and_sync(self, queue: DiskQueue, numbers: range) -> Deferred[None]:
        for n in numbers:
            queue.put(message(n))
        return queue.sync()

    def tear_tail(self) -> str:
        """
        Leave what a power loss mid-write leaves at the end of the newest data file: a record's
        head and part of its body. Returns the file's path.
        """
        torn = os.path.join(self.path, self.data_files()[-1])
        with open(torn, "ab") as f:
            f.write(b"\x00\x00\x00\x25" + b"\x00" * 12)
        return torn

    def ids(self, numbers: range) -> list[bytes]:
        return [message(n).id for n in numbers]

    def data_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if n.endswith(".dat") and n != META)


class CrashPointTests(CrashTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpDisk()

    def commit(self, queue: DiskQueue, numbers: range) -> None:
        """Put C{numbers} and acknowledge them: the data fsync runs and the sync fires."""
        d = self.put_and_sync(queue, numbers)
        self.runner.run()
        self.successResultOf(d)

    def commit_all(self, queue: DiskQueue, numbers: range) -> None:
        """Put C{numbers}, let the timer's sync come, and run every job it brings until it fires."""
        d = self.put_and_sync(queue, numbers)
        self.clock.advance(2.0)
        while self.runner.pending:
            self.runner.run()
        self.successResultOf(d)

    def test_sync_is_one_data_fsync(self) -> None:
        queue = self.make()
        d = self.put_and_sync(queue, range(3))
        # A new file: the data and the directory, in one job; no metadata.
        self.assertEqual(self.runner.kinds(), ["_fsync_work"])
        self.runner.run()
        self.successResultOf(d)
        self.assertEqual((self.disk.file_fsyncs, self.disk.dir_fsyncs), (1, 1))
        # The same file again: the data alone.
        self.commit(queue, range(3, 6))
        self.assertEqual((self.disk.file_fsyncs, self.disk.dir_fsyncs), (2, 1))
        self.assertFalse(os.path.exists(os.path.join(self.path, META)))
        queue.close()

    def test_after_data_fsync_before_metadata(self) -> None:
        for power_loss in (False, True):
            with self.subTest(power_loss=power_loss):
                self.setUpDisk()
                queue = self.make()
                self.commit(queue, range(5))
                # Unacknowledged: may be lost, or not.
                queue.put(message(99))
                self.clock.advance(0)
                self.crash(queue, power_loss)
                recovered = self.recover()
                self.assertEqual(recovered[:5], self.ids(range(5)))

    def test_after_metadata_then_more_data(self) -> None:
        queue = self.make()
        self.put_and_sync(queue, range(3))
        self.runner.run()
        # The timer's sync writes the metadata (3 messages)...
        self.clock.advance(2.0)
        while self.runner.pending:
            self.runner.run()
        self.commit(queue, range(3, 6))
        # ...and then 3 more are acknowledged past its write position.
        self.crash(queue, power_loss=True)
        self.assertEqual(self.recover(), self.ids(range(6)))

    def test_after_roll_before_metadata(self) -> None:
        for power_loss in (False, True):
            with self.subTest(power_loss=power_loss):
                self.setUpDisk()
                # Each record is 4 + 26 + 11 = 41 bytes: 3 per file.
                queue = self.make(max_bytes_per_file=130)
                d = self.put_and_sync(queue, range(7))
                # The roll asked for a sync of its own; the publisher's fsync follows it. Run
                # only the data fsyncs, never a metadata write.
                while "_fsync_work" in self.runner.kinds():
                    self.runner.run(self.runner.kinds().index("_fsync_work"))
                self.successResultOf(d)
                self.assertEqual(len(self.data_files()), 3)
                self.assertFalse(os.path.exists(os.path.join(self.path, META)))
                self.assertIn(NAME + ".diskqueue.000002.dat", self.disk.durable_names)
                self.crash(queue, power_loss)
                self.assertEqual(self.recover(), self.ids(range(7)))

    def test_stale_read_position_redelivers_unfinished(self) -> None:
        queue = self.make(max_bytes_per_file=130)
        d = self.put_and_sync(queue, range(7))
        while self.runner.pending:
            self.runner.run()
        self.successResultOf(d)
        read = [queue.read() for _ in range(5)]
        # Finished out of order: 0, 1, 3; 2 is the oldest unfinished.
        for m in (read[0], read[1], read[3]):
            assert m is not None
            queue.done(m)
        self.clock.advance(2.0)
        while self.runner.pending:
            self.runner.run()
        self.assertEqual(self.disk.read(os.path.join(self.path, META)).split(b"\n")[1], b"0,82")
        # Later progress is not in the metadata: 2 is finished, so file 0 is left behind and
        # deleted, and the oldest unfinished is 4, in file 1.
        queue.done(read[2])  # type: ignore[arg-type]
        self.assertEqual(self.data_files(), [f"{NAME}.diskqueue.{n:06d}.dat" for n in (1, 2)])
        self.crash(queue, power_loss=True)
        recovered = self.recover()
        # At least once: the unfinished ones again, and 3 (finished) too; nothing lost.
        self.assertEqual(recovered, self.ids(range(3, 7)))

    def test_fully_read_files_deleted_before_metadata(self) -> None:
        queue = self.make(max_bytes_per_file=130)
        self.commit_all(queue, range(7))
        meta = self.disk.read(os.path.join(self.path, META))
        for _ in range(6):
            m = queue.read()
            assert m is not None
            queue.done(m)
        # Files 0 and 1 are finished and gone; the metadata still says file 0.
        self.assertEqual(self.data_files(), [NAME + ".diskqueue.000002.dat"])
        self.assertEqual(self.disk.read(os.path.join(self.path, META)), meta)
        self.crash(queue, power_loss=False)
        self.assertEqual(self.recover(), self.ids(range(6, 7)))

    def test_torn_tail_after_crash(self) -> None:
        queue = self.make()
        self.commit(queue, range(4))
        self.crash(queue, power_loss=True)
        # A record that was being written when the power went: its head and part of its body.
        self.tear_tail()
        self.assertEqual(self.recover(), self.ids(range(4)))
        # Writing after the salvage never overwrites the salvaged file.
        queue = self.make(sync_runner=immediate_sync_runner)
        self.assertEqual(queue.depth(), 0)
        queue.put(message(10))
        queue.close()
        self.assertEqual(self.recover(), self.ids(range(10, 11)))

    def test_torn_tail_then_second_crash_before_finishing(self) -> None:
        queue = self.make()
        self.commit(queue, range(4))
        self.crash(queue, power_loss=True)
        torn = self.tear_tail()
        # Salvaged and handed out, not finished; the metadata now points into the torn file.
        queue = self.make(sync_runner=immediate_sync_runner)
        salvaged = [queue.read() for _ in range(5)]
        self.assertEqual([m.id for m in salvaged if m is not None], self.ids(range(4)))
        self.assertEqual(queue.bad_file_count, 1)
        self.clock.advance(2.0)
        # The torn file stays until its messages are finished.
        self.assertTrue(os.path.exists(torn))
        self.crash(queue, power_loss=False)
        self.assertEqual(self.recover(), self.ids(range(4)))
        # Finished now: it was set aside as .bad, as Go would have at once.
        self.assertFalse(os.path.exists(torn))
        self.assertTrue(os.path.exists(torn + ".bad"))

    def test_after_empty_the_first_commit_waits_for_the_metadata(self) -> None:
        queue = self.make(max_bytes_per_file=130)
        self.commit_all(queue, range(7))
        # Files 0 to 2 and the metadata go; writing moves to file 3, which a restart without
        # metadata would never look for.
        queue.empty()
        d = self.put_and_sync(queue, range(10, 12))
        self.runner.run()
        self.assertEqual(self.runner.kinds(), ["_write_metadata"])
        self.assertNoResult(d)
        self.runner.run()
        self.successResultOf(d)
        # From then on, commits are data fsyncs again.
        self.commit(queue, range(12, 13))
        self.crash(queue, power_loss=True)
        self.assertEqual(self.recover(), self.ids(range(10, 13)))

    def test_crash_during_metadata_write(self) -> None:
        queue = self.make()
        self.commit(queue, range(3))
        # The metadata's temporary file is written and fsynced, not yet renamed.
        tmp = os.path.join(self.path, META + ".123.tmp")
        with open(tmp, "wb") as f:
            f.write(b"3\n0,0\n0,123\n")
        self.crash(queue, power_loss=True)
        self.assertEqual(self.recover(), self.ids(range(3)))

    def test_clean_close_needs_no_fsync_when_nothing_changed(self) -> None:
        queue = self.make(sync_runner=immediate_sync_runner)
        self.put_and_sync(queue, range(3))
        queue.close()
        fsyncs = (self.disk.file_fsyncs, self.disk.dir_fsyncs)
        queue = self.make(sync_runner=immediate_sync_runner)
        queue.close()
        self.assertEqual((self.disk.file_fsyncs, self.disk.dir_fsyncs), fsyncs)
        # A new, never used queue writes its metadata once, as Go does.
        os.unlink(os.path.join(self.path, META))
        queue = self.make(sync_runner=immediate_sync_runner)
        queue.close()
        self.assertTrue(os.path.exists(os.path.join(self.path, META)))


class BatchedCloseTests(CrashTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.setUpDisk()

    def named(self, name: str) -> DiskQueue:
        return DiskQueue(
            name,
            self.path,
            max_bytes_per_file=1024 * 1024,
            max_msg_size=1024,
            sync_every=2500,
            sync_timeout=2.0,
            clock=self.clock,
            sync_runner=immediate_sync_runner,
        )

    def test_batch_is_durable_when_the_block_ends(self) -> None:
        queues = [self.named(f"t{n}") for n in range(10)]
        for n, queue in enumerate(queues[:6]):
            queue.put(message(n))
        for queue in queues[:3]:
            queue.sync()
        fsyncs = (self.disk.file_fsyncs, self.disk.dir_fsyncs)
        with batched_close(threads=4):
            for queue in queues:
                queue.close()
            # Nothing is done before the block ends.
            self.assertEqual((self.disk.file_fsyncs, self.disk.dir_fsyncs), fsyncs)
        # 3 write files still to fsync, 10 metadata files, and one directory fsync for all.
        self.assertEqual(self.disk.file_fsyncs - fsyncs[0], 3 + 10)
        self.assertEqual(self.disk.dir_fsyncs - fsyncs[1], 1)
        for n in range(10):
            meta = os.path.join(self.path, f"t{n}.diskqueue.meta.dat")
            self.assertIn(meta.rsplit("/", 1)[1], self.disk.durable_names)
            self.assertEqual(self.disk.read(meta), b"1\n0,0\n0,41\n" if n < 6 else b"0\n0,0\n0,0\n")
        # Closed again unchanged: nothing at all to do.
        fsyncs = (self.disk.file_fsyncs, self.disk.dir_fsyncs)
        with batched_close():
            for n in range(10):
                self.named(f"t{n}").close()
        self.assertEqual((self.disk.file_fsyncs, self.disk.dir_fsyncs), fsyncs)

    def test_batch_failure_is_reported_per_queue(self) -> None:
        errors: list[str | None] = []
        good = self.named("good")
        bad = self.named("bad")
        bad._on_error = errors.append
        good.put(message(0))
        bad.put(message(1))
        real = self.disk.fsync
        bad_ino = os.stat(os.path.join(self.path, "bad.diskqueue.000000.dat")).st_ino

        def failing(fd: int) -> None:
            if os.fstat(fd).st_ino == bad_ino:
                raise OSError("disk on fire")
            real(fd)

        self.patch(os, "fsync", failing)
        with batched_close(threads=2):
            good.close()
            bad.close()
        self.assertEqual(errors, ["disk on fire"])
        self.assertTrue(os.path.exists(os.path.join(self.path, "good.diskqueue.meta.dat")))
        # The metadata of a queue whose data could not be fsynced is not written.
        self.assertFalse(os.path.exists(os.path.join(self.path, "bad.diskqueue.meta.dat")))


# One step of a random run: what to do and a number that picks among the possibilities.
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "put",
                "put",
                "put",
                "sync",
                "sync",
                "read",
                "read",
                "done",
                "run",
                "run",
                "run",
                "tick",
                "empty",
            ]
        ),
        st.integers(0, 9),
    ),
    max_size=60,
)


class CrashPropertyTests(CrashTestMixin, SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        steps=_STEPS,
        keep=st.booleans(),
        power_loss=st.booleans(),
        torn=st.booleans(),
        sync_every=st.integers(2, 8),
        tail=st.integers(0, 19),
        second=st.integers(0, 12),
    )
    def test_acknowledged_messages_survive_any_crash(
        self,
        steps: list[tuple[str, int]],
        keep: bool,
        power_loss: bool,
        torn: bool,
        sync_every: int,
        tail: int,
        second: int,
    ) -> None:
        """
        Random puts, publisher syncs, reads, FINs, jobs finishing in any order and timers,
        then a crash (and with ``keep_until_done`` a second crash after reading and finishing
        some of what was salvaged): every acknowledged message not yet finished (or, without
        ``keep_until_done``, not yet read) is read again after the restart.
        """
        self.setUpDisk()
        queue = self.make(keep=keep, max_bytes_per_file=130, sync_every=sync_every)
        written = 0
        acked: set[bytes] = set()
        gone: set[bytes] = set()
        outstanding: list[Message] = []

        def acknowledge(ids: list[bytes]) -> Callable[[None], None]:
            return lambda _: acked.update(ids)

        for action, pick in steps:
            if action == "put":
                queue.put(message(written))
                written += 1
            elif action == "sync":
                queue.sync().addCallback(acknowledge(self.ids(range(written))))
            elif action == "read":
                m = queue.read()
                if m is not None:
                    if keep:
                        outstanding.append(m)
                    else:
                        gone.add(m.id)
            elif action == "done" and outstanding:
                m = outstanding.pop(pick % len(outstanding))
                queue.done(m)
                gone.add(m.id)
            elif action == "run" and self.runner.pending:
                self.runner.run(pick % len(self.runner.pending))
            elif action == "tick":
                self.clock.advance(pick / 4)
            elif action == "empty" and pick == 0:
                # An operator's /channel/empty: everything so far is meant to go.
                queue.empty()
                gone.update(self.ids(range(written)))
                outstanding.clear()
        self.crash(queue, power_loss)
        if torn and self.data_files():
            with open(os.path.join(self.path, self.data_files()[-1]), "ab") as f:
                f.write(b"\x00\x00\x00\x30" + b"\x01" * tail)
        if keep:
            # A second life: read some of what was salvaged, finish some of that, let the
            # metadata be written, and crash again.
            queue = self.make(keep=True, max_bytes_per_file=130, sync_runner=immediate_sync_runner)
            for n in range(second):
                m = queue.read()
                if m is not None and n % 2:
                    queue.done(m)
                    gone.add(m.id)
            self.clock.advance(2.0)
            self.crash(queue, power_loss)
        recovered = set(self.recover(keep=keep, max_bytes_per_file=130))
        self.assertEqual(acked - gone - recovered, set())
