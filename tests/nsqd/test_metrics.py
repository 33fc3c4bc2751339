"""Tests for L{twisted_nsq.nsqd.metrics}: the Prometheus collector, its registry and C{/metrics}."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_http_helpers import call
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.metrics import NSQDCollector, PrometheusMetrics
from twisted_nsq.nsqd.stats import E2ELatencyTracker
from twisted_nsq.testing import LoopbackClient, make_nsqd

START = 1_700_000_000
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def families(text: str) -> dict[str, str]:
    """Family name -> type."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


class CollectorBase(SynchronousTestCase):
    overrides: dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.nsqd = make_nsqd(self.clock, **self.overrides)
        self.latency = E2ELatencyTracker(self.nsqd)
        self.latency.install()
        self.metrics = PrometheusMetrics(self.nsqd, self.latency, process=False)

    def scrape(self) -> Samples:
        body, content_type = self.metrics.render(None)
        self.assertEqual(content_type, TEXT_FORMAT)
        return samples(body.decode("utf-8"))


class CollectorTests(CollectorBase):
    def test_empty(self) -> None:
        scraped = self.scrape()
        self.assertEqual(
            scraped,
            {
                (
                    "nsq_nsqd_info",
                    (
                        ("broadcast_address", "testhost"),
                        ("build", VERSION_STRING),
                        ("node_id", "1"),
                        ("version", "1.3.0"),
                    ),
                ): 1.0,
                ("nsq_start_time_seconds", ()): float(START),
                ("nsq_healthy", ()): 1.0,
                ("nsq_clients", ()): 0.0,
            },
        )
        self.nsqd.set_health("disk full")
        self.assertEqual(self.scrape()[("nsq_healthy", ())], 0.0)

    def test_topic_and_channel(self) -> None:
        topic = self.nsqd.get_topic("t")
        topic.get_channel("c")
        topic.get_channel("idle").pause()
        client = LoopbackClient(self.nsqd)
        client.identify(msg_timeout=5000)
        client.subscribe("t", "c", rdy=2)
        topic.publish([b"a", b"bb", b"ccc"])
        topic.publish([b"later"], defer=60.0)
        self.nsqd.run_dispatch()
        first, _second = client.messages()
        client.command(f"REQ {first.id.decode()} 0")
        client.frames()
        self.clock.advance(6)
        scraped = self.scrape()
        t = (("topic", "t"),)
        c = (("channel", "c"), ("topic", "t"))
        idle = (("channel", "idle"), ("topic", "t"))
        expected = {
            ("nsq_topic_messages_total", t): 4.0,
            ("nsq_topic_message_bytes_total", t): 11.0,
            ("nsq_topic_depth", t): 0.0,
            ("nsq_topic_backend_depth", t): 0.0,
            ("nsq_topic_paused", t): 0.0,
            ("nsq_topic_channels", t): 2.0,
            ("nsq_channel_messages_total", c): 4.0,
            ("nsq_channel_requeues_total", c): 1.0,
            ("nsq_channel_timeouts_total", c): 2.0,
            ("nsq_channel_in_flight", c): 2.0,
            ("nsq_channel_deferred", c): 1.0,
            ("nsq_channel_depth", c): 1.0,
            ("nsq_channel_backend_depth", c): 0.0,
            ("nsq_channel_clients", c): 1.0,
            ("nsq_channel_paused", c): 0.0,
            ("nsq_channel_paused", idle): 1.0,
            ("nsq_channel_depth", idle): 3.0,
            ("nsq_channel_deferred", idle): 1.0,
            ("nsq_clients", ()): 1.0,
        }
        for key, value in expected.items():
            self.assertEqual(scraped.get(key), value, key)
        # No latency without --e2e-processing-latency-percentile.
        self.assertFalse([key for key in scraped if "latency" in key[0]])

    def test_types(self) -> None:
        self.nsqd.get_topic("t").get_channel("c")
        body, _ = self.metrics.render(None)
        types = families(body.decode("utf-8"))
        for name in (
            "nsq_topic_messages",
            "nsq_topic_message_bytes",
            "nsq_channel_messages",
            "nsq_channel_requeues",
            "nsq_channel_timeouts",
        ):
            self.assertEqual(types[name], "counter", name)
        for name in (
            "nsq_topic_depth",
            "nsq_topic_backend_depth",
            "nsq_channel_depth",
            "nsq_channel_in_flight",
            "nsq_channel_deferred",
            "nsq_channel_clients",
            "nsq_channel_paused",
        ):
            self.assertEqual(types[name], "gauge", name)
        # The text format has no info type: an info family is a gauge of 1 named *_info.
        self.assertEqual(types["nsq_nsqd_info"], "gauge")

    def test_deleted_topic_disappears(self) -> None:
        self.nsqd.get_topic("gone").get_channel("c")
        self.assertIn(("nsq_topic_depth", (("topic", "gone"),)), self.scrape())
        self.nsqd.delete_topic("gone")
        self.assertFalse([key for key in self.scrape() if key[0].startswith(("nsq_topic", "nsq_channel"))])

    def test_label_escaping(self) -> None:
        self.nsqd.get_topic("a.b-c_d#ephemeral").get_channel("x#ephemeral")
        key = ("nsq_channel_clients", (("channel", "x#ephemeral"), ("topic", "a.b-c_d#ephemeral")))
        self.assertEqual(self.scrape()[key], 0.0)

    def test_openmetrics(self) -> None:
        self.nsqd.get_topic("t").publish([b"x"])
        body, content_type = self.metrics.render("application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertIn(b'nsq_topic_messages_total{topic="t"} 1.0\n', body)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_own_registry(self) -> None:
        second = PrometheusMetrics(make_nsqd(Clock()), process=True)
        self.assertIsNot(second.registry, REGISTRY)
        self.assertIsNone(REGISTRY.get_sample_value("nsq_healthy"))
        self.assertEqual(second.registry.get_sample_value("nsq_healthy"), 1.0)
        self.assertEqual(self.metrics.registry.get_sample_value("nsq_healthy"), 1.0)

    def test_process_metrics(self) -> None:
        metrics = PrometheusMetrics(self.nsqd, process=True)
        body, _ = metrics.render(None)
        names = families(body.decode("utf-8"))
        self.assertIn("python_gc_objects_collected", names)
        self.assertIn("python_info", names)
        self.assertIn("process_resident_memory_bytes", names)
        self.assertIn("nsq_healthy", names)

    def test_collector_reads_live(self) -> None:
        collector = NSQDCollector(self.nsqd)
        topic = self.nsqd.get_topic("t")
        topic.publish([b"x"])
        first = {f.name: f for f in collector.collect()}
        topic.publish([b"y"])
        second = {f.name: f for f in collector.collect()}
        self.assertEqual(first["nsq_topic_messages"].samples[0].value, 1)
        self.assertEqual(second["nsq_topic_messages"].samples[0].value, 2)


class LatencyTests(CollectorBase):
    overrides = {"e2e_processing_latency_percentiles": [0.99, 0.5]}

    def test_quantiles(self) -> None:
        client = LoopbackClient(self.nsqd)
        client.subscribe("t", "c", rdy=5)
        self.nsqd.get_topic("t").publish([b"a", b"b"])
        self.nsqd.run_dispatch()
        self.clock.advance(1.5)
        for message in client.messages():
            client.command("FIN " + message.id.decode())
        scraped = self.scrape()
        for quantile in ("0.99", "0.5"):
            key = ("nsq_topic_e2e_processing_latency_seconds", (("quantile", quantile), ("topic", "t")))
            self.assertEqual(scraped[key], 1.5)
            labels = (("channel", "c"), ("quantile", quantile), ("topic", "t"))
            self.assertEqual(scraped[("nsq_channel_e2e_processing_latency_seconds", labels)], 1.5)


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.nsqd = make_nsqd(self.clock)
        self.stub = StubTreq(NSQDHTTP(self.nsqd).resource())

    def test_get(self) -> None:
        self.nsqd.get_topic("t").publish([b"hello"])
        reply = call(self.stub, "GET", "/metrics")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header(b"Content-Type"), [TEXT_FORMAT.encode()])
        # Not an NSQ endpoint: no V1 header.
        self.assertIsNone(reply.header(b"X-NSQ-Content-Type"))
        scraped = samples(reply.body.decode("utf-8"))
        self.assertEqual(scraped[("nsq_topic_message_bytes_total", (("topic", "t"),))], 5.0)
        self.assertIn(("python_info", ()), {(name, ()) for name, _ in scraped})

    def test_openmetrics_negotiated(self) -> None:
        stub: Any = self.stub
        d = stub.get(
            "http://nsqd.test/metrics", headers={b"Accept": [b"application/openmetrics-text; version=1.0.0"]}
        )
        stub.flush()
        response = self.successResultOf(d)
        self.assertTrue(
            response.headers.getRawHeaders(b"Content-Type")[0].startswith(b"application/openmetrics-text")
        )
        body = self.successResultOf(stub.content(response))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_method(self) -> None:
        reply = call(self.stub, "POST", "/metrics")
        self.assertEqual((reply.code, reply.body), (405, b'{"message":"METHOD_NOT_ALLOWED"}'))

    def test_shares_latency_tracker(self) -> None:
        nsqd = make_nsqd(self.clock, e2e_processing_latency_percentiles=[0.5])
        app = NSQDHTTP(nsqd)
        self.assertIs(app.metrics.collector.latency, app.latency)
