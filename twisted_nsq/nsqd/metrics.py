"""
Prometheus metrics for nsqd (beyond NSQ): what C{/stats} shows, in Prometheus' shapes.

L{NSQDCollector} reads the live stats when it is scraped, on the reactor thread that runs the
HTTP request (no background thread, no copies kept between scrapes); topics and channels that no
longer exist simply stop appearing. Counters are Prometheus counters (C{*_total}), current sizes
are gauges, end-to-end latency percentiles are gauges labelled by C{quantile}. L{PrometheusMetrics}
puts it in a registry of its own, next to the client library's process, Python GC and platform
collectors, and renders the exposition text for C{GET /metrics}.

The metric list is in docs/extensions/prometheus.md.

prometheus_client is imported when C{/metrics} is first scraped (L{PrometheusMetrics.render}), not
when nsqd starts: an nsqd nobody scrapes never loads it (docs/performance.md, "Idle memory").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

from twisted_nsq._runtime import restore_stdlib_tls
from twisted_nsq._version import NSQ_VERSION, VERSION_STRING
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.stats import E2ELatencyTracker, stats_json

_TOPIC = ["topic"]
_CHANNEL = ["topic", "channel"]


class NSQDCollector:
    """A Prometheus collector over one nsqd's live stats (see the module docstring)."""

    def __init__(self, nsqd: NSQD, latency: E2ELatencyTracker | None = None) -> None:
        self.nsqd = nsqd
        self.latency = latency

    def collect(self) -> Iterable[Metric]:
        """Every nsqd metric family, read now."""
        from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily

        nsqd = self.nsqd
        document = stats_json(nsqd, include_clients=False, include_mem=False, latency=self.latency)
        info = InfoMetricFamily(
            "nsq_nsqd",
            "This nsqd: the NSQ version it speaks, its build and its node ID.",
            value={
                "version": NSQ_VERSION,
                "build": VERSION_STRING,
                "node_id": str(nsqd.options.node_id),
                "broadcast_address": nsqd.options.broadcast_address,
            },
        )
        start = GaugeMetricFamily(
            "nsq_start_time_seconds", "When nsqd started, in seconds since the epoch.", value=nsqd.start_time
        )
        healthy = GaugeMetricFamily(
            "nsq_healthy",
            "1 while /ping answers OK, 0 after a storage error (see /ping for the error).",
            value=1 if nsqd.is_healthy() else 0,
        )
        clients = GaugeMetricFamily(
            "nsq_clients", "TCP client connections (consumers and producers).", value=len(nsqd.clients)
        )
        topics = _topic_families()
        channels = _channel_families()
        for topic in document["topics"] or ():
            topics.add([topic["topic_name"]], topic)
            for channel in topic["channels"]:
                channels.add([topic["topic_name"], channel["channel_name"]], channel)
        return [info, start, healthy, clients, *topics.families(), *channels.families()]


def _quantile_samples(latency: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [
        (repr(float(p["quantile"])), p["value"] / 1_000_000_000) for p in latency.get("percentiles") or ()
    ]


#: A per-topic or per-channel family: counter or gauge, name, help, and its value from the stats entry.
_FamilySpec = tuple[Literal["counter", "gauge"], str, str, Callable[[Mapping[str, Any]], float]]


def _field(key: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda stats: stats[key]


def _paused(stats: Mapping[str, Any]) -> float:
    return 1 if stats["paused"] else 0


_TOPIC_FAMILIES: tuple[_FamilySpec, ...] = (
    ("counter", "nsq_topic_messages", "Messages published to the topic.", _field("message_count")),
    ("counter", "nsq_topic_message_bytes", "Body bytes published to the topic.", _field("message_bytes")),
    ("gauge", "nsq_topic_depth", "Messages the topic holds (memory and disk).", _field("depth")),
    ("gauge", "nsq_topic_backend_depth", "Messages the topic holds on disk.", _field("backend_depth")),
    ("gauge", "nsq_topic_paused", "1 while the topic is paused.", _paused),
    ("gauge", "nsq_topic_channels", "Channels of the topic.", lambda stats: len(stats["channels"])),
)

_CHANNEL_FAMILIES: tuple[_FamilySpec, ...] = (
    (
        "counter",
        "nsq_channel_messages",
        "Messages put into the channel (requeues not counted).",
        _field("message_count"),
    ),
    ("counter", "nsq_channel_requeues", "Messages requeued by clients (REQ).", _field("requeue_count")),
    ("counter", "nsq_channel_timeouts", "In-flight messages that timed out.", _field("timeout_count")),
    ("gauge", "nsq_channel_depth", "Messages waiting in the channel (memory and disk).", _field("depth")),
    (
        "gauge",
        "nsq_channel_backend_depth",
        "Messages waiting in the channel on disk.",
        _field("backend_depth"),
    ),
    (
        "gauge",
        "nsq_channel_in_flight",
        "Messages sent to clients and not yet finished.",
        _field("in_flight_count"),
    ),
    (
        "gauge",
        "nsq_channel_deferred",
        "Deferred messages (DPUB, REQ with a delay).",
        _field("deferred_count"),
    ),
    ("gauge", "nsq_channel_clients", "Subscribed clients.", _field("client_count")),
    ("gauge", "nsq_channel_paused", "1 while the channel is paused.", _paused),
)


class _Families:
    """The families of one kind of stats entry (topic or channel), plus its latency quantiles."""

    def __init__(
        self, specs: tuple[_FamilySpec, ...], labels: list[str], latency_name: str, latency_help: str
    ) -> None:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        self._values = [value for _, _, _, value in specs]
        self._families: list[CounterMetricFamily | GaugeMetricFamily] = [
            (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, documentation, labels=labels
            )
            for kind, name, documentation, _ in specs
        ]
        self._latency = GaugeMetricFamily(latency_name, latency_help, labels=[*labels, "quantile"])

    def add(self, labels: list[str], stats: Mapping[str, Any]) -> None:
        for family, value in zip(self._families, self._values, strict=True):
            family.add_metric(labels, value(stats))
        for quantile, seconds in _quantile_samples(stats["e2e_processing_latency"]):
            self._latency.add_metric([*labels, quantile], seconds)

    def families(self) -> list[Metric]:
        return [*self._families, self._latency]


def _topic_families() -> _Families:
    return _Families(
        _TOPIC_FAMILIES,
        _TOPIC,
        "nsq_topic_e2e_processing_latency_seconds",
        "End-to-end latency (publish to FIN) percentiles over the topic's channels, for "
        "--e2e-processing-latency-percentile.",
    )


def _channel_families() -> _Families:
    return _Families(
        _CHANNEL_FAMILIES,
        _CHANNEL,
        "nsq_channel_e2e_processing_latency_seconds",
        "End-to-end latency (publish to FIN) percentiles of the channel, for "
        "--e2e-processing-latency-percentile.",
    )


class PrometheusMetrics:
    """
    The C{/metrics} document of one nsqd: L{NSQDCollector} plus process metrics, in a registry
    of its own (the client library's global default registry is never touched, so several nsqds
    in one process, as in tests, each report only themselves).

    @param process: also register the C{process_*} (Linux C{/proc}), C{python_gc_*} and
        C{python_info} collectors.
    """

    def __init__(self, nsqd: NSQD, latency: E2ELatencyTracker | None = None, process: bool = True) -> None:
        self.collector = NSQDCollector(nsqd, latency)
        self._process = process
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The registry scrapes read, built (and prometheus_client imported) on first use."""
        if self._registry is None:
            restore_stdlib_tls()
            from prometheus_client.gc_collector import GCCollector
            from prometheus_client.platform_collector import PlatformCollector
            from prometheus_client.process_collector import ProcessCollector
            from prometheus_client.registry import CollectorRegistry

            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.collector)
            if self._process:
                ProcessCollector(registry=registry)
                GCCollector(registry=registry)
                PlatformCollector(registry=registry)
            self._registry = registry
        return self._registry

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """
        The exposition for a scrape with this C{Accept} header, and its C{Content-Type}.

        Prometheus' text format (C{text/plain; version=0.0.4}) unless the scraper asks for
        OpenMetrics.
        """
        restore_stdlib_tls()
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
