"""
The benchmark's workloads. Each starts its own nsqd, runs load clients as separate processes
against it, and returns one result row (a plain dict, so it goes straight into the JSON file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Connection
from bench.lookupd import lookup_rows
from bench.server import Nsqd

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "bench"
CHANNEL = "ch"
MPUB_BATCH = 200
MB = 1_000_000


#: The load-client module built on twisted-nsq's client, and how many MPUBs it keeps in flight.
TWISTED_CLIENT = "bench.client_twisted"
CLIENT_PIPELINE = 4

#: nsqd's own default C{--mem-queue-size}, which the backlog workload runs with.
DEFAULT_MEM_QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class Settings:
    """How big each workload is; L{full} fits C{make bench} in about four minutes."""

    nsqd_path: str
    publish_s: float
    fill: int
    pubsub_s: float
    latency_rate: int
    latency_warmup: int
    latency_count: int
    #: Messages put on disk before the C{consume-disk} and C{consume-durable} drains.
    disk_fill: int
    #: Messages in the C{backlog-5m} workload (full run only).
    backlog: int = 5_000_000
    mem_queue_size: int = 10_000_000
    #: With a directory, py-spy samples each nsqd into C{DIR/WORKLOAD.raw} (see L{bench.profile}).
    profile_dir: Path | None = None

    def nsqd(self, workload: str, mem_queue_size: int | None = None, durable: bool = False) -> Nsqd:
        """
        A (not yet started) nsqd for C{workload}: everything in memory unless C{mem_queue_size}
        says otherwise, and with C{--durable} if asked.
        """
        profile = None if self.profile_dir is None else self.profile_dir / f"{workload}.raw"
        return Nsqd(
            self.nsqd_path,
            self.mem_queue_size if mem_queue_size is None else mem_queue_size,
            extra_args=("--durable",) if durable else (),
            profile_path=profile,
        )

    @classmethod
    def full(cls, nsqd_path: str, profile_dir: Path | None = None) -> Settings:
        return cls(
            nsqd_path=nsqd_path,
            profile_dir=profile_dir,
            publish_s=5.0,
            fill=1_000_000,
            pubsub_s=5.0,
            latency_rate=1000,
            latency_warmup=500,
            latency_count=5000,
            disk_fill=1_000_000,
        )

    @classmethod
    def quick(cls, nsqd_path: str, profile_dir: Path | None = None) -> Settings:
        return cls(
            nsqd_path=nsqd_path,
            profile_dir=profile_dir,
            publish_s=1.5,
            fill=200_000,
            pubsub_s=2.0,
            latency_rate=1000,
            latency_warmup=200,
            latency_count=1000,
            disk_fill=100_000,
        )


class ClientError(Exception):
    """A load client failed; the message carries its stderr."""


class Client:
    """
    One load-client process (C{python -m MODULE ROLE CONFIG}): C{bench.client}'s raw sockets, or
    C{bench.client_twisted}'s twisted-nsq client.
    """

    def __init__(self, role: str, config: dict[str, Any], module: str = "bench.client") -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, role, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self._fail(f"did not get ready (said {line!r})")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise ClientError(
                f"{self.role} client ran over {timeout_s}s: {err.decode(errors='replace')}"
            ) from None
        if self.proc.returncode != 0:
            raise ClientError(
                f"{self.role} client exited {self.proc.returncode}: {err.decode(errors='replace')}"
            )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _fail(self, what: str) -> None:
        self.kill()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        raise ClientError(f"{self.role} client {what}: {err}")


def run_clients(clients: list[Client], timeout_s: float) -> list[dict[str, Any]]:
    """Wait until every client is ready, start them together, and collect their results in order."""
    try:
        for client in clients:
            client.wait_ready()
        for client in clients:
            client.go()
        return [client.result(timeout_s) for client in clients]
    finally:
        for client in clients:
            client.kill()


def create_channel(nsqd: Nsqd) -> None:
    """Make the topic and its one channel exist (a SUB, then disconnect) before any publishing."""
    conn = Connection(nsqd.host, nsqd.tcp_port, timeout=10.0)
    try:
        conn.subscribe(TOPIC, CHANNEL)
    finally:
        conn.close()


def _span_s(results: list[dict[str, Any]]) -> float:
    """Seconds from the first client's start to the last client's end."""
    end: int = max(r["end_ns"] for r in results)
    start: int = min(r["start_ns"] for r in results)
    return (end - start) / 1e9


def _throughput(name: str, description: str, messages: int, seconds: float, body_size: int) -> dict[str, Any]:
    rate = messages / seconds if seconds > 0 else 0.0
    return {
        "name": name,
        "kind": "throughput",
        "description": description,
        "body_size": body_size,
        "messages": messages,
        "seconds": seconds,
        "msgs_per_s": rate,
        "mb_per_s": rate * body_size / MB,
    }


def _server_facts(nsqd: Nsqd, idle_rss_kib: int) -> dict[str, Any]:
    return {
        "idle_rss_kib": idle_rss_kib,
        "rss_kib": nsqd.rss_kib(),
        "peak_rss_kib": nsqd.peak_rss_kib(),
        "tcp_ready_s": nsqd.tcp_ready_s,
        "ping_ready_s": nsqd.ping_ready_s,
    }


def _flags(mem_queue_size: int | None, durable: bool) -> list[str]:
    """How a workload's nsqd differs from the in-memory default (the rows' C{nsqd_flags})."""
    flags = [] if mem_queue_size is None else [f"--mem-queue-size={mem_queue_size}"]
    if durable:
        flags.append("--durable")
    return flags


def _described(description: str, flags: list[str]) -> str:
    return description + ", " + " ".join(flags) if flags else description


def _publishers(
    nsqd: Nsqd, body_size: int, batch: int, connections: int = 2, http: bool = False, **limit: Any
) -> list[Client]:
    if http and nsqd.http_port is None:
        raise RuntimeError("nsqd logged no HTTP port")
    config = {
        "host": nsqd.host,
        "port": nsqd.http_port if http else nsqd.tcp_port,
        "topic": TOPIC,
        "body_size": body_size,
        "batch": batch,
    }
    return [Client("http-publish" if http else "publish", {**config, **limit}) for _ in range(connections)]


def _consumers(nsqd: Nsqd, rdy: int, first_s: float, idle_s: float) -> list[Client]:
    config = {
        "host": nsqd.host,
        "port": nsqd.tcp_port,
        "topic": TOPIC,
        "channel": CHANNEL,
        "rdy": rdy,
        "first_s": first_s,
        "idle_s": idle_s,
    }
    return [Client("consume", config) for _ in range(2)]


def _stopped(nsqd: Nsqd, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add what is only known once nsqd has stopped to each of C{rows}."""
    for row in rows:
        row["shutdown_s"] = nsqd.shutdown_s
        row["killed"] = nsqd.killed
        row["exit_code"] = nsqd.exit_code
        row["data_dir_removed"] = nsqd.data_dir_removed
        if nsqd.profile_summary is not None:
            row["profile"] = str(nsqd.profile_summary)
    return rows


def _cpu_per_message(cpu_s: float, messages: int) -> float | None:
    return cpu_s / messages * 1e6 if messages else None


def publish(
    settings: Settings,
    name: str,
    body_size: int,
    batch: int,
    connections: int = 2,
    mem_queue_size: int | None = None,
    durable: bool = False,
    http: bool = False,
) -> list[dict[str, Any]]:
    """
    PUB (C{batch} 1) or MPUB into a topic with one channel: C{connections} connections, each
    waiting for its OK. C{mem_queue_size} 0 puts every message in the channel's disk queue;
    C{durable} makes each OK wait for the fsync; C{http} publishes with HTTP /pub and /mpub.
    """
    with settings.nsqd(name, mem_queue_size, durable) as nsqd:
        idle_rss = nsqd.rss_kib()
        create_channel(nsqd)
        clients = _publishers(nsqd, body_size, batch, connections, http, duration_s=settings.publish_s)
        cpu_before = nsqd.cpu_seconds()
        written_before = nsqd.disk_write_bytes()
        results = run_clients(clients, timeout_s=settings.publish_s + 120)
        cpu = nsqd.cpu_seconds() - cpu_before
        written = nsqd.disk_write_bytes() - written_before
        nsqd.check_alive()
        messages = sum(r["messages"] for r in results)
        command = (
            ("HTTP /pub" if http else "PUB") if batch == 1 else f"{'HTTP /mpub' if http else 'MPUB'} x{batch}"
        )
        flags = _flags(mem_queue_size, durable)
        row = _throughput(
            name,
            _described(
                f"{command} {body_size} B, {connections} conns, wait for each OK, {settings.publish_s:g}s",
                flags,
            ),
            messages,
            _span_s(results),
            body_size,
        )
        row.update(_server_facts(nsqd, idle_rss))
        row["connections"] = connections
        row["nsqd_flags"] = flags
        row["nsqd_cpu_s"] = cpu
        row["nsqd_cpu_us_per_msg"] = _cpu_per_message(cpu, messages)
        row["nsqd_disk_write_bytes"] = written
        row["client_cpu_s"] = sum(r["client_cpu_s"] for r in results)
    return _stopped(nsqd, [row])


def _fill_and_drain(
    nsqd: Nsqd, name: str, fill: int, idle_rss: int, flags: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Fill the channel with C{fill} 100-byte messages (MPUB x200, 2 connections), then drain it
    with 2 consumers at RDY 2500 that FIN every message. Returns the fill row and the drain row;
    the drain row carries what was read from C{/proc} between the two (C{*_after_fill_*}).
    """
    body_size = 100
    per_client = fill // 2
    if per_client % MPUB_BATCH:
        raise ValueError(f"fill {fill} must be a multiple of {2 * MPUB_BATCH}")
    create_channel(nsqd)
    cpu_before = nsqd.cpu_seconds()
    written_before = nsqd.disk_write_bytes()
    filled = run_clients(_publishers(nsqd, body_size, MPUB_BATCH, count=per_client), timeout_s=600)
    fill_cpu = nsqd.cpu_seconds() - cpu_before
    nsqd.check_alive()
    fill_messages = sum(r["messages"] for r in filled)
    fill_row = _throughput(
        name + "-fill",
        _described(f"fill: MPUB x{MPUB_BATCH} {body_size} B, 2 conns, {fill_messages:,} msgs", flags),
        fill_messages,
        _span_s(filled),
        body_size,
    )
    fill_row.update(_server_facts(nsqd, idle_rss))
    fill_row["nsqd_flags"] = flags
    fill_row["nsqd_cpu_s"] = fill_cpu
    fill_row["nsqd_cpu_us_per_msg"] = _cpu_per_message(fill_cpu, fill_messages)
    fill_row["nsqd_disk_write_bytes"] = nsqd.disk_write_bytes() - written_before
    fill_row["client_cpu_s"] = sum(r["client_cpu_s"] for r in filled)
    rss_after_fill = nsqd.rss_kib()
    peak_after_fill = nsqd.peak_rss_kib()
    data_dir_after_fill = nsqd.data_dir_bytes()

    cpu_before = nsqd.cpu_seconds()
    drained = run_clients(_consumers(nsqd, rdy=2500, first_s=30.0, idle_s=2.0), timeout_s=900)
    # Includes the consumers' idle wait at the end, during which nsqd does (almost) nothing.
    cpu = nsqd.cpu_seconds() - cpu_before
    nsqd.check_alive()
    consumed = sum(r["messages"] for r in drained)
    row = _throughput(
        name,
        _described(f"2 consumers, RDY 2500, FIN each, draining {fill_messages:,} msgs", flags),
        consumed,
        _span_s([r for r in drained if r["messages"]]) if consumed else 0.0,
        body_size,
    )
    row.update(_server_facts(nsqd, idle_rss))
    row["nsqd_flags"] = flags
    row["rss_after_fill_kib"] = rss_after_fill
    row["peak_rss_after_fill_kib"] = peak_after_fill
    row["data_dir_after_fill_bytes"] = data_dir_after_fill
    row["expected"] = fill_messages
    row["missing"] = fill_messages - consumed
    row["nsqd_cpu_s"] = cpu
    row["nsqd_cpu_us_per_msg"] = _cpu_per_message(cpu, consumed)
    row["client_cpu_s"] = sum(r["client_cpu_s"] for r in drained)
    return fill_row, row


def consume(
    settings: Settings,
    name: str,
    fill: int | None = None,
    mem_queue_size: int | None = None,
    durable: bool = False,
) -> list[dict[str, Any]]:
    """
    Fill the channel with C{fill} (default C{settings.fill}) 100-byte messages, then drain it
    (L{_fill_and_drain}). Two rows: the fill and the drain. With C{mem_queue_size} 0 every
    message is on disk before the drain starts.
    """
    with settings.nsqd(name, mem_queue_size, durable) as nsqd:
        idle_rss = nsqd.rss_kib()
        rows = _fill_and_drain(
            nsqd, name, settings.fill if fill is None else fill, idle_rss, _flags(mem_queue_size, durable)
        )
    return _stopped(nsqd, list(rows))


def client_publish(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    twisted-nsq's L{Producer}: one process, MPUB x200 of 100 B, 4 batches awaiting their C{OK} at
    once, for C{settings.fill} messages or C{settings.publish_s}, whichever comes first (the
    count keeps nsqd's memory bounded: unread messages pile up in the channel).
    """
    body_size = 100
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        create_channel(nsqd)
        config = {
            "host": nsqd.host,
            "port": nsqd.tcp_port,
            "topic": TOPIC,
            "body_size": body_size,
            "batch": MPUB_BATCH,
            "pipeline": CLIENT_PIPELINE,
            "count": settings.fill,
            "duration_s": settings.publish_s,
        }
        cpu_before = nsqd.cpu_seconds()
        [result] = run_clients([Client("publish", config, module=TWISTED_CLIENT)], timeout_s=120)
        cpu = nsqd.cpu_seconds() - cpu_before
        nsqd.check_alive()
        row = _throughput(
            name,
            f"twisted-nsq Producer: MPUB x{MPUB_BATCH} {body_size} B, {CLIENT_PIPELINE} in flight, 1 conn",
            result["messages"],
            _span_s([result]),
            body_size,
        )
        row.update(_server_facts(nsqd, idle_rss))
        row["nsqd_cpu_s"] = cpu
        row["nsqd_cpu_us_per_msg"] = _cpu_per_message(cpu, result["messages"])
        row["client_cpu_s"] = result["client_cpu_s"]
    return _stopped(nsqd, [row])


def client_consume(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    twisted-nsq's L{Consumer}: fill the channel with C{settings.fill // 2} 100 B messages using
    the raw publishers, then drain it with one Consumer at C{max_in_flight} 2500 that FINs each.
    """
    body_size = 100
    fill = settings.fill // 2
    per_client = fill // 2
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        create_channel(nsqd)
        run_clients(_publishers(nsqd, body_size, MPUB_BATCH, count=per_client), timeout_s=600)
        config = {
            "host": nsqd.host,
            "port": nsqd.tcp_port,
            "topic": TOPIC,
            "channel": CHANNEL,
            "max_in_flight": 2500,
            "count": 2 * per_client,
            "timeout_s": 120.0,
        }
        cpu_before = nsqd.cpu_seconds()
        [result] = run_clients([Client("consume", config, module=TWISTED_CLIENT)], timeout_s=180)
        cpu = nsqd.cpu_seconds() - cpu_before
        nsqd.check_alive()
        row = _throughput(
            name,
            f"twisted-nsq Consumer: max_in_flight 2500, FIN each, draining {2 * per_client:,} msgs",
            result["messages"],
            _span_s([result]),
            body_size,
        )
        row.update(_server_facts(nsqd, idle_rss))
        row["expected"] = 2 * per_client
        row["missing"] = 2 * per_client - result["messages"]
        row["nsqd_cpu_s"] = cpu
        row["nsqd_cpu_us_per_msg"] = _cpu_per_message(cpu, result["messages"])
        row["client_cpu_s"] = result["client_cpu_s"]
    return _stopped(nsqd, [row])


def backlog(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    A backlog far past the memory queue: C{settings.backlog} 100-byte messages into a channel
    nobody reads, at nsqd's default C{--mem-queue-size}, so all but 10,000 go to the disk queue;
    then a drain. Reports nsqd's memory after the fill and after the drain; asserts nothing.
    """
    with settings.nsqd(name, DEFAULT_MEM_QUEUE_SIZE) as nsqd:
        idle_rss = nsqd.rss_kib()
        rows = _fill_and_drain(
            nsqd, name, settings.backlog, idle_rss, _flags(DEFAULT_MEM_QUEUE_SIZE, durable=False)
        )
    return _stopped(nsqd, list(rows))


def pubsub(settings: Settings, name: str) -> list[dict[str, Any]]:
    """MPUB x200 of 100 B on 2 connections while 2 consumers (RDY 2500, FIN each) drain the channel."""
    body_size = 100
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        create_channel(nsqd)
        publishers = _publishers(nsqd, body_size, MPUB_BATCH, duration_s=settings.pubsub_s)
        consumers = _consumers(nsqd, rdy=2500, first_s=30.0, idle_s=2.0)
        cpu_before = nsqd.cpu_seconds()
        results = run_clients(publishers + consumers, timeout_s=settings.pubsub_s + 600)
        cpu = nsqd.cpu_seconds() - cpu_before
        nsqd.check_alive()
        published_results, consumed_results = results[:2], results[2:]
        published = sum(r["messages"] for r in published_results)
        consumed = sum(r["messages"] for r in consumed_results)
        pub_row = _throughput(
            name + "-pub",
            f"publish side: MPUB x{MPUB_BATCH} {body_size} B, 2 conns, {settings.pubsub_s:g}s, "
            "while consuming",
            published,
            _span_s(published_results),
            body_size,
        )
        row = _throughput(
            name + "-sub",
            "consume side: 2 consumers, RDY 2500, FIN each, until the channel is empty",
            consumed,
            _span_s([r for r in consumed_results if r["messages"]]) if consumed else 0.0,
            body_size,
        )
        facts = _server_facts(nsqd, idle_rss)
        pub_row.update(facts)
        row.update(facts)
        row["expected"] = published
        row["missing"] = published - consumed
        # nsqd's CPU covers both sides; per message it is per message published and consumed.
        pub_row["nsqd_cpu_s"] = cpu
        pub_row["nsqd_cpu_us_per_msg"] = _cpu_per_message(cpu, published)
        pub_row["client_cpu_s"] = sum(r["client_cpu_s"] for r in published_results)
        row["client_cpu_s"] = sum(r["client_cpu_s"] for r in consumed_results)
    return _stopped(nsqd, [pub_row, row])


def latency(settings: Settings, name: str, rdy: int) -> list[dict[str, Any]]:
    """
    One publisher at a fixed rate (PUB, waiting for each OK) stamping C{time.monotonic_ns} in
    each 100-byte body; one consumer at RDY C{rdy} measuring delivery time minus that stamp.
    """
    body_size = 100
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        base = {"host": nsqd.host, "port": nsqd.tcp_port, "topic": TOPIC}
        total = settings.latency_warmup + settings.latency_count
        consumer = Client(
            "latency-consume",
            {
                **base,
                "channel": CHANNEL,
                "rdy": rdy,
                "warmup": settings.latency_warmup,
                "count": settings.latency_count,
                "timeout_s": 30.0,
            },
        )
        publisher = Client(
            "latency-publish", {**base, "body_size": body_size, "count": total, "rate": settings.latency_rate}
        )
        cpu_before = nsqd.cpu_seconds()
        timeout = total / settings.latency_rate + 120
        summary, published = run_clients([consumer, publisher], timeout_s=timeout)
        cpu = nsqd.cpu_seconds() - cpu_before
        nsqd.check_alive()
        row: dict[str, Any] = {
            "name": name,
            "kind": "latency",
            "description": (
                f"PUB {body_size} B at {settings.latency_rate}/s, 1 consumer at RDY {rdy}, "
                f"{settings.latency_count} msgs after {settings.latency_warmup} warm-up"
            ),
            "rate": settings.latency_rate,
            "rdy": rdy,
            "body_size": body_size,
            **summary,
            "publisher_max_lag_us": published["max_lag_us"],
            "achieved_rate": total / ((published["end_ns"] - published["start_ns"]) / 1e9),
            "nsqd_cpu_s": cpu,
        }
        row.update(_server_facts(nsqd, idle_rss))
    return _stopped(nsqd, [row])


Workload = Callable[[Settings], list[dict[str, Any]]]

#: Every workload, in the order C{make bench} runs them.
WORKLOADS: dict[str, Workload] = {
    "pub-100": lambda s: publish(s, "pub-100", 100, 1),
    "pub-200": lambda s: publish(s, "pub-200", 200, 1),
    "mpub-100": lambda s: publish(s, "mpub-100", 100, MPUB_BATCH),
    "mpub-200": lambda s: publish(s, "mpub-200", 200, MPUB_BATCH),
    "consume": lambda s: consume(s, "consume"),
    "pubsub": lambda s: pubsub(s, "pubsub"),
    "latency-rdy1": lambda s: latency(s, "latency-rdy1", 1),
    "latency-rdy100": lambda s: latency(s, "latency-rdy100", 100),
    "lookupd-lookup": lambda s: lookup_rows(
        os.path.join(os.path.dirname(s.nsqd_path), "nsqlookupd"),
        s.publish_s,
        run_clients,
        Client,
        _throughput,
    ),
    "http-pub-100": lambda s: publish(s, "http-pub-100", 100, 1, http=True),
    "http-mpub-100": lambda s: publish(s, "http-mpub-100", 100, MPUB_BATCH, http=True),
    "mpub-disk-100": lambda s: publish(s, "mpub-disk-100", 100, MPUB_BATCH, mem_queue_size=0),
    "mpub-durable-100": lambda s: publish(
        s, "mpub-durable-100", 100, MPUB_BATCH, mem_queue_size=0, durable=True
    ),
    "pub-durable-100": lambda s: publish(s, "pub-durable-100", 100, 1, mem_queue_size=0, durable=True),
    "pub-durable-100-c8": lambda s: publish(
        s, "pub-durable-100-c8", 100, 1, connections=8, mem_queue_size=0, durable=True
    ),
    "consume-disk": lambda s: consume(s, "consume-disk", s.disk_fill, mem_queue_size=0),
    "consume-durable": lambda s: consume(s, "consume-durable", s.disk_fill, mem_queue_size=0, durable=True),
    "client-mpub-100": lambda s: client_publish(s, "client-mpub-100"),
    "client-consume": lambda s: client_consume(s, "client-consume"),
    "backlog-5m": lambda s: backlog(s, "backlog-5m"),
}

#: Workloads too big for C{--quick}: it leaves them out unless named with C{--only}.
FULL_ONLY = frozenset({"backlog-5m"})
