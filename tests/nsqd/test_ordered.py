"""
Ordered channels (docs/extensions/ordered.md): every rule on a Clock with LoopbackClients, the
HTTP switch, C{--ordered-channel}, nsqd.dat, /stats, and clean restarts on real disk queues.
"""

from __future__ import annotations

import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._restore import restored_nsqd
from tests.test_http_helpers import call
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.diskqueue import DiskQueue
from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.metadata import (
    ChannelMetadata,
    Metadata,
    MetadataPersister,
    TopicMetadata,
    decode_metadata,
    encode_metadata,
)
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions, parse_nsqd_args
from twisted_nsq.nsqd.ordered import HeadState, head_path, load_head, save_head
from twisted_nsq.nsqd.persistence import (
    immediate_sync_runner,
    persist_and_close,
)
from twisted_nsq.nsqd.stats import stats_json, stats_text
from twisted_nsq.testing import LoopbackClient, make_nsqd, mpub_body
from twisted_nsq.wire.frames import DecodedMessage


class OrderedCase(SynchronousTestCase):
    """A disk-backed core on a Clock, restartable on the same data path."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)
        self.clients: list[LoopbackClient] = []
        self.persister: MetadataPersister | None = None

    def start(self, **overrides: Any) -> NSQD:
        overrides.setdefault("mem_queue_size", 5)
        nsqd, self.persister = restored_nsqd(self.clock, self.data_path, **overrides)
        return nsqd

    def stop(self, nsqd: NSQD) -> None:
        for client in self.clients:
            if not client.closed:
                client.disconnect()
        self.clients.clear()
        self.clock.advance(0)
        self.successResultOf(persist_and_close(nsqd, self.persister))
        # New IDs after a restart must not repeat the old ones (the generator is per process).
        self.clock.advance(1)

    def consumer(self, nsqd: NSQD, channel: str = "c", rdy: int = 10, **identify: Any) -> LoopbackClient:
        client = LoopbackClient(nsqd, port=40000 + len(self.clients))
        self.clients.append(client)
        if identify:
            client.identify(**identify)
        client.subscribe("t", channel, rdy)
        nsqd.run_dispatch()
        return client

    def publish(self, nsqd: NSQD, *bodies: bytes, defer: float = 0.0) -> None:
        nsqd.get_topic("t").publish(list(bodies), defer)
        nsqd.run_dispatch()

    def ordered(self, nsqd: NSQD, name: str = "c") -> Channel:
        return nsqd.get_topic("t").get_channel(name, ordered=True)

    def take(self, client: LoopbackClient) -> list[DecodedMessage]:
        self.clock.advance(0)
        return client.messages()

    def fin(self, client: LoopbackClient, message: DecodedMessage) -> None:
        client.command(f"FIN {message.id.decode()}")

    def drain(self, nsqd: NSQD, client: LoopbackClient, limit: int = 10_000) -> list[tuple[bytes, int]]:
        """FIN one at a time until nothing comes: (body, attempts) in delivery order."""
        out: list[tuple[bytes, int]] = []
        for _ in range(limit):
            messages = self.take(client)
            if not messages:
                return out
            self.assertEqual(len(messages), 1, "one message in flight")
            [message] = messages
            out.append((message.body, message.attempts))
            self.fin(client, message)
        raise AssertionError("did not drain")


class DeliveryTests(OrderedCase):
    def test_publish_order_one_in_flight_across_consumers(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        first = self.consumer(nsqd, rdy=10)
        second = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a")
        nsqd.get_topic("t").publish([b"b", b"c", b"d"])
        nsqd.run_dispatch()
        got: list[bytes] = []
        for _ in range(4):
            messages = self.take(first) + self.take(second)
            self.assertEqual(len(messages), 1, "one in flight for the whole channel")
            got.append(messages[0].body)
            owner = first if first.protocol.in_flight_count else second
            self.fin(owner, messages[0])
        self.assertEqual(got, [b"a", b"b", b"c", b"d"])

    def test_fin_releases_the_next_in_the_same_pass(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        producer = LoopbackClient(nsqd, port=30000)
        producer.send(b"MPUB t\n" + mpub_body([b"1", b"2", b"3"]))
        [message] = [f.message for f in client.frames() if f.type == 2]
        self.assertEqual(message.body, b"1")
        self.fin(client, message)
        # No clock turn: the FIN's own dispatch pass sent the next one.
        [frame] = [f for f in client.frames() if f.type == 2]
        self.assertEqual(frame.message.body, b"2")

    def test_mpub_order_and_ordinary_channel_unchanged(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        nsqd.get_topic("t").get_channel("plain")
        ordered = self.consumer(nsqd)
        plain = self.consumer(nsqd, channel="plain", rdy=10)
        bodies = [b"%d" % i for i in range(8)]
        self.publish(nsqd, *bodies)
        self.assertEqual(len(self.take(plain)), 8, "an ordinary channel fills the whole RDY window")
        self.assertEqual([b for b, _ in self.drain(nsqd, ordered)], bodies)

    def test_req_puts_the_head_back_first(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b")
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 0")
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"a", 2))
        self.assertEqual(channel.requeue_count, 1)
        self.fin(client, again)
        self.assertEqual(self.drain(nsqd, client), [(b"b", 1)])

    def test_req_with_delay_holds_everything_behind_it(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b")
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 3000")
        self.clock.advance(2.9)
        self.assertEqual(self.take(client), [], "b waits behind the delayed head")
        self.assertEqual((channel.deferred_count(), channel.depth()), (1, 1))
        self.clock.advance(0.2)
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"a", 2))
        self.assertEqual(channel.deferred_count(), 0)
        self.fin(client, again)
        self.assertEqual(self.drain(nsqd, client), [(b"b", 1)])

    def test_timeout_puts_the_head_back_first(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd, msg_timeout=1000)
        self.publish(nsqd, b"a", b"b")
        self.take(client)
        self.clock.advance(1.5)
        [again] = [f.message for f in client.frames() if f.type == 2]
        self.assertEqual((again.body, again.attempts), (b"a", 2))
        self.assertEqual((channel.timeout_count, client.protocol.in_flight_count), (1, 1))
        self.fin(client, again)
        self.assertEqual(self.drain(nsqd, client), [(b"b", 1)])

    def test_disconnect_puts_the_head_back_at_once(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        first = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b")
        self.take(first)
        second = self.consumer(nsqd)
        self.assertEqual(self.take(second), [], "the head is still in flight to the first")
        first.disconnect()
        [again] = self.take(second)
        self.assertEqual((again.body, again.attempts), (b"a", 2))
        self.fin(second, again)
        self.assertEqual(self.drain(nsqd, second), [(b"b", 1)])

    def test_deferred_publish_joins_the_tail_when_due(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a")
        self.publish(nsqd, b"later", defer=5.0)
        self.publish(nsqd, b"b")
        [a] = self.take(client)
        self.clock.advance(6)
        self.publish(nsqd, b"c")
        self.fin(client, a)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], [b"b", b"later", b"c"])

    def test_pause(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        channel.pause()
        self.publish(nsqd, b"a")
        self.assertEqual(self.take(client), [])
        channel.unpause()
        nsqd.run_dispatch()
        self.assertEqual([m.body for m in self.take(client)], [b"a"])

    def test_memory_only_core(self) -> None:
        """Without a data path (tests, embedders) the same rules hold in memory."""
        clock = Clock()
        nsqd = make_nsqd(clock, mem_queue_size=10)
        nsqd.get_topic("t").get_channel("c", ordered=True)
        client = LoopbackClient(nsqd)
        client.subscribe("t", "c", rdy=5)
        nsqd.get_topic("t").publish([b"a", b"b"])
        nsqd.run_dispatch()
        [a] = client.messages()
        client.command(f"REQ {a.id.decode()} 0")
        [again] = client.messages()
        self.assertEqual(again.body, b"a")
        nsqd.close()
        channel = nsqd.topics["t"].channels["c"]
        self.assertEqual([m.body for m in channel._memory], [b"a", b"b"])


class SpillTests(OrderedCase):
    def test_channel_memory_and_disk_are_one_fifo(self) -> None:
        nsqd = self.start(mem_queue_size=3)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        bodies = [b"%02d" % i for i in range(20)]
        self.publish(nsqd, *bodies[:8])
        self.assertGreater(channel.backend_depth(), 0)
        [first] = self.take(client)
        got = [first.body]
        self.fin(client, first)
        # Publishing while the disk holds messages must not jump ahead through memory.
        for body in bodies[8:]:
            self.publish(nsqd, body)
        got += [b for b, _ in self.drain(nsqd, client)]
        self.assertEqual(got, bodies)

    def test_topic_backlog_is_one_fifo(self) -> None:
        nsqd = self.start(mem_queue_size=3)
        topic = nsqd.get_topic("t")
        bodies = [b"%02d" % i for i in range(12)]
        for body in bodies[:7]:
            topic.publish([body])
        self.assertEqual((topic.memory_depth(), topic.backend_depth()), (0, 7), "spilled whole")
        for body in bodies[7:]:
            topic.publish([body])
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], bodies)

    def test_requeue_and_timeout_during_spill(self) -> None:
        nsqd = self.start(mem_queue_size=2)
        self.ordered(nsqd)
        client = self.consumer(nsqd, msg_timeout=1000)
        bodies = [b"%02d" % i for i in range(10)]
        self.publish(nsqd, *bodies)
        [first] = self.take(client)
        client.command(f"REQ {first.id.decode()} 0")
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"00", 2))
        self.clock.advance(1.5)
        [timed_out] = self.take(client)
        self.assertEqual((timed_out.body, timed_out.attempts), (b"00", 3))
        self.fin(client, timed_out)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], bodies[1:])


class ModeTests(OrderedCase):
    def test_turning_off_releases_the_head(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b", b"c")
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 0")
        channel.pause()
        nsqd.get_topic("t").get_channel("c", ordered=False)
        channel.unpause()
        nsqd.run_dispatch()
        self.assertEqual([m.body for m in self.take(client)], [b"a", b"b", b"c"], "all at once, head first")

    def test_turning_off_defers_a_waiting_head(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b")
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 5000")
        channel.set_ordered(False)
        nsqd.run_dispatch()
        self.assertEqual([m.body for m in self.take(client)], [b"b"])
        self.assertEqual(len(channel.deferred), 1)
        self.clock.advance(5)
        self.assertEqual([m.body for m in self.take(client)], [b"a"])

    def test_turning_on_waits_for_in_flight_messages(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = nsqd.get_topic("t").get_channel("c")
        client = self.consumer(nsqd, rdy=2)
        self.publish(nsqd, b"a", b"b", b"c", b"d")
        a, b = self.take(client)
        nsqd.get_topic("t").get_channel("c", ordered=True)
        self.assertTrue(channel.ordered)
        client.command(f"REQ {b.id.decode()} 0")
        client.command(f"REQ {a.id.decode()} 0")
        self.assertEqual(
            self.drain(nsqd, client),
            [(b"a", 2), (b"b", 2), (b"c", 1), (b"d", 1)],
            "taken-back messages go out in publish order, one at a time",
        )

    def test_ordered_channel_flag(self) -> None:
        nsqd = self.start(ordered_channel=["ord.*", "exact"])
        for name, expected in [("ordered", True), ("exact", True), ("exactly", False), ("x-ord", False)]:
            self.consumer(nsqd, channel=name)
            self.assertEqual(nsqd.topics["t"].channels[name].ordered, expected, name)
        nsqd.get_topic("t").get_channel("other", ordered=True)
        self.assertTrue(nsqd.topics["t"].channels["other"].ordered, "an explicit mode wins")
        self.assertFalse(nsqd.get_topic("t").get_channel("ord2", ordered=False).ordered)

    def test_flag_parsing_and_validation(self) -> None:
        options = parse_nsqd_args(["--ordered-channel", "a.*", "--ordered-channel=b"])
        self.assertEqual(options.ordered_channel, ["a.*", "b"])
        options.validate()
        with self.assertRaises(ValueError) as caught:
            NSQDOptions(ordered_channel=["("]).validate()
        self.assertIn("--ordered-channel", str(caught.exception))
        config = os.path.join(self.data_path, "nsqd.toml")
        with open(config, "w") as f:
            f.write('ordered_channel = ["x.*"]\n')
        self.assertEqual(parse_nsqd_args([f"--config={config}"]).ordered_channel, ["x.*"])


class HTTPTests(OrderedCase):
    def setUp(self) -> None:
        super().setUp()
        self.nsqd = self.start()
        self.stub = StubTreq(NSQDHTTP(self.nsqd).resource())
        self.nsqd.get_topic("t")

    def post(self, path: str) -> tuple[int, bytes]:
        reply = call(self.stub, "POST", path)
        return reply.code, reply.body

    def saved(self) -> dict[str, Any]:
        self.clock.advance(0)
        with open(os.path.join(self.data_path, "nsqd.dat"), "rb") as f:
            document: dict[str, Any] = json.loads(f.read())
        return document

    def test_create_ordered_toggle_and_persist(self) -> None:
        self.assertEqual(self.post("/channel/create?topic=t&channel=c&ordered=true"), (200, b""))
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertTrue(channel.ordered)
        self.assertEqual(
            self.saved()["topics"][0]["channels"], [{"name": "c", "paused": False, "ordered": True}]
        )
        self.assertEqual(self.post("/channel/create?topic=t&channel=c"), (200, b""))
        self.assertTrue(channel.ordered, "no parameter leaves the mode alone")
        self.assertEqual(self.post("/channel/create?topic=t&channel=c&ordered=0"), (200, b""))
        self.assertFalse(channel.ordered)
        self.assertEqual(self.saved()["topics"][0]["channels"], [{"name": "c", "paused": False}])
        self.assertEqual(self.post("/create_channel?topic=t&channel=c&ordered=1")[0], 200)
        self.assertTrue(channel.ordered)

    def test_invalid_value(self) -> None:
        for value in ("yes", "", "TRUE"):
            reply = call(self.stub, "POST", f"/channel/create?topic=t&channel=c&ordered={value}")
            self.assertEqual((reply.code, json.loads(reply.body)), (400, {"message": "INVALID_ARG_ORDERED"}))
        self.assertNotIn("c", self.nsqd.topics["t"].channels, "nothing created")

    def test_stats(self) -> None:
        self.post("/channel/create?topic=t&channel=c&ordered=true")
        self.post("/channel/create?topic=t&channel=plain")
        [topic] = stats_json(self.nsqd)["topics"]
        by_name = {c["channel_name"]: c for c in topic["channels"]}
        self.assertIs(by_name["c"]["ordered"], True)
        self.assertEqual(list(by_name["c"])[-1], "ordered")
        self.assertNotIn("ordered", by_name["plain"], "ordinary channels keep Go's JSON shape")
        text = stats_text(self.nsqd)
        self.assertIn("[c                        ] ordered depth: 0", text)
        self.assertIn("[plain                    ] depth: 0", text)
        reply = call(self.stub, "GET", "/stats?format=json&topic=t&channel=c")
        self.assertIs(json.loads(reply.body)["topics"][0]["channels"][0]["ordered"], True)


class MetadataTests(SynchronousTestCase):
    def test_round_trip_and_go_shape(self) -> None:
        metadata = Metadata(
            (TopicMetadata("t", False, (ChannelMetadata("o", False, True), ChannelMetadata("p", True))),)
        )
        data = encode_metadata(metadata)
        self.assertEqual(
            data,
            b'{"topics":[{"name":"t","paused":false,"channels":[{"name":"o","paused":false,"ordered":true},'
            b'{"name":"p","paused":true}]}],"version":"1.3.0"}',
        )
        self.assertEqual(decode_metadata(data), metadata)

    def test_odd_values_are_ignored_like_go_ignores_the_key(self) -> None:
        data = (
            b'{"topics":[{"name":"t","channels":[{"name":"o","ordered":"yes"},{"name":"q","Ordered":true}]}]}'
        )
        [topic] = decode_metadata(data).topics
        self.assertEqual([(c.name, c.ordered) for c in topic.channels], [("o", False), ("q", True)])


class HeadFileTests(SynchronousTestCase):
    def test_round_trip_and_torn_tail(self) -> None:
        path = os.path.join(self.mktemp())
        os.makedirs(path)
        target = head_path(path, "t:c")
        self.assertEqual(target, os.path.join(path, "t:c.diskqueue.head.dat"))
        head = Message(b"a" * 16, b"body", 7, 3)
        save_head(target, [(head, 123)], [b"b" * 16, b"b" * 16])
        state = load_head(target)
        [(message, wait)] = state.messages
        self.assertEqual(
            (message.id, message.body, message.timestamp, message.attempts, wait),
            (b"a" * 16, b"body", 7, 3, 123),
        )
        self.assertEqual(state.skips, (b"b" * 16, b"b" * 16))
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) - 3)
        self.assertEqual(len(load_head(target).skips), 1)
        save_head(target, [], [])
        self.assertFalse(os.path.exists(target))
        self.assertEqual(load_head(target), HeadState())


class RestartTests(OrderedCase):
    def queue_bodies(self, name: str) -> list[bytes]:
        """What Go nsqd would read from the queue files, in order."""
        queue = DiskQueue(
            name,
            self.data_path,
            max_bytes_per_file=1 << 20,
            max_msg_size=1 << 20,
            sync_every=1,
            sync_timeout=2.0,
            clock=self.clock,
            sync_runner=immediate_sync_runner,
        )
        out: list[bytes] = []
        while (message := queue.read()) is not None:
            out.append(message.body)
        queue.delete()
        return out

    def test_in_flight_head_first_after_restart_with_disk_backlog(self) -> None:
        nsqd = self.start(mem_queue_size=3)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        bodies = [b"%02d" % i for i in range(10)]
        self.publish(nsqd, *bodies)
        [first] = self.take(client)
        self.fin(client, first)
        [second] = self.take(client)
        self.assertEqual(second.body, b"01")
        self.stop(nsqd)
        self.assertTrue(os.path.exists(head_path(self.data_path, "t:c")))
        nsqd = self.start(mem_queue_size=3)
        self.assertTrue(nsqd.topics["t"].channels["c"].ordered, "the mode survives")
        self.assertFalse(os.path.exists(head_path(self.data_path, "t:c")), "taken over")
        client = self.consumer(nsqd)
        got = self.drain(nsqd, client)
        self.assertEqual(got, [(b"01", 2)] + [(b, 1) for b in bodies[2:]], "the twin in the queue is skipped")

    def test_go_reads_every_message_from_the_queue_files(self) -> None:
        nsqd = self.start(mem_queue_size=3)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, *[b"%02d" % i for i in range(6)])
        self.take(client)
        self.stop(nsqd)
        self.assertEqual(self.queue_bodies("t:c"), [b"01", b"02", b"03", b"04", b"05", b"00"])

    def test_head_first_in_the_queue_when_nothing_is_on_disk(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b", b"c")
        self.take(client)
        self.stop(nsqd)
        self.assertFalse(os.path.exists(head_path(self.data_path, "t:c")), "not needed")
        self.assertEqual(self.queue_bodies("t:c"), [b"a", b"b", b"c"], "Go reads them in order too")

    def test_delayed_head_keeps_waiting_after_restart(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b")
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 10000")
        self.stop(nsqd)
        nsqd = self.start(mem_queue_size=100)
        client = self.consumer(nsqd)
        self.assertEqual(self.take(client), [])
        self.assertEqual(nsqd.topics["t"].channels["c"].deferred_count(), 1)
        self.clock.advance(10)
        self.assertEqual(self.drain(nsqd, client), [(b"a", 2), (b"b", 1)])

    def test_twins_still_ahead_are_remembered_across_two_restarts(self) -> None:
        nsqd = self.start(mem_queue_size=2)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        bodies = [b"%02d" % i for i in range(8)]
        self.publish(nsqd, *bodies)
        self.take(client)
        self.stop(nsqd)
        nsqd = self.start(mem_queue_size=2)
        client = self.consumer(nsqd)
        [head] = self.take(client)
        self.fin(client, head)
        [nxt] = self.take(client)
        self.assertEqual(nxt.body, b"01")
        self.stop(nsqd)
        state = load_head(head_path(self.data_path, "t:c"))
        self.assertEqual(([m.body for m, _ in state.messages], len(state.skips)), ([b"01"], 1))
        nsqd = self.start(mem_queue_size=2)
        client = self.consumer(nsqd)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], bodies[1:])
        self.assertEqual(nsqd.topics["t"].channels["c"].depth(), 0)

    def test_head_file_of_a_channel_turned_off_goes_first(self) -> None:
        nsqd = self.start(mem_queue_size=2)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, *[b"%02d" % i for i in range(5)])
        self.take(client)
        self.stop(nsqd)
        with open(os.path.join(self.data_path, "nsqd.dat"), "rb") as f:
            document = json.loads(f.read())
        document["topics"][0]["channels"][0].pop("ordered")
        with open(os.path.join(self.data_path, "nsqd.dat"), "w") as f:
            json.dump(document, f)
        nsqd = self.start(mem_queue_size=2)
        self.assertFalse(nsqd.topics["t"].channels["c"].ordered)
        client = self.consumer(nsqd, rdy=1)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], [b"00", b"01", b"02", b"03", b"04"])

    def test_durable_ordered_channel(self) -> None:
        nsqd = self.start(durable=True)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        for body in (b"a", b"b", b"c"):
            self.publish(nsqd, body)
        self.clock.advance(0)
        [a] = self.take(client)
        client.command(f"REQ {a.id.decode()} 0")
        [again] = self.take(client)
        self.assertEqual(again.body, b"a")
        self.stop(nsqd)
        nsqd = self.start(durable=True)
        client = self.consumer(nsqd)
        self.assertEqual(self.drain(nsqd, client), [(b"a", 3), (b"b", 1), (b"c", 1)])
        self.stop(nsqd)
        self.assertEqual(self.queue_bodies("t:c"), [], "every FIN left the disk")

    def test_durable_head_keeps_its_place_across_a_crash(self) -> None:
        nsqd = self.start(durable=True, sync_every=1)
        self.ordered(nsqd)
        client = self.consumer(nsqd)
        self.publish(nsqd, b"a", b"b", b"c")
        self.clock.advance(0)
        [a] = self.take(client)
        self.fin(client, a)
        [b] = self.take(client)
        client.command(f"REQ {b.id.decode()} 0")
        [again] = self.take(client)
        self.assertEqual(again.body, b"b")
        self.clock.advance(3)
        # A crash: nothing is closed or flushed; a new core takes the data path as it is.
        self.clients.clear()
        nsqd = self.start(durable=True, sync_every=1)
        client = self.consumer(nsqd)
        self.assertEqual([body for body, _ in self.drain(nsqd, client)], [b"b", b"c"])
