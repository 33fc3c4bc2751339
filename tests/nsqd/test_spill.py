"""--deferred-memory-limit: deferred messages beyond the cap wait on disk and come back on time."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import immediate_sync_runner, make_backend_factory
from twisted_nsq.nsqd.spill import DeferredSpill
from twisted_nsq.testing import LoopbackClient


class SpillFileTests(SynchronousTestCase):
    def test_buckets_round_trip_and_survive_reopen(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        spill = DeferredSpill(path, "t:c", bucket_seconds=10)
        spill.add(Message(b"a" * 16, b"one", 5, 3), 105.0)
        spill.add(Message(b"b" * 16, b"two", 6, 1), 131.5)
        self.assertEqual((len(spill), spill.next_time()), (2, 100.0))
        spill.close()
        again = DeferredSpill(path, "t:c", bucket_seconds=10)
        self.assertEqual(len(again), 2)
        [(due, message)] = again.take(110.0)
        self.assertEqual((due, message.id, message.body, message.attempts), (105.0, b"a" * 16, b"one", 3))
        self.assertEqual(again.next_time(), 130.0)
        self.assertEqual([m.body for _, m in again.take_all()], [b"two"])
        self.assertEqual(os.listdir(path), [])

    def test_torn_tail_keeps_intact_records(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        spill = DeferredSpill(path, "t:c", bucket_seconds=10)
        spill.add(Message(b"a" * 16, b"one", 5), 1.0)
        spill.add(Message(b"b" * 16, b"two", 5), 2.0)
        spill.close()
        [name] = os.listdir(path)
        with open(os.path.join(path, name), "r+b") as f:
            f.truncate(os.path.getsize(os.path.join(path, name)) - 2)
        self.assertEqual([m.body for _, m in DeferredSpill(path, "t:c").take_all()], [b"one"])


class ChannelSpillTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.path = self.mktemp()
        os.makedirs(self.path)
        self.nsqd = self.make()

    def make(self) -> NSQD:
        options = NSQDOptions(node_id=1, data_path=self.path, deferred_memory_limit=2)
        factory = make_backend_factory(options, self.clock, immediate_sync_runner, lambda e: None)
        return NSQD(options, self.clock, backend_factory=factory)

    def test_over_the_cap_goes_to_disk_and_returns_when_due(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        for i in range(5):
            topic.publish([b"d%d" % i], defer=30.0 + i)
        self.assertEqual((len(channel.deferred), channel.deferred_count()), (2, 5))
        client = LoopbackClient(self.nsqd)
        client.identify(heartbeat_interval=60000)
        client.subscribe("t", "c", rdy=10)
        delivered: list[bytes] = []
        for _ in range(40):
            self.clock.advance(1)
            client.command("NOP")
            delivered += [m.body for m in client.messages()]
        self.assertEqual(delivered, [b"d0", b"d1", b"d2", b"d3", b"d4"])
        self.assertEqual(channel.deferred_count(), 0)
        self.assertEqual([n for n in os.listdir(self.path) if "spill" in n], [])

    def test_clean_stop_moves_spilled_messages_into_the_queue(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.publish([b"a", b"b", b"c", b"d"], defer=60.0)
        self.nsqd.close()
        self.assertEqual([n for n in os.listdir(self.path) if "spill" in n], [])
        restarted = self.make()
        channel = restarted.get_topic("t").get_channel("c")
        self.assertEqual(channel.depth(), 4)
