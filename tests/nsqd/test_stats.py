"""Tests for L{twisted_nsq.nsqd.stats}: the /stats document and page, memory, e2e latency."""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.stats import (
    E2ELatency,
    E2ELatencyTracker,
    memory_stats,
    stats_json,
    stats_text,
    version_line,
)
from twisted_nsq.testing import LoopbackClient, make_nsqd

START = 1_700_000_000


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.nsqd = make_nsqd(self.clock)


class JSONTests(Base):
    def test_empty(self) -> None:
        self.assertEqual(
            stats_json(self.nsqd, include_mem=False),
            {"version": "1.3.0", "health": "OK", "start_time": START, "topics": [], "producers": None},
        )

    def test_health(self) -> None:
        self.nsqd.set_health("disk gone")
        self.assertEqual(stats_json(self.nsqd, include_mem=False)["health"], "NOK - disk gone")

    def test_key_order_with_memory(self) -> None:
        self.assertEqual(
            list(stats_json(self.nsqd)), ["version", "health", "start_time", "topics", "memory", "producers"]
        )

    def test_sorted_topics_and_channels(self) -> None:
        for topic in ("b", "a", "c#ephemeral"):
            for channel in ("z", "y"):
                self.nsqd.get_topic(topic).get_channel(channel)
        document = stats_json(self.nsqd, include_mem=False)
        self.assertEqual([t["topic_name"] for t in document["topics"]], ["a", "b", "c#ephemeral"])
        self.assertEqual([c["channel_name"] for c in document["topics"][0]["channels"]], ["y", "z"])

    def test_counts(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.publish([b"ab", b"cde"])
        channel = topic.get_channel("c")
        topic.publish([b"f"], defer=10.0)
        topic.pause()
        topic.publish([b"gh"])
        document = stats_json(self.nsqd, include_mem=False)
        t = document["topics"][0]
        self.assertEqual(
            (t["depth"], t["backend_depth"], t["message_count"], t["message_bytes"], t["paused"]),
            (1, 0, 4, 8, True),
        )
        c = t["channels"][0]
        self.assertEqual(
            (c["depth"], c["deferred_count"], c["message_count"], c["client_count"], c["clients"]),
            (2, 1, 3, 0, []),
        )
        channel.pause()
        self.assertTrue(stats_json(self.nsqd, include_mem=False)["topics"][0]["channels"][0]["paused"])

    def test_filters(self) -> None:
        self.nsqd.get_topic("t1").get_channel("c1")
        self.nsqd.get_topic("t2").get_channel("c2")
        self.assertIsNone(stats_json(self.nsqd, topic="none")["topics"])
        self.assertEqual(stats_json(self.nsqd, channel="none")["topics"], [])
        only = stats_json(self.nsqd, topic="t2", channel="c2")["topics"]
        self.assertEqual([(t["topic_name"], len(t["channels"])) for t in only], [("t2", 1)])
        self.assertEqual(len(stats_json(self.nsqd, topic="", channel="")["topics"]), 2)

    def test_clients_and_producers(self) -> None:
        consumer = LoopbackClient(self.nsqd, port=1000)
        consumer.subscribe("t", "c", rdy=1)
        producer = LoopbackClient(self.nsqd, port=2000)
        producer.command("PUB t", b"x")
        both = LoopbackClient(self.nsqd, port=3000)
        both.command("PUB u", b"y")
        both.frames()
        both.subscribe("t", "c")
        document = stats_json(self.nsqd, include_mem=False)
        clients = document["topics"][0]["channels"][0]["clients"]
        self.assertEqual([c["remote_address"] for c in clients], ["127.0.0.1:1000", "127.0.0.1:3000"])
        self.assertNotIn("pub_counts", clients[0])
        self.assertEqual(clients[1]["pub_counts"], [{"topic": "u", "count": 1}])
        producers = document["producers"]
        self.assertEqual([p["remote_address"] for p in producers], ["127.0.0.1:2000", "127.0.0.1:3000"])
        self.assertEqual(producers[0]["client_id"], "127.0.0.1")
        filtered = stats_json(self.nsqd, topic="t", include_mem=False)
        self.assertEqual(len(filtered["producers"]), 2)
        self.assertEqual(filtered["producers"][0]["pub_counts"], [{"topic": "t", "count": 1}])
        self.assertNotIn("pub_counts", filtered["producers"][1])
        without = stats_json(self.nsqd, include_clients=False, include_mem=False)
        self.assertIsNone(without["topics"][0]["channels"][0]["clients"])
        self.assertEqual(without["topics"][0]["channels"][0]["client_count"], 2)
        self.assertIsNone(without["producers"])


class TextTests(Base):
    def test_page(self) -> None:
        consumer = LoopbackClient(self.nsqd, port=39644)
        consumer.identify(client_id="cons", hostname="cons.host", user_agent="ua/1")
        consumer.subscribe("t1", "ch1", rdy=2)
        self.nsqd.get_topic("t1").get_channel("ch2").pause()
        producer = LoopbackClient(self.nsqd, port=50000)
        for body in (b"abc", b"de", b"f"):
            producer.command("PUB t1", body)
        self.nsqd.get_topic("zz").pause()
        self.clock.advance(21.5)
        self.assertEqual(
            stats_text(self.nsqd, include_mem=False),
            version_line() + "\n"
            "start_time 2023-11-14T22:13:20Z\n"
            "uptime 21.5s\n"
            "\n"
            "Health: OK\n"
            "\n"
            "Topics:\n"
            "   [t1             ] depth: 0     be-depth: 0     msgs: 3        e2e%: \n"
            "      [ch1                      ] depth: 1     be-depth: 0     inflt: 2    def: 0    "
            "re-q: 0     timeout: 0     msgs: 3        e2e%: \n"
            "        [V2 cons.host:39644 ua/1 ] state: 3 inflt: 2    rdy: 2    fin: 0        "
            "re-q: 0        msgs: 2        connected: 21s\n"
            "   *P [ch2                      ] depth: 3     be-depth: 0     inflt: 0    def: 0    "
            "re-q: 0     timeout: 0     msgs: 3        e2e%: \n"
            "\n"
            "*P [zz             ] depth: 0     be-depth: 0     msgs: 0        e2e%: \n"
            "\n"
            "Producers:\n"
            "   [V2 127.0.0.1:50000      ] msgs: 3        topics: t1=3 connected: 21s\n",
        )

    def test_empty_page(self) -> None:
        self.clock.advance(3723.004)
        text = stats_text(self.nsqd)
        self.assertTrue(
            text.startswith(version_line() + "\nstart_time 2023-11-14T22:13:20Z\nuptime 1h2m3.00")
        )
        self.assertIn("\nMemory:\n   heap_objects             \t", text)
        self.assertTrue(text.endswith("\nTopics: None\n\nProducers: None\n"))
        self.assertNotIn("Memory", stats_text(self.nsqd, include_mem=False))

    def test_version_line(self) -> None:
        self.assertRegex(version_line(), r"^nsqd v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\S*\)$")
        self.assertTrue(version_line("nsqlookupd").startswith("nsqlookupd v1.3.0-twisted "))


class MemoryTests(SynchronousTestCase):
    def test_shape(self) -> None:
        memory = memory_stats()
        self.assertEqual(
            list(memory),
            [
                "heap_objects",
                "heap_idle_bytes",
                "heap_in_use_bytes",
                "heap_released_bytes",
                "gc_pause_usec_100",
                "gc_pause_usec_99",
                "gc_pause_usec_95",
                "next_gc_bytes",
                "gc_total_runs",
            ],
        )
        self.assertTrue(all(isinstance(v, int) and v >= 0 for v in memory.values()))
        self.assertGreater(memory["heap_objects"], 0)
        self.assertGreater(memory["heap_in_use_bytes"], 0)


def message_at(ns: int) -> Message:
    return Message(b"0" * 16, b"x", ns)


class E2ELatencyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def stream(self, capacity: int = 1024) -> E2ELatency:
        return E2ELatency(self.clock, 600.0, [0.5, 0.99, 1.0], random.Random(1), capacity)

    def insert(self, stream: E2ELatency, latency_ns: int) -> None:
        stream.insert(message_at(int(self.clock.seconds() * 1_000_000_000) - latency_ns))

    def test_empty(self) -> None:
        self.assertEqual(
            self.stream().result(),
            {
                "count": 0,
                "percentiles": [
                    {"quantile": 0.5, "value": 0},
                    {"quantile": 0.99, "value": 0},
                    {"quantile": 1, "value": 0},
                ],
            },
        )

    def test_quantiles(self) -> None:
        stream = self.stream()
        for ms in range(1, 101):
            self.insert(stream, ms * 1_000_000)
        result = stream.result()
        self.assertEqual(result["count"], 100)
        self.assertEqual([p["value"] for p in result["percentiles"]], [50_000_000, 99_000_000, 100_000_000])

    def test_windows_rotate(self) -> None:
        stream = self.stream()
        self.insert(stream, 5)
        self.clock.advance(301)
        self.insert(stream, 7)
        self.assertEqual(stream.result()["count"], 2)
        self.clock.advance(300)
        self.assertEqual(stream.result()["count"], 1)
        self.assertEqual(stream.result()["percentiles"][2]["value"], 7)
        self.clock.advance(10_000)
        self.assertEqual(stream.result()["count"], 0)
        self.insert(stream, 9)
        self.assertEqual(stream.result()["count"], 1)

    def test_bounded_sample(self) -> None:
        stream = self.stream(capacity=50)
        for value in range(1000):
            self.insert(stream, value)
        result = stream.result()
        self.assertEqual(result["count"], 1000)
        count, pairs = stream.weighted_samples()
        self.assertEqual((count, len(pairs)), (1000, 50))
        self.assertAlmostEqual(sum(weight for _, weight in pairs), 1000.0)
        median = result["percentiles"][0]["value"]
        self.assertTrue(200 < median < 800, median)


class TrackerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)

    def test_disabled(self) -> None:
        nsqd = make_nsqd(self.clock)
        tracker = E2ELatencyTracker(nsqd)
        tracker.install()
        self.assertFalse(tracker.enabled)
        self.assertEqual(nsqd.observers, [])
        channel = nsqd.get_topic("t").get_channel("c")
        self.assertEqual(channel.on_finish, [])
        self.assertEqual(tracker.channel_result(channel), {"count": 0, "percentiles": None})

    def test_tracks_existing_and_new_channels(self) -> None:
        nsqd = make_nsqd(self.clock, e2e_processing_latency_percentiles=[1.0])
        nsqd.get_topic("t").get_channel("old")
        tracker = E2ELatencyTracker(nsqd)
        tracker.install()
        tracker.install()
        self.assertEqual(nsqd.observers, [tracker])
        topic = nsqd.get_topic("t")
        self.assertEqual(len(topic.channels["old"].on_finish), 1)
        topic.get_channel("new")
        self.assertEqual(len(topic.channels["new"].on_finish), 1)
        # A topic with no channels has nothing to merge.
        self.assertEqual(tracker.topic_result(nsqd.get_topic("empty")), {"count": 0, "percentiles": None})
        self.assertEqual(
            tracker.topic_result(topic), {"count": 0, "percentiles": [{"quantile": 1, "value": 0}]}
        )

    def test_topic_merges_channels(self) -> None:
        nsqd = make_nsqd(self.clock, e2e_processing_latency_percentiles=[0.5, 1.0])
        tracker = E2ELatencyTracker(nsqd)
        tracker.install()
        a = LoopbackClient(nsqd, port=1)
        a.subscribe("t", "a", rdy=10)
        b = LoopbackClient(nsqd, port=2)
        b.subscribe("t", "b", rdy=10)
        nsqd.get_topic("t").publish([b"x"])
        nsqd.run_dispatch()
        self.clock.advance(1)
        (message,) = a.messages()
        a.command("FIN " + message.id.decode())
        self.clock.advance(2)
        (message,) = b.messages()
        b.command("FIN " + message.id.decode())
        topic = nsqd.get_topic("t")
        self.assertEqual(
            tracker.channel_result(topic.channels["a"]),
            {"count": 1, "percentiles": [{"quantile": 0.5, "value": 10**9}, {"quantile": 1, "value": 10**9}]},
        )
        self.assertEqual(
            tracker.topic_result(topic),
            {
                "count": 2,
                "percentiles": [{"quantile": 0.5, "value": 10**9}, {"quantile": 1, "value": 3 * 10**9}],
            },
        )
        document = stats_json(nsqd, include_mem=False, latency=tracker)
        self.assertEqual(document["topics"][0]["e2e_processing_latency"]["count"], 2)
        # Exactly one second is not "> 1s" for Go's NanoSecondToHuman.
        self.assertIn("e2e%: 1000.0ms, 3.0s\n", stats_text(nsqd, include_mem=False, latency=tracker))
        channel = topic.channels["a"]
        topic.delete_channel("a")
        self.assertEqual(channel.on_finish, [])
        self.assertEqual(tracker.channel_result(channel), {"count": 0, "percentiles": None})
