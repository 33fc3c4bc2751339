"""
nsqd's C{/stats}: the JSON document and the text page, and end-to-end latency percentiles.

The JSON keeps Go nsqd 1.3.0's shape: its key order (Go marshals struct fields in declaration
order, so a topic's C{channels} come right after C{topic_name}), topics and channels sorted by
name, C{[]} versus C{null} where Go has an empty versus a nil slice, and C{producers} not
filtered by topic.

E2E processing latency (C{--e2e-processing-latency-percentile}) is tracked per channel by an
L{E2ELatency} fed from C{Channel.on_finish}: two windows, each covering half of
C{--e2e-processing-latency-window-time}, rotated like Go's. Go keeps "biased quantile" streams;
we keep a bounded uniform sample of each window with its true count, and answer weighted
quantiles from it.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import random
import resource
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from twisted_nsq._gofmt import go_duration
from twisted_nsq._httputil import go_number
from twisted_nsq._version import NSQ_VERSION, VERSION_STRING
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.nsqd import INSQDObserver
from twisted_nsq.nsqd.topic import Topic

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from twisted_nsq.nsqd.nsqd import NSQD

#: Samples kept per window; enough for stable 99th percentiles at modest memory.
SAMPLES_PER_WINDOW = 1024

#: The Go runtime memory gauges /stats reports (and statsd sends as C{mem.*}), in order.
MEMORY_GAUGES = (
    "heap_objects",
    "heap_idle_bytes",
    "heap_in_use_bytes",
    "heap_released_bytes",
    "gc_pause_usec_100",
    "gc_pause_usec_99",
    "gc_pause_usec_95",
    "next_gc_bytes",
)
_MEMORY_KEYS = (*MEMORY_GAUGES, "gc_total_runs")


def version_line(app: str = "nsqd") -> str:
    """The version banner, as Go's C{version.String(app)}: C{nsqd v1.3.0-twisted (built w/python3.11.7)}."""
    return f"{app} v{VERSION_STRING} (built w/python{platform.python_version()})"


# -- e2e latency --------------------------------------------------------------------------------


def _disabled() -> dict[str, Any]:
    return {"count": 0, "percentiles": None}


class E2ELatency:
    """
    The end-to-end processing latency of one channel: publish to FIN, in nanoseconds.

    Two windows of half the window time each; the older one is dropped when a new one starts.
    Each window keeps its count and a uniform sample (reservoir) of at most L{SAMPLES_PER_WINDOW}
    latencies.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window_time: float,
        percentiles: list[float],
        rng: random.Random,
        capacity: int = SAMPLES_PER_WINDOW,
    ) -> None:
        self._clock = clock
        self._move_time = window_time / 2
        self.percentiles = percentiles
        self._random = rng
        self._capacity = capacity
        self._samples: list[list[int]] = [[], []]
        self._counts = [0, 0]
        self._current = 0
        self._last_move = clock.seconds()

    def _rotate(self, now: float) -> None:
        move = self._move_time
        if move <= 0:
            return
        steps = 0
        while now > self._last_move + move:
            steps += 1
            if steps > 2:
                # Idle for longer than the whole window: both windows are stale.
                self._last_move += ((now - self._last_move) // move) * move
                break
            self._current ^= 1
            self._samples[self._current] = []
            self._counts[self._current] = 0
            self._last_move += move

    def insert(self, message: Message) -> None:
        """Record a finished message (hook this into C{Channel.on_finish})."""
        now = self._clock.seconds()
        if now > self._last_move + self._move_time:
            self._rotate(now)
        latency = int(now * 1_000_000_000) - message.timestamp
        index = self._current
        samples = self._samples[index]
        self._counts[index] += 1
        if len(samples) < self._capacity:
            samples.append(latency)
        else:
            slot = self._random.randrange(self._counts[index])
            if slot < self._capacity:
                samples[slot] = latency

    def weighted_samples(self) -> tuple[int, list[tuple[int, float]]]:
        """The observation count and (latency, weight) pairs of both windows, each weight the
        number of observations a sample stands for."""
        self._rotate(self._clock.seconds())
        pairs: list[tuple[int, float]] = []
        for samples, count in zip(self._samples, self._counts, strict=True):
            if samples:
                weight = count / len(samples)
                pairs.extend((value, weight) for value in samples)
        return sum(self._counts), pairs

    def result(self) -> dict[str, Any]:
        """C{{"count":N,"percentiles":[{"quantile":q,"value":ns},...]}} as /stats shows it."""
        return quantile_result(self.percentiles, [self])


def quantile_result(percentiles: list[float], streams: Iterable[E2ELatency]) -> dict[str, Any]:
    """The /stats latency object over the merged samples of C{streams} (a channel, or a topic's)."""
    total = 0
    pairs: list[tuple[int, float]] = []
    for stream in streams:
        count, more = stream.weighted_samples()
        total += count
        pairs.extend(more)
    pairs.sort()
    weight_sum = sum(weight for _, weight in pairs)
    out = []
    for quantile in percentiles:
        value = 0
        if pairs:
            target = quantile * weight_sum
            running = 0.0
            value = pairs[-1][0]
            for sample, weight in pairs:
                running += weight
                if running >= target:
                    value = sample
                    break
        out.append({"quantile": go_number(quantile), "value": value})
    return {"count": total, "percentiles": out}


@implementer(INSQDObserver)
class E2ELatencyTracker:
    """
    Keeps an L{E2ELatency} for every channel of an nsqd while percentiles are configured.

    Create one per nsqd, L{install} it, and hand it to every C{/stats} (HTTP and HTTPS) and to
    statsd, so each FIN is counted once.
    """

    def __init__(self, nsqd: NSQD) -> None:
        self._nsqd = nsqd
        options = nsqd.options
        self.percentiles: list[float] = list(options.e2e_processing_latency_percentiles)
        self._window_time = float(options.e2e_processing_latency_window_time)
        self._streams: dict[Channel, E2ELatency] = {}
        self._installed = False

    @property
    def enabled(self) -> bool:
        return bool(self.percentiles)

    def install(self) -> None:
        """Start tracking: existing channels now, new ones as they are created. Idempotent."""
        if self._installed or not self.enabled:
            return
        self._installed = True
        self._nsqd.observers.append(self)
        for topic in list(self._nsqd.topics.values()):
            for channel in list(topic.channels.values()):
                self.channel_created(topic, channel)

    def topic_created(self, topic: Topic) -> None:
        """Nothing to do: channels are tracked, topics merge them."""

    def topic_deleted(self, topic: Topic) -> None:
        """Nothing to do: each deleted channel is reported on its own."""

    def channel_created(self, topic: Topic, channel: Channel) -> None:
        if channel in self._streams:
            return
        stream = E2ELatency(self._nsqd.clock, self._window_time, self.percentiles, self._nsqd.random)
        self._streams[channel] = stream
        channel.on_finish.append(stream.insert)

    def channel_deleted(self, topic: Topic, channel: Channel) -> None:
        stream = self._streams.pop(channel, None)
        if stream is not None and stream.insert in channel.on_finish:
            channel.on_finish.remove(stream.insert)

    def metadata_changed(self) -> None:
        """Nothing to do: pauses do not change what is tracked."""

    def channel_result(self, channel: Channel) -> dict[str, Any]:
        """A channel's latency object (C{{"count":0,"percentiles":null}} when not tracked)."""
        stream = self._streams.get(channel)
        if stream is None:
            return _disabled()
        return stream.result()

    def topic_result(self, topic: Topic) -> dict[str, Any]:
        """The merge of a topic's channels; null percentiles when it has none (as Go)."""
        streams = [s for c in topic.channels.values() if (s := self._streams.get(c)) is not None]
        if not streams:
            return _disabled()
        return quantile_result(self.percentiles, streams)


# -- memory -------------------------------------------------------------------------------------


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Peak rather than current, but the best the portable API offers (KiB on Linux).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_stats() -> dict[str, int]:
    """
    The C{memory} block, with Python stand-ins under Go's runtime names.

    C{heap_objects}: memory blocks allocated by CPython's allocator; C{heap_in_use_bytes}: the
    resident set size; C{gc_total_runs}: collections over all generations. The Go-only figures
    (idle and released heap, GC pauses, next GC target) are 0.
    """
    values = dict.fromkeys(_MEMORY_KEYS, 0)
    values["heap_objects"] = sys.getallocatedblocks()
    values["heap_in_use_bytes"] = _resident_bytes()
    values["gc_total_runs"] = sum(generation["collections"] for generation in gc.get_stats())
    return values


# -- the JSON document --------------------------------------------------------------------------


def _client_stats(client: Any, topic_filter: str | None) -> dict[str, Any]:
    stats: dict[str, Any] = client.client_stats()
    if topic_filter and "pub_counts" in stats:
        # Go's Stats(topic) keeps only the filtered topic's count (or none) in pub_counts.
        count = client.pub_counts.get(topic_filter)
        rebuilt: dict[str, Any] = {}
        for key, value in stats.items():
            if key != "pub_counts":
                rebuilt[key] = value
            elif count is not None:
                rebuilt[key] = [{"topic": topic_filter, "count": count}]
        stats = rebuilt
    return stats


def _producers(nsqd: NSQD, topic_filter: str | None) -> list[dict[str, Any]] | None:
    producers = [
        _client_stats(client, topic_filter)
        for _, client in sorted(nsqd.clients.items())
        if getattr(client, "pub_counts", None)
    ]
    return producers or None


def _channel_stats(
    channel: Channel, include_clients: bool, topic_filter: str | None, latency: E2ELatencyTracker | None
) -> dict[str, Any]:
    clients: list[dict[str, Any]] | None = None
    if include_clients:
        clients = [_client_stats(c, topic_filter) for c in channel.clients.values()]
    stats: dict[str, Any] = {
        "channel_name": channel.name,
        "depth": channel.depth(),
        "backend_depth": channel.backend_depth(),
        "in_flight_count": len(channel.in_flight),
        "deferred_count": channel.deferred_count(),
        "message_count": channel.message_count,
        "requeue_count": channel.requeue_count,
        "timeout_count": channel.timeout_count,
        "client_count": len(channel.clients),
        "clients": clients,
        "paused": channel.paused,
        "e2e_processing_latency": latency.channel_result(channel) if latency else _disabled(),
    }
    if channel.ordered:
        # Beyond NSQ (docs/extensions/ordered.md): only when on, so ordinary channels keep Go's shape.
        stats["ordered"] = True
        if channel.order_key:
            stats["order_key"] = channel.order_key
            stats["order_pending"] = channel.pending_count()
    return stats


def _topic_stats(
    topic: Topic, channels: list[dict[str, Any]], latency: E2ELatencyTracker | None
) -> dict[str, Any]:
    return {
        "topic_name": topic.name,
        "channels": channels,
        "depth": topic.depth(),
        "backend_depth": topic.backend_depth(),
        "message_count": topic.message_count,
        "message_bytes": topic.message_bytes,
        "paused": topic.paused,
        "e2e_processing_latency": latency.topic_result(topic) if latency else _disabled(),
    }


def _topics_and_producers(
    nsqd: NSQD,
    topic: str | None,
    channel: str | None,
    include_clients: bool,
    latency: E2ELatencyTracker | None,
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    if topic:
        found = nsqd.topics.get(topic)
        if found is None:
            # Go returns its zero Stats here: both lists nil, producers included.
            return None, None
        topics = [found]
    else:
        topics = [nsqd.topics[name] for name in sorted(nsqd.topics)]
    out = []
    for t in topics:
        if channel:
            only = t.channels.get(channel)
            if only is None:
                continue
            selected = [only]
        else:
            selected = [t.channels[name] for name in sorted(t.channels)]
        channels = [_channel_stats(c, include_clients, topic, latency) for c in selected]
        out.append(_topic_stats(t, channels, latency))
    producers = _producers(nsqd, topic) if include_clients else None
    return out, producers


def stats_json(
    nsqd: NSQD,
    topic: str | None = None,
    channel: str | None = None,
    include_clients: bool = True,
    include_mem: bool = True,
    latency: E2ELatencyTracker | None = None,
) -> dict[str, Any]:
    """
    C{/stats?format=json}: the document nsqd 1.3.0 returns, as a dict in Go's key order.

    C{topic}/C{channel} filter (an empty string means no filter). C{topics} is null when the
    topic filter matches nothing; C{clients} is null without C{include_clients}; C{producers} is
    null when there are none or without C{include_clients}; C{memory} is left out without
    C{include_mem}.
    """
    topics, producers = _topics_and_producers(nsqd, topic, channel, include_clients, latency)
    document: dict[str, Any] = {
        "version": NSQ_VERSION,
        "health": nsqd.health(),
        "start_time": nsqd.start_time,
        "topics": topics,
    }
    if include_mem:
        document["memory"] = memory_stats()
    document["producers"] = producers
    return document


# -- the text page ------------------------------------------------------------------------------


def _human_ns(value: float) -> str:
    if value > 1_000_000_000:
        return f"{value / 1_000_000_000:0.1f}s"
    if value > 1_000_000:
        return f"{value / 1_000_000:0.1f}ms"
    if value > 1_000:
        return f"{value / 1_000:0.1f}us"
    return f"{value:0.1f}ns"


def _latency_text(result: dict[str, Any]) -> str:
    return ", ".join(_human_ns(p["value"]) for p in result["percentiles"] or ())


def _client_line(client: dict[str, Any], now: float) -> str:
    connected = go_duration(max(0, int(now) - int(client["connect_ts"])) * 1_000_000_000)
    _, _, port = str(client["remote_address"]).rpartition(":")
    ident = f"{client['hostname']}:{port} {client['user_agent']}"
    pub_counts = client.get("pub_counts")
    if pub_counts:
        total = sum(p["count"] for p in pub_counts)
        topics = ",".join(f"{p['topic']}={p['count']}" for p in pub_counts)
        return f"[{client['version']} {ident:<21}] msgs: {total:<8} topics: {topics} connected: {connected}"
    return (
        f"[{client['version']} {ident:<21}] state: {client['state']} inflt: {client['in_flight_count']:<4} "
        f"rdy: {client['ready_count']:<4} fin: {client['finish_count']:<8} "
        f"re-q: {client['requeue_count']:<8} msgs: {client['message_count']:<8} connected: {connected}"
    )


def stats_text(
    nsqd: NSQD,
    topic: str | None = None,
    channel: str | None = None,
    include_clients: bool = True,
    include_mem: bool = True,
    latency: E2ELatencyTracker | None = None,
) -> str:
    """C{/stats} without C{format=json}: nsqd's human-readable page, line for line."""
    topics, producers = _topics_and_producers(nsqd, topic, channel, include_clients, latency)
    now = nsqd.clock.seconds()
    started = datetime.datetime.fromtimestamp(nsqd.start_time, datetime.UTC)
    uptime = go_duration(max(0, int((now - nsqd.start_time) * 1_000_000_000)))
    out = [
        version_line(),
        "\n",
        f"start_time {started:%Y-%m-%dT%H:%M:%SZ}\n",
        f"uptime {uptime}\n",
        f"\nHealth: {nsqd.health()}\n",
    ]
    if include_mem:
        out.append("\nMemory:\n")
        for key, value in memory_stats().items():
            out.append(f"   {key:<25}\t{value}\n")
    out.append("\nTopics:" if topics else "\nTopics: None\n")
    for t in topics or ():
        prefix = "*P " if t["paused"] else "   "
        out.append(
            f"\n{prefix}[{t['topic_name']:<15}] depth: {t['depth']:<5} be-depth: {t['backend_depth']:<5} "
            f"msgs: {t['message_count']:<8} e2e%: {_latency_text(t['e2e_processing_latency'])}\n"
        )
        for c in t["channels"]:
            prefix = "   *P " if c["paused"] else "      "
            mode = "ordered " if c.get("ordered") else ""
            if c.get("order_key"):
                mode = f"ordered by {c['order_key']} pending: {c['order_pending']} "
            out.append(
                f"{prefix}[{c['channel_name']:<25}] {mode}depth: {c['depth']:<5} "
                f"be-depth: {c['backend_depth']:<5} "
                f"inflt: {c['in_flight_count']:<4} def: {c['deferred_count']:<4} "
                f"re-q: {c['requeue_count']:<5} timeout: {c['timeout_count']:<5} "
                f"msgs: {c['message_count']:<8} e2e%: {_latency_text(c['e2e_processing_latency'])}\n"
            )
            for client in c["clients"] or ():
                out.append(f"        {_client_line(client, now)}\n")
    if producers:
        out.append("\nProducers:\n")
        for client in producers:
            out.append(f"   {_client_line(client, now)}\n")
    else:
        out.append("\nProducers: None\n")
    return "".join(out)
