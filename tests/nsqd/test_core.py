"""The nsqd core without sockets: topics, channels, fan-out, timers, ephemeral rules, operations."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.topic import PublishError
from twisted_nsq.testing import LoopbackClient, make_nsqd


class TopicTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.nsqd = make_nsqd(self.clock)

    def test_topic_without_channels_keeps_messages(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.publish([b"a", b"b"])
        self.assertEqual(topic.depth(), 2)
        first = topic.get_channel("first")
        self.assertEqual((topic.depth(), first.depth()), (0, 2))
        later = topic.get_channel("later")
        self.assertEqual(later.depth(), 0, "a channel created later does not see earlier messages")
        topic.publish([b"c"])
        self.assertEqual((first.depth(), later.depth()), (3, 1))

    def test_fan_out_copies_share_body(self) -> None:
        topic = self.nsqd.get_topic("t")
        a, b = topic.get_channel("a"), topic.get_channel("b")
        topic.publish([b"x"])
        ma, mb = a._memory[0], b._memory[0]
        self.assertIsNot(ma, mb)
        self.assertIs(ma.body, mb.body)
        self.assertEqual((ma.id, ma.timestamp), (mb.id, mb.timestamp))

    def test_counters_and_ids(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.publish([b"abc", b"de"])
        self.assertEqual((topic.message_count, topic.message_bytes), (2, 5))
        ids = [m.id for m in topic._memory]
        self.assertEqual(len(set(ids)), 2)
        self.assertTrue(all(len(i) == 16 for i in ids))
        self.assertEqual(topic._memory[0].timestamp, 1000 * 10**9)

    def test_paused_topic_holds_messages(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        topic.pause()
        topic.publish([b"x"])
        self.assertEqual((topic.depth(), channel.depth()), (1, 0))
        topic.unpause()
        self.assertEqual((topic.depth(), channel.depth()), (0, 1))

    def test_memory_bound(self) -> None:
        nsqd = make_nsqd(self.clock, mem_queue_size=3)
        topic = nsqd.get_topic("t")
        topic.publish([b"1", b"2", b"3"])
        self.assertRaises(PublishError, topic.publish, [b"4"])
        self.assertEqual(topic.depth(), 3)

    def test_ephemeral_overflow_dropped(self) -> None:
        nsqd = make_nsqd(self.clock, mem_queue_size=2)
        topic = nsqd.get_topic("e#ephemeral")
        topic.publish([b"1", b"2", b"3", b"4"])
        self.assertEqual(topic.depth(), 2, "ephemeral topics silently drop what does not fit")

    def test_ephemeral_topic_deleted_with_last_channel(self) -> None:
        topic = self.nsqd.get_topic("e#ephemeral")
        topic.get_channel("a")
        topic.get_channel("b")
        topic.delete_channel("a")
        self.assertIn("e#ephemeral", self.nsqd.topics)
        topic.delete_channel("b")
        self.assertNotIn("e#ephemeral", self.nsqd.topics)

    def test_empty_topic_keeps_channels(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        topic.publish([b"x"])
        topic.pause()
        topic.publish([b"y"])
        topic.empty()
        self.assertEqual((topic.depth(), channel.depth()), (0, 1))

    def test_delete_topic(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.get_channel("c")
        self.nsqd.delete_topic("t")
        self.assertNotIn("t", self.nsqd.topics)
        self.assertEqual(topic.channels, {})
        self.assertRaises(PublishError, topic.publish, [b"x"])
        self.assertRaises(KeyError, self.nsqd.delete_topic, "t")

    def test_exiting_refuses(self) -> None:
        topic = self.nsqd.get_topic("t")
        self.nsqd.close()
        self.assertRaises(PublishError, topic.publish, [b"x"])


class ChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.nsqd = make_nsqd(self.clock)

    def test_one_timer_for_many_in_flight(self) -> None:
        self.nsqd.get_topic("t").publish([b"x"] * 500)
        sub = LoopbackClient(self.nsqd, port=50100)
        sub.identify(msg_timeout=5000, heartbeat_interval=60000)
        sub.subscribe("t", "c", rdy=500)
        self.assertEqual(len(sub.messages()), 500)
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertEqual(len(channel.in_flight), 500)
        timers = [d for d in self.clock.getDelayedCalls() if getattr(d, "func", None) == channel._fire]
        self.assertEqual(len(timers), 1)
        self.assertEqual(len(channel._in_flight_heap), 1, "one heap entry per dispatch batch")

    def test_empty_channel_resets_clients(self) -> None:
        self.nsqd.get_topic("t").publish([b"1", b"2", b"3"])
        c = LoopbackClient(self.nsqd)
        c.subscribe("t", "c", rdy=2)
        self.assertEqual(len(c.messages()), 2)
        channel = self.nsqd.topics["t"].channels["c"]
        channel.empty()
        self.assertEqual((channel.depth(), len(channel.in_flight), c.protocol.in_flight_count), (0, 0, 0))
        self.clock.advance(120)
        self.assertEqual(channel.timeout_count, 0)

    def test_deferred_message_counted_then_delivered(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        topic.publish([b"x"], defer=2.0)
        self.assertEqual((channel.message_count, len(channel.deferred), channel.depth()), (1, 1, 0))
        self.clock.advance(2)
        self.assertEqual((len(channel.deferred), channel.depth()), (0, 1))

    def test_close_returns_everything_in_order(self) -> None:
        topic = self.nsqd.get_topic("t")
        channel = topic.get_channel("c")
        topic.publish([b"1", b"2"])
        c = LoopbackClient(self.nsqd)
        c.subscribe("t", "c", rdy=1)
        [m] = c.messages()
        c.command(f"REQ {m.id.decode()} 5000")
        c.command("NOP")
        self.nsqd.close()
        self.assertEqual((channel.deferred, channel.in_flight), ({}, {}))
        self.assertEqual([m.body for m in channel._memory], [b"2", b"1"])


class PumpTests(SynchronousTestCase):
    def test_backlog_moves_in_batches_and_new_messages_queue_behind(self) -> None:
        from twisted_nsq.nsqd.topic import PUMP_BATCH

        clock = Clock()
        nsqd = make_nsqd(clock, mem_queue_size=PUMP_BATCH * 3)
        topic = nsqd.get_topic("t")
        total = PUMP_BATCH * 2 + 5
        topic.publish([b"%d" % i for i in range(total)])
        channel = topic.get_channel("c")
        self.assertEqual((channel.depth(), topic.depth()), (PUMP_BATCH, total - PUMP_BATCH))
        topic.publish([b"late"])
        self.assertEqual(topic.depth(), total - PUMP_BATCH + 1, "queued behind the backlog")
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(topic.depth(), 0)
        bodies = [m.body for m in channel._memory]
        self.assertEqual(bodies, [b"%d" % i for i in range(total)] + [b"late"])
        self.assertEqual(clock.getDelayedCalls(), [])


class UnbufferedEphemeralTests(SynchronousTestCase):
    def test_ephemeral_channel_with_zero_memory_queue_hands_off_or_drops(self) -> None:
        clock = Clock()
        nsqd = make_nsqd(clock, mem_queue_size=0)
        client = LoopbackClient(nsqd)
        client.subscribe("t#ephemeral", "c#ephemeral", rdy=1)
        topic = nsqd.topics["t#ephemeral"]
        topic.publish([b"taken", b"dropped"])
        nsqd.run_dispatch()
        self.assertEqual([m.body for m in client.messages()], [b"taken"])
        self.assertEqual(topic.channels["c#ephemeral"].depth(), 0)


class InFlightHeapTests(SynchronousTestCase):
    def test_finished_messages_are_not_kept_until_their_deadline(self) -> None:
        from twisted_nsq.nsqd.channel import HEAP_SLACK

        clock = Clock()
        nsqd = make_nsqd(clock, mem_queue_size=100_000)
        topic = nsqd.get_topic("t")
        channel = topic.get_channel("c")
        client = LoopbackClient(nsqd)
        client.subscribe("t", "c", rdy=100)
        for _ in range(200):
            topic.publish([b"x"] * 100)
            nsqd.run_dispatch()
            ids = [m.id for m in client.messages()]
            client.send(b"".join(b"FIN %s\n" % i for i in ids))
        refs = sum(len(entry[2]) for entry in channel._in_flight_heap)
        self.assertLessEqual(refs, 2 * len(channel.in_flight) + HEAP_SLACK + 100)
        self.assertEqual(channel._heap_refs, refs)
        # Deadlines still work after compactions.
        topic.publish([b"late"])
        nsqd.run_dispatch()
        self.assertEqual(len(client.messages()), 1)
        clock.advance(60)
        self.assertEqual(channel.timeout_count, 1)
