"""
Channels ordered by key (docs/extensions/ordered.md, "Ordering by key"): key extraction, every
dispatch rule on a Clock with LoopbackClients, the HTTP switch, the flags, nsqd.dat, /stats,
toggling between the modes, and clean restarts on real disk queues.
"""

from __future__ import annotations

import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd.test_ordered import OrderedCase
from tests.test_http_helpers import call
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.metadata import (
    ChannelMetadata,
    Metadata,
    TopicMetadata,
    decode_metadata,
    encode_metadata,
)
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions, parse_nsqd_args
from twisted_nsq.nsqd.ordered import head_path, load_head, parse_order_key
from twisted_nsq.nsqd.stats import stats_json, stats_text
from twisted_nsq.testing import LoopbackClient
from twisted_nsq.wire.frames import DecodedMessage

SPEC = "prefix:|"


class KeyExtractionTests(SynchronousTestCase):
    def test_json_field(self) -> None:
        key = parse_order_key("json:user")
        self.assertEqual(key(b'{"user": "ann", "n": 1}'), "ann")
        self.assertEqual(key(b'{"user": 17}'), "17")
        self.assertEqual(key(b'{"user": {"b": [1, 2], "a": null}}'), '{"b":[1,2],"a":null}')
        self.assertEqual(key(b'{"user": true}'), "true")
        self.assertEqual(key(b'{"user": ""}'), "", "an empty string is a key of its own")
        for keyless in (b'{"other": 1}', b"[1, 2]", b'"user"', b"not json", b"\xff\xfe", b"", b"{"):
            self.assertIsNone(key(keyless), keyless)

    def test_prefix(self) -> None:
        key = parse_order_key("prefix:|")
        self.assertEqual(key(b"key-1|body|more"), b"key-1")
        self.assertEqual(key(b"|body"), b"", "an empty prefix is a key of its own")
        self.assertIsNone(key(b"no delimiter"))
        double = parse_order_key("prefix:::")
        self.assertEqual(double(b"a:b::c"), b"a:b")
        self.assertIsNone(double(b"a:b:c"))

    def test_invalid_specs(self) -> None:
        for spec in ("", "json:", "prefix:", "field", "JSON:x", "regex:.*"):
            with self.assertRaises(ValueError, msg=spec):
                parse_order_key(spec)


class KeyedCase(OrderedCase):
    def keyed(self, nsqd: NSQD, name: str = "c", spec: str = SPEC) -> Channel:
        return nsqd.get_topic("t").get_channel(name, ordered=True, order_key=spec)

    def bodies(self, messages: list[DecodedMessage]) -> list[bytes]:
        return [m.body for m in messages]

    def by_body(self, messages: list[DecodedMessage]) -> dict[bytes, DecodedMessage]:
        return {m.body: m for m in messages}


class DeliveryTests(KeyedCase):
    def test_keys_go_out_in_parallel_one_in_flight_each(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"b|1", b"a|2", b"c|1", b"b|2", b"a|3")
        got = self.by_body(self.take(client))
        self.assertEqual(sorted(got), [b"a|1", b"b|1", b"c|1"])
        self.assertEqual((len(channel.in_flight), channel.pending_count(), channel.depth()), (3, 3, 3))
        self.fin(client, got[b"a|1"])
        # The FIN's own pass sends the key's next message, without a clock turn.
        [frame] = [f for f in client.frames() if f.type == 2]
        self.assertEqual(frame.message.body, b"a|2")

    def test_per_key_order_across_consumers(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        first = self.consumer(nsqd, rdy=5)
        second = self.consumer(nsqd, rdy=5)
        bodies = [b"%s|%d" % (k, i) for i in range(10) for k in (b"x", b"y", b"z")]
        self.publish(nsqd, *bodies)
        got: list[bytes] = []
        for _ in range(100):
            messages = self.take(first) + self.take(second)
            if not messages:
                break
            keys = [m.body.split(b"|")[0] for m in messages]
            self.assertEqual(len(keys), len(set(keys)), "never two of a key in flight")
            for message in messages:
                got.append(message.body)
                in_flight = nsqd.topics["t"].channels["c"].in_flight[message.id]
                owner = first if in_flight.client_id == first.protocol.client_id else second
                owner.command(f"FIN {message.id.decode()}")
        for key in (b"x", b"y", b"z"):
            self.assertEqual([b for b in got if b.startswith(key)], [b for b in bodies if b.startswith(key)])

    def test_messages_without_a_key_share_one_lane(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd, spec="json:k")
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"plain", b'{"k":"a"}', b"[1]", b'{"k":1}', b'{"x":1}')
        got = self.by_body(self.take(client))
        self.assertEqual(sorted(got), sorted([b"plain", b'{"k":"a"}', b'{"k":1}']))
        self.fin(client, got[b"plain"])
        self.assertEqual(self.bodies(self.take(client)), [b"[1]"])

    def test_rdy_window_limits_like_an_ordinary_channel(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=2)
        self.publish(nsqd, b"a|1", b"b|1", b"c|1")
        self.assertEqual(len(self.take(client)), 2)

    def test_pending_cap_blocks_the_fifo(self) -> None:
        nsqd = self.start(mem_queue_size=100, ordered_max_pending=2)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"a|3", b"a|4", b"b|1")
        [a1] = self.take(client)
        self.assertEqual(a1.body, b"a|1")
        self.assertEqual(channel.pending_count(), 2, "a|2 and a|3 parked, then the FIFO stops")
        self.assertEqual(channel.depth(), 4)
        self.fin(client, a1)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"], "b|1 is still behind a|4")
        self.assertEqual(channel.pending_count(), 2)
        a2 = self.take(client)
        self.fin(client, channel_message(client, b"a|2"))
        self.assertEqual(sorted(self.bodies(self.take(client))), [b"a|3", b"b|1"])
        self.assertEqual(a2, [])

    def test_req_goes_to_the_front_of_its_key(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1")
        got = self.by_body(self.take(client))
        client.command(f"REQ {got[b'a|1'].id.decode()} 0")
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"a|1", 2))
        self.assertEqual(channel.requeue_count, 1)
        self.fin(client, again)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])

    def test_req_delay_blocks_only_its_key(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1", b"b|2")
        got = self.by_body(self.take(client))
        client.command(f"REQ {got[b'a|1'].id.decode()} 3000")
        self.fin(client, got[b"b|1"])
        self.assertEqual(self.bodies(self.take(client)), [b"b|2"], "b goes on")
        self.assertEqual((channel.deferred_count(), channel.depth()), (1, 1))
        self.clock.advance(2.9)
        self.assertEqual(self.take(client), [])
        self.clock.advance(0.2)
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"a|1", 2))
        self.assertEqual(channel.deferred_count(), 0)
        self.fin(client, again)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])

    def test_timeout_goes_to_the_front_of_its_key(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10, msg_timeout=1000)
        self.publish(nsqd, b"a|1", b"a|2")
        self.take(client)
        self.clock.advance(0.5)
        self.publish(nsqd, b"b|1")
        [b1] = self.take(client)
        self.clock.advance(0.6)
        [again] = [f.message for f in client.frames() if f.type == 2]
        self.assertEqual((again.body, again.attempts), (b"a|1", 2))
        self.assertEqual(channel.timeout_count, 1)
        self.assertIn(b1.id, channel.in_flight, "the other key is not touched")
        self.fin(client, again)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])

    def test_disconnect_puts_each_key_back_at_once(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        first = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"b|1", b"a|2")
        self.assertEqual(len(self.take(first)), 2)
        second = self.consumer(nsqd, rdy=10)
        self.assertEqual(self.take(second), [])
        first.disconnect()
        got = self.take(second)
        self.assertEqual(sorted((m.body, m.attempts) for m in got), [(b"a|1", 2), (b"b|1", 2)])

    def test_deferred_publish_joins_the_tail_when_due(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1")
        self.publish(nsqd, b"a|later", defer=5.0)
        self.publish(nsqd, b"a|2")
        [a1] = self.take(client)
        self.clock.advance(6)
        self.publish(nsqd, b"a|3")
        self.fin(client, a1)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], [b"a|2", b"a|later", b"a|3"])

    def test_spill_keeps_each_key_in_order(self) -> None:
        nsqd = self.start(mem_queue_size=3)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=3)
        bodies = [b"%d|%02d" % (i % 4, i) for i in range(40)]
        self.publish(nsqd, *bodies[:20])
        self.assertGreater(channel.backend_depth(), 0)
        got: list[bytes] = []
        for body in bodies[20:]:
            messages = self.take(client)
            for message in messages:
                got.append(message.body)
                self.fin(client, message)
            self.publish(nsqd, body)
        for _ in range(100):
            messages = self.take(client)
            if not messages:
                break
            for message in messages:
                got.append(message.body)
                self.fin(client, message)
        for key in (b"0", b"1", b"2", b"3"):
            self.assertEqual([b for b in got if b[:1] == key], [b for b in bodies if b[:1] == key])
        self.assertEqual((channel.depth(), channel.pending_count()), (0, 0))

    def test_ordinary_channel_never_reads_keys(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = nsqd.get_topic("t").get_channel("plain")
        self.assertEqual((channel.ordered, channel.order_key), (False, ""))
        client = self.consumer(nsqd, channel="plain", rdy=10)
        self.publish(nsqd, b"a|1", b"a|2")
        self.assertEqual(len(self.take(client)), 2)
        self.assertEqual(channel._flight_keys, {})


def channel_message(client: LoopbackClient, body: bytes) -> DecodedMessage:
    """The in-flight message with ``body`` that ``client`` holds, as the client saw it."""
    channel = client.protocol.channel
    assert channel is not None
    for message in channel.in_flight.values():
        if message.body == body:
            return DecodedMessage(message.timestamp, message.attempts, message.id, message.body)
    raise AssertionError(f"{body!r} is not in flight")


class ModeTests(KeyedCase):
    def test_whole_channel_to_keyed_keeps_the_head(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.ordered(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"b|1", b"a|2")
        [a1] = self.take(client)
        client.command(f"REQ {a1.id.decode()} 0")
        self.keyed(nsqd)
        nsqd.run_dispatch()
        got = self.take(client)
        self.assertEqual(sorted((m.body, m.attempts) for m in got), [(b"a|1", 2), (b"b|1", 1)])

    def test_keyed_in_flight_keys_count_as_busy_when_switched_on(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = nsqd.get_topic("t").get_channel("c")
        client = self.consumer(nsqd, rdy=1)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1")
        [a1] = self.take(client)
        self.keyed(nsqd)
        client.command("RDY 10")
        self.assertEqual(self.bodies(self.take(client)), [b"b|1"], "a is busy with a|1")
        self.fin(client, a1)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])
        self.assertTrue(channel.ordered)

    def test_keyed_to_whole_channel_and_off(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1", b"b|2")
        got = self.by_body(self.take(client))
        channel.pause()
        for body in (b"a|1", b"b|1"):
            client.command(f"REQ {got[body].id.decode()} 0")
        nsqd.get_topic("t").get_channel("c", order_key="")
        self.assertEqual((channel.ordered, channel.order_key, channel.pending_count()), (True, "", 0))
        channel.unpause()
        nsqd.run_dispatch()
        self.assertEqual(
            [b for b, _ in self.drain(nsqd, client)], [b"a|1", b"a|2", b"b|1", b"b|2"], "oldest first"
        )

    def test_keyed_off_defers_a_waiting_key(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        channel = self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1")
        got = self.by_body(self.take(client))
        client.command(f"REQ {got[b'a|1'].id.decode()} 5000")
        self.fin(client, got[b"b|1"])
        channel.set_ordered(False)
        self.assertEqual((channel.ordered, channel.order_key), (False, ""))
        nsqd.run_dispatch()
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])
        self.assertEqual(len(channel.deferred), 1)
        self.clock.advance(5)
        self.assertEqual(self.bodies(self.take(client)), [b"a|1"])

    def test_flag_gives_matching_channels_the_key(self) -> None:
        nsqd = self.start(ordered_channel=["ord.*"], ordered_channel_key="json:k")
        self.consumer(nsqd, channel="ord1")
        self.consumer(nsqd, channel="other")
        channels = nsqd.topics["t"].channels
        self.assertEqual((channels["ord1"].ordered, channels["ord1"].order_key), (True, "json:k"))
        self.assertEqual((channels["other"].ordered, channels["other"].order_key), (False, ""))
        whole = nsqd.get_topic("t").get_channel("ord2", order_key="")
        self.assertEqual((whole.ordered, whole.order_key), (True, ""), "an explicit key wins")


class OptionTests(SynchronousTestCase):
    def test_flags_and_config(self) -> None:
        options = parse_nsqd_args(["--ordered-channel-key=prefix:|", "--ordered-max-pending=50"])
        self.assertEqual((options.ordered_channel_key, options.ordered_max_pending), ("prefix:|", 50))
        options.validate()
        self.assertEqual((NSQDOptions().ordered_channel_key, NSQDOptions().ordered_max_pending), ("", 10000))
        with self.assertRaises(ValueError) as caught:
            NSQDOptions(ordered_channel_key="json:").validate()
        self.assertIn("--ordered-channel-key", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            NSQDOptions(ordered_max_pending=0).validate()
        self.assertIn("--ordered-max-pending", str(caught.exception))
        config = os.path.join(self.mktemp())
        with open(config, "w") as f:
            f.write('ordered_channel_key = "json:user"\nordered_max_pending = 7\n')
        options = parse_nsqd_args([f"--config={config}"])
        self.assertEqual((options.ordered_channel_key, options.ordered_max_pending), ("json:user", 7))


class HTTPTests(KeyedCase):
    def setUp(self) -> None:
        super().setUp()
        self.nsqd = self.start()
        self.stub = StubTreq(NSQDHTTP(self.nsqd).resource())
        self.nsqd.get_topic("t")

    def post(self, path: str) -> tuple[int, Any]:
        reply = call(self.stub, "POST", path)
        return reply.code, json.loads(reply.body) if reply.body else None

    def saved(self) -> list[dict[str, Any]]:
        self.clock.advance(0)
        with open(os.path.join(self.data_path, "nsqd.dat"), "rb") as f:
            channels: list[dict[str, Any]] = json.loads(f.read())["topics"][0]["channels"]
        return channels

    def test_create_toggle_and_persist(self) -> None:
        self.assertEqual(self.post("/channel/create?topic=t&channel=c&order_key=prefix:%7C"), (200, None))
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertEqual(
            (channel.ordered, channel.order_key), (True, "prefix:|"), "order_key implies ordered"
        )
        self.assertEqual(
            self.saved(), [{"name": "c", "paused": False, "ordered": True, "order_key": "prefix:|"}]
        )
        self.post("/channel/create?topic=t&channel=c&ordered=true")
        self.assertEqual(channel.order_key, "prefix:|", "ordered=true alone keeps the key")
        self.post("/channel/create?topic=t&channel=c&order_key=")
        self.assertEqual((channel.ordered, channel.order_key), (True, ""))
        self.assertEqual(self.saved(), [{"name": "c", "paused": False, "ordered": True}])
        self.post("/channel/create?topic=t&channel=c&ordered=true&order_key=json:user")
        self.assertEqual(channel.order_key, "json:user")
        self.post("/channel/create?topic=t&channel=c&ordered=false")
        self.assertEqual((channel.ordered, channel.order_key), (False, ""))
        self.assertEqual(self.saved(), [{"name": "c", "paused": False}])

    def test_invalid_spec(self) -> None:
        for query in (
            "order_key=json:",
            "order_key=nope",
            "order_key=prefix:",
            "ordered=false&order_key=json:k",
        ):
            self.assertEqual(
                self.post(f"/channel/create?topic=t&channel=c&{query}"),
                (400, {"message": "INVALID_ARG_ORDER_KEY"}),
                query,
            )
        self.assertNotIn("c", self.nsqd.topics["t"].channels, "nothing created")

    def test_stats(self) -> None:
        self.post("/channel/create?topic=t&channel=c&order_key=prefix:%7C")
        self.post("/channel/create?topic=t&channel=whole&ordered=true")
        client = self.consumer(self.nsqd, rdy=10)
        self.publish(self.nsqd, b"a|1", b"a|2", b"a|3")
        self.take(client)
        [topic] = stats_json(self.nsqd)["topics"]
        by_name = {c["channel_name"]: c for c in topic["channels"]}
        self.assertEqual(list(by_name["c"])[-3:], ["ordered", "order_key", "order_pending"])
        self.assertEqual((by_name["c"]["order_key"], by_name["c"]["order_pending"]), ("prefix:|", 2))
        self.assertNotIn("order_key", by_name["whole"])
        self.assertNotIn("order_pending", by_name["whole"])
        self.assertIn(
            "[c                        ] ordered by prefix:| pending: 2 depth: 2", stats_text(self.nsqd)
        )


class MetadataTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        metadata = Metadata((TopicMetadata("t", False, (ChannelMetadata("k", False, True, "json:a"),)),))
        data = encode_metadata(metadata)
        self.assertEqual(
            data,
            b'{"topics":[{"name":"t","paused":false,"channels":[{"name":"k","paused":false,"ordered":true,'
            b'"order_key":"json:a"}]}],"version":"1.3.0"}',
        )
        self.assertEqual(decode_metadata(data), metadata)

    def test_odd_values_are_ignored(self) -> None:
        data = (
            b'{"topics":[{"name":"t","channels":[{"name":"a","ordered":true,"order_key":"bad"},'
            b'{"name":"b","ordered":true,"order_key":5}]}]}'
        )
        [topic] = decode_metadata(data).topics
        self.assertEqual([c.order_key for c in topic.channels], ["", ""])


class RestartTests(KeyedCase):
    def test_in_flight_and_parked_come_back_first_with_disk_backlog(self) -> None:
        # A pending cap of 2 keeps the later messages in the FIFO (on disk).
        nsqd = self.start(mem_queue_size=3, ordered_max_pending=2)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        bodies = [b"%d|%02d" % (i % 2, i) for i in range(12)]
        self.publish(nsqd, *bodies[:4])
        got = self.by_body(self.take(client))
        self.assertEqual(sorted(got), [b"0|00", b"1|01"])
        self.fin(client, got[b"0|00"])
        [second] = self.take(client)
        self.assertEqual(second.body, b"0|02")
        self.publish(nsqd, *bodies[4:])
        self.stop(nsqd)
        self.assertTrue(os.path.exists(head_path(self.data_path, "t:c")))
        nsqd = self.start(mem_queue_size=3, ordered_max_pending=2)
        channel = nsqd.topics["t"].channels["c"]
        self.assertEqual((channel.ordered, channel.order_key), (True, SPEC), "the mode survives")
        client = self.consumer(nsqd, rdy=10)
        delivered: list[tuple[bytes, int]] = []
        for _ in range(50):
            messages = self.take(client)
            if not messages:
                break
            for message in messages:
                delivered.append((message.body, message.attempts))
                self.fin(client, message)
        for key in (b"0", b"1"):
            self.assertEqual(
                [b for b, _ in delivered if b[:1] == key],
                [b for b in bodies[1:] if b[:1] == key and b != b"0|00"],
            )
        self.assertIn((b"0|02", 2), delivered)
        self.assertIn((b"1|01", 2), delivered)
        self.assertEqual(len(delivered), 11, "each twin in the queue is skipped")
        self.assertEqual(channel.depth(), 0)

    def test_waiting_key_keeps_waiting_after_restart(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1")
        got = self.by_body(self.take(client))
        client.command(f"REQ {got[b'a|1'].id.decode()} 10000")
        self.stop(nsqd)
        state = load_head(head_path(self.data_path, "t:c"))
        self.assertEqual(sorted(m.body for m, _ in state.messages), [b"a|1", b"a|2", b"b|1"])
        nsqd = self.start(mem_queue_size=100)
        client = self.consumer(nsqd, rdy=10)
        self.assertEqual(self.bodies(self.take(client)), [b"b|1"], "only key a waits")
        self.assertEqual(nsqd.topics["t"].channels["c"].deferred_count(), 1)
        self.clock.advance(10)
        [again] = self.take(client)
        self.assertEqual((again.body, again.attempts), (b"a|1", 2))
        self.fin(client, again)
        self.assertEqual(self.bodies(self.take(client)), [b"a|2"])

    def test_no_head_file_without_backlog(self) -> None:
        nsqd = self.start(mem_queue_size=100)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        self.publish(nsqd, b"a|1", b"a|2", b"b|1")
        self.take(client)
        self.stop(nsqd)
        self.assertFalse(os.path.exists(head_path(self.data_path, "t:c")))
        nsqd = self.start(mem_queue_size=100)
        client = self.consumer(nsqd, rdy=1)
        self.assertEqual([b for b, _ in self.drain(nsqd, client)], [b"a|1", b"a|2", b"b|1"])

    def test_durable_keyed_channel_across_a_restart_and_a_crash(self) -> None:
        nsqd = self.start(durable=True, sync_every=1)
        self.keyed(nsqd)
        client = self.consumer(nsqd, rdy=10)
        for body in (b"a|1", b"a|2", b"b|1", b"b|2"):
            self.publish(nsqd, body)
        self.clock.advance(0)
        got = self.by_body(self.take(client))
        self.assertEqual(sorted(got), [b"a|1", b"b|1"])
        client.command(f"REQ {got[b'a|1'].id.decode()} 0")
        self.fin(client, got[b"b|1"])
        self.stop(nsqd)
        nsqd = self.start(durable=True, sync_every=1)
        client = self.consumer(nsqd, rdy=10)
        got = self.by_body(self.take(client))
        self.assertEqual(sorted((m.body, m.attempts) for m in got.values()), [(b"a|1", 3), (b"b|2", 2)])
        self.fin(client, got[b"b|2"])
        self.clock.advance(3)
        # A crash: nothing is closed; a new core takes the data path as it is.
        self.clients.clear()
        nsqd = self.start(durable=True, sync_every=1)
        client = self.consumer(nsqd, rdy=10)
        delivered: list[bytes] = []
        for _ in range(20):
            messages = self.take(client)
            if not messages:
                break
            for message in messages:
                delivered.append(message.body)
                self.fin(client, message)
        self.assertEqual([b for b in delivered if b[:1] == b"a"], [b"a|1", b"a|2"])
        self.assertNotIn(b"b|1", delivered)
