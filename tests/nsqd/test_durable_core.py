"""--durable in the core and protocol: OK after fsync (group commit), replies in order, FIN frees."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_nsq.nsqd.backend import IBackendQueue
from twisted_nsq.nsqd.diskqueue import DiskQueue
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import make_backend_factory, restore
from twisted_nsq.testing import LoopbackClient, mpub_body


@implementer(IBackendQueue)
class RecordingBackend:
    """Holds messages like a durable disk queue would; syncs complete when the test says."""

    unbounded = True

    def __init__(self, name: str, log: list[tuple[str, str, Any]]) -> None:
        self.name = name
        self.queue: deque[Message] = deque()
        self.log = log
        self.syncs: list[Deferred[None]] = []
        self.refs = 0

    def put(self, message: Message) -> None:
        copy = message.copy()
        copy.attempts = message.attempts
        self.queue.append(copy)
        self.log.append(("put", self.name, message.body))

    def read(self) -> Message | None:
        if not self.queue:
            return None
        message = self.queue.popleft()
        self.refs += 1
        message.ref = (self.name, self.refs)
        return message

    def depth(self) -> int:
        return len(self.queue)

    def empty(self) -> None:
        self.queue.clear()

    def delete(self) -> None:
        self.queue.clear()

    def close(self) -> None:
        self.log.append(("close", self.name, None))

    def sync(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.syncs.append(d)
        self.log.append(("sync", self.name, None))
        return d

    def done(self, message: Message) -> None:
        self.log.append(("done", self.name, message.ref))


class DurableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.log: list[tuple[str, str, Any]] = []
        self.backends: dict[str, RecordingBackend] = {}

        def factory(name: str) -> IBackendQueue:
            backend = self.backends[name] = RecordingBackend(name, self.log)
            return backend

        options = NSQDOptions(node_id=1, durable=True, data_path=self.mktemp())
        self.nsqd = NSQD(options, self.clock, backend_factory=factory)

    def test_ok_waits_for_group_commit_and_replies_stay_in_order(self) -> None:
        self.nsqd.get_topic("t").get_channel("c")
        c = LoopbackClient(self.nsqd)
        c.command("PUB t", b"a")
        c.send(b"MPUB t\n" + mpub_body([b"b", b"c"]))
        c.command("PUB t!", b"x")
        self.assertEqual(c.frames(), [], "nothing is acknowledged before the fsync")
        self.clock.advance(0)
        channel_backend = self.backends["t:c"]
        self.assertEqual(len(channel_backend.syncs), 1, "one sync for the whole batch")
        self.assertEqual([m.body for m in channel_backend.queue], [b"a", b"b", b"c"])
        channel_backend.syncs[0].callback(None)
        frames = [(f.type, f.data) for f in c.frames()]
        self.assertEqual(
            frames, [(0, b"OK"), (0, b"OK"), (1, b'E_BAD_TOPIC PUB topic name "t!" is not valid')]
        )
        self.clock.advance(0)
        self.assertTrue(c.closed, "the fatal error still closes, after the replies before it")

    def test_failed_sync_fails_the_publish(self) -> None:
        self.nsqd.get_topic("t").get_channel("c")
        c = LoopbackClient(self.nsqd)
        c.command("PUB t", b"a")
        self.clock.advance(0)
        self.backends["t:c"].syncs[0].errback(OSError(28, "No space left on device"))
        [frame] = c.frames()
        self.assertEqual(frame.data, b"E_PUB_FAILED PUB failed [Errno 28] No space left on device")
        self.assertEqual(self.nsqd.health(), "NOK - [Errno 28] No space left on device")

    def test_memory_is_not_used_and_fin_frees_the_disk_copy(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        topic.publish([b"a", b"b"])
        self.assertEqual((channel.memory_depth(), channel.backend_depth()), (0, 2))
        c = LoopbackClient(self.nsqd)
        c.subscribe("t", "c", rdy=2)
        first, second = c.messages()
        c.command(f"FIN {first.id.decode()}")
        self.assertIn(("done", "t:c", ("t:c", 1)), self.log)
        c.command(f"REQ {second.id.decode()} 0")
        self.assertEqual(self.log[-2:], [("put", "t:c", b"b"), ("done", "t:c", ("t:c", 2))])
        [again] = c.messages()
        self.assertEqual((again.body, again.attempts), (b"b", 2))

    def test_topic_copy_forgotten_only_after_channel_sync(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.publish([b"a"])
        self.assertEqual(topic.backend_depth(), 1)
        topic.get_channel("c")
        self.assertEqual(self.backends["t:c"].depth(), 1)
        self.assertNotIn("done", [entry[0] for entry in self.log])
        self.clock.advance(0)
        for backend in self.backends.values():
            for d in backend.syncs:
                d.callback(None)
        self.assertIn(("done", "t", ("t", 1)), self.log)

    def test_deferred_publish_is_on_disk_and_waits_when_read(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        c = LoopbackClient(self.nsqd)
        c.subscribe("t", "c", rdy=1)
        c.command("DPUB t 5000", b"later")
        self.assertIn(("put", "t:c", b"later"), self.log, "written to disk like any message")
        self.assertEqual(len(channel.deferred), 1, "read back before it is due: parked")
        self.clock.advance(0)
        self.backends["t:c"].syncs[-1].callback(None)
        self.assertEqual([f.data for f in c.frames()], [b"OK"])
        self.clock.advance(5)
        [message] = c.messages()
        self.assertEqual(message.body, b"later")


class DurableDiskTests(SynchronousTestCase):
    """--durable over real disk queues: what a commit costs, and that an OK survives a crash."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.data_path = os.path.abspath(self.mktemp())
        os.makedirs(self.data_path)
        self.jobs: list[str] = []
        self.pending: list[tuple[Callable[[], None], Deferred[None]]] = []

    def runner(self, work: Callable[[], None]) -> Deferred[None]:
        """A sync_runner whose jobs wait for run_jobs(), so the test sees what the OK waited for."""
        self.jobs.append(getattr(getattr(work, "func", work), "__name__", "?"))
        d: Deferred[None] = Deferred()
        self.pending.append((work, d))
        return d

    def run_jobs(self, only: str | None = None) -> None:
        for entry in list(self.pending):
            work, d = entry
            if only is None or getattr(getattr(work, "func", work), "__name__", "?") == only:
                self.pending.remove(entry)
                work()
                d.callback(None)

    def start(self) -> NSQD:
        options = NSQDOptions(node_id=1, durable=True, data_path=self.data_path)
        factory = make_backend_factory(options, self.clock, self.runner, lambda error: None)
        nsqd = NSQD(options, self.clock, backend_factory=factory)
        restore(nsqd)
        nsqd.start()
        return nsqd

    def test_ok_waits_for_one_data_fsync_not_the_metadata(self) -> None:
        nsqd = self.start()
        nsqd.get_topic("t").get_channel("c")
        c = LoopbackClient(nsqd)
        c.command("PUB t", b"a")
        self.clock.advance(0)
        self.assertEqual(self.jobs, ["_fsync_work"])
        self.assertEqual(c.frames(), [])
        self.run_jobs()
        self.assertEqual([f.data for f in c.frames()], [b"OK"])
        self.assertFalse(os.path.exists(os.path.join(self.data_path, "t:c.diskqueue.meta.dat")))
        # The next commit to the same file: one fsync job again, still no metadata write.
        c.command("PUB t", b"b")
        self.clock.advance(0)
        self.run_jobs()
        self.assertEqual([f.data for f in c.frames()], [b"OK"])
        self.assertEqual(self.jobs, ["_fsync_work", "_fsync_work"])

    def test_acknowledged_message_survives_a_crash_before_the_metadata(self) -> None:
        nsqd = self.start()
        nsqd.get_topic("t").get_channel("c")
        c = LoopbackClient(nsqd)
        c.subscribe("t", "c", rdy=1)
        c.command("PUB t", b"a")
        c.command("PUB t", b"b")
        nsqd.run_dispatch()
        self.clock.advance(0)
        # Only the data fsyncs run; every metadata write is still pending at the crash.
        while "_fsync_work" in [getattr(getattr(w, "func", w), "__name__", "?") for w, _ in self.pending]:
            self.run_jobs("_fsync_work")
            self.clock.advance(0)
        frames = c.frames()
        self.assertEqual([f.data for f in frames if f.type == 0], [b"OK", b"OK"])
        [delivered] = [f.message for f in frames if f.type == 2]
        c.send(b"FIN " + delivered.id + b"\n")
        self.clock.advance(0)
        # Crash: nothing is closed; a new core starts on the same directory.
        self.pending.clear()
        for topic in nsqd.topics.values():
            queues = [channel.backend for channel in topic.channels.values()] + [topic._backend]
            for queue in queues:
                assert isinstance(queue, DiskQueue)
                for fd in queue._open_write_fds():
                    os.close(fd)
                queue._wfd = None
                queue._handoff = []
                queue._stop()
        revived = self.start()
        consumer = LoopbackClient(revived)
        consumer.subscribe("t", "c", rdy=10)
        revived.run_dispatch()
        self.clock.advance(0)
        # At least once: "a" was FINed after its OK, but the metadata never said so.
        self.assertEqual(sorted(m.body for m in consumer.messages()), [b"a", b"b"])
