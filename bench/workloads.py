"""
The benchmark's workloads. Each starts its own nsqd, runs load clients as separate processes
against it, and returns one result row (a plain dict, so it goes straight into the JSON file).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Connection
from bench.lookupd import lookup_rows
from bench.scale import raise_file_limit
from bench.server import Nsqd, Sink

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
#: The C{--mem-queue-size} of the Go MPUB figures: a run of a few seconds spills past it to disk.
SPILL_MEM_QUEUE_SIZE = 1_000_000
#: How long an idle nsqd is left alone before its idle RSS is read.
IDLE_SETTLE_S = 1.0


@dataclass(frozen=True)
class Settings:
    """How big each workload is; L{full} fits C{make bench} (3 runs of each) in about 4 minutes."""

    nsqd_path: str
    publish_s: float
    fill: int
    pubsub_s: float
    latency_rate: int
    latency_warmup: int
    latency_count: int
    #: Messages put on disk before the C{consume-disk} and C{consume-durable} drains.
    disk_fill: int
    #: Messages in the ordered channel before C{ordered-consume} drains it.
    ordered_fill: int
    #: Idle connections held by C{scale-connections}, and topics made by C{scale-topics}.
    scale_connections: int
    scale_topics: int
    #: How long the scale workloads measure nsqd's idle CPU (at least two heartbeat intervals).
    scale_hold_s: float
    #: Runs of each repeated workload; the tables show the median of each figure.
    runs: int
    #: Messages in the C{backlog-5m} workload (an extra).
    backlog: int = 5_000_000
    mem_queue_size: int = 10_000_000
    #: Seconds a consumer waits with nothing new before it decides the channel is empty.
    idle_s: float = 0.5
    #: The heartbeat interval the idle connections ask for, in ms (nsqd's minimum is 1000).
    heartbeat_ms: int = 1000
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
            publish_s=2.0,
            fill=1_000_000,
            pubsub_s=2.0,
            latency_rate=1000,
            latency_warmup=200,
            latency_count=2000,
            disk_fill=500_000,
            ordered_fill=100_000,
            scale_connections=10_000,
            scale_topics=10_000,
            scale_hold_s=2.5,
            runs=3,
        )

    @classmethod
    def quick(cls, nsqd_path: str, profile_dir: Path | None = None) -> Settings:
        return cls(
            nsqd_path=nsqd_path,
            profile_dir=profile_dir,
            publish_s=1.0,
            fill=200_000,
            pubsub_s=1.0,
            latency_rate=1000,
            latency_warmup=100,
            latency_count=500,
            disk_fill=100_000,
            ordered_fill=10_000,
            scale_connections=1_000,
            scale_topics=1_000,
            scale_hold_s=2.5,
            runs=1,
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


def _consumers(
    nsqd: Nsqd, rdy: int, first_s: float, idle_s: float, count: int = 2, **limit: Any
) -> list[Client]:
    config = {
        "host": nsqd.host,
        "port": nsqd.tcp_port,
        "topic": TOPIC,
        "channel": CHANNEL,
        "rdy": rdy,
        "first_s": first_s,
        "idle_s": idle_s,
        **limit,
    }
    return [Client("consume", config) for _ in range(count)]


def http_post(nsqd: Nsqd, path: str) -> bytes:
    """POST C{path} to nsqd's HTTP API and return the body; anything but 200 raises."""
    if nsqd.http_port is None:
        raise RuntimeError("nsqd logged no HTTP port")
    connection = http.client.HTTPConnection(nsqd.host, nsqd.http_port, timeout=30.0)
    try:
        connection.request("POST", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"POST {path} answered {response.status}: {body[:200]!r}")
    return body


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
    nsqd: Nsqd,
    name: str,
    fill: int,
    idle_rss: int,
    flags: list[str],
    body_size: int = 100,
    rdy: int = 2500,
    consumers: int = 2,
    idle_s: float = 0.5,
    ordered: bool = False,
    keys: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Fill the channel with C{fill} messages of C{body_size} bytes (MPUB x200, 2 connections),
    then drain it with C{consumers} consumers at RDY C{rdy} that FIN every message. With
    C{ordered} the channel is made ordered (C{POST /channel/create?...&ordered=true}) before
    the fill; with C{keys} too it is ordered by key (C{order_key=prefix:|}) and the bodies
    start with C{key-<i % keys>|}. Returns the fill row and the drain row; the drain row carries
    what was read from C{/proc} between the two (C{*_after_fill_*}).
    """
    per_client = fill // 2
    if per_client % MPUB_BATCH:
        raise ValueError(f"fill {fill} must be a multiple of {2 * MPUB_BATCH}")
    if ordered:
        http_post(nsqd, f"/topic/create?topic={TOPIC}")
        key = "&order_key=prefix:%7C" if keys else ""
        http_post(nsqd, f"/channel/create?topic={TOPIC}&channel={CHANNEL}&ordered=true{key}")
    else:
        create_channel(nsqd)
    cpu_before = nsqd.cpu_seconds()
    written_before = nsqd.disk_write_bytes()
    limits: dict[str, Any] = {"count": per_client}
    if keys:
        limits["keys"] = keys
    filled = run_clients(_publishers(nsqd, body_size, MPUB_BATCH, **limits), timeout_s=600)
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
    drained = run_clients(
        _consumers(nsqd, rdy=rdy, first_s=30.0, idle_s=idle_s, count=consumers), timeout_s=900
    )
    # Includes the consumers' idle wait at the end, during which nsqd does (almost) nothing.
    cpu = nsqd.cpu_seconds() - cpu_before
    nsqd.check_alive()
    consumed = sum(r["messages"] for r in drained)
    what = "ordered channel, " if ordered else ""
    if keys:
        what = f"ordered by key ({keys} keys), "
    row = _throughput(
        name,
        _described(
            f"{what}{consumers} consumer{'s' if consumers > 1 else ''}, RDY {rdy}, FIN each, "
            f"draining {fill_messages:,} x {body_size} B",
            flags,
        ),
        consumed,
        _span_s([r for r in drained if r["messages"]]) if consumed else 0.0,
        body_size,
    )
    row.update(_server_facts(nsqd, idle_rss))
    row["nsqd_flags"] = flags
    row["rss_after_fill_kib"] = rss_after_fill
    row["peak_rss_after_fill_kib"] = peak_after_fill
    row["data_dir_after_fill_bytes"] = data_dir_after_fill
    row["bytes_per_queued_msg"] = (
        (rss_after_fill - idle_rss) * 1024 / fill_messages if fill_messages else None
    )
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
    body_size: int = 100,
) -> list[dict[str, Any]]:
    """
    Fill the channel with C{fill} (default C{settings.fill}) messages of C{body_size} bytes,
    then drain it (L{_fill_and_drain}). Two rows: the fill and the drain. With
    C{mem_queue_size} 0 every message is on disk before the drain starts.
    """
    with settings.nsqd(name, mem_queue_size, durable) as nsqd:
        idle_rss = nsqd.rss_kib()
        rows = _fill_and_drain(
            nsqd,
            name,
            settings.fill if fill is None else fill,
            idle_rss,
            _flags(mem_queue_size, durable),
            body_size=body_size,
            idle_s=settings.idle_s,
        )
    return _stopped(nsqd, list(rows))


def ordered_consume(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    An ordered channel (one message in flight, in publish order): fill it with
    C{settings.ordered_fill} 100 B messages, then drain it with one raw consumer at RDY 100
    that FINs each. Fails (an error row) on an nsqd without ordered channels.
    """
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        _fill, row = _fill_and_drain(
            nsqd, name, settings.ordered_fill, idle_rss, [], rdy=100, consumers=1, idle_s=2.0, ordered=True
        )
        if row["missing"]:
            raise RuntimeError(f"{row['missing']} of {row['expected']} messages did not arrive")
    return _stopped(nsqd, [row])


def ordered_key_consume(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    C{ordered-consume} on a channel ordered by key (one message in flight per key): bodies
    C{key-<i % 100>|...}, C{order_key=prefix:|}, drained by one raw consumer at RDY 100. Fails
    (an error row) on an nsqd without ordering by key.
    """
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        _fill, row = _fill_and_drain(
            nsqd,
            name,
            settings.ordered_fill,
            idle_rss,
            [],
            rdy=100,
            consumers=1,
            idle_s=2.0,
            ordered=True,
            keys=100,
        )
        if row["missing"]:
            raise RuntimeError(f"{row['missing']} of {row['expected']} messages did not arrive")
    return _stopped(nsqd, [row])


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
            nsqd,
            name,
            settings.backlog,
            idle_rss,
            _flags(DEFAULT_MEM_QUEUE_SIZE, durable=False),
            idle_s=settings.idle_s,
        )
    return _stopped(nsqd, list(rows))


def pubsub(settings: Settings, name: str) -> list[dict[str, Any]]:
    """MPUB x200 of 100 B on 2 connections while 2 consumers (RDY 2500, FIN each) drain the channel."""
    body_size = 100
    with settings.nsqd(name) as nsqd:
        idle_rss = nsqd.rss_kib()
        create_channel(nsqd)
        publishers = _publishers(nsqd, body_size, MPUB_BATCH, duration_s=settings.pubsub_s)
        consumers = _consumers(nsqd, rdy=2500, first_s=30.0, idle_s=settings.idle_s)
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


def startup(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    Start an nsqd with its defaults (but loopback ports and a fresh data path): the time to the
    C{TCP: listening} line and to the first C{/ping} answered C{OK}, and its RSS after
    C{IDLE_SETTLE_S} of doing nothing.
    """
    with settings.nsqd(name, DEFAULT_MEM_QUEUE_SIZE) as nsqd:
        if nsqd.ping_ready_s is None:
            raise RuntimeError("nsqd never answered /ping")
        time.sleep(IDLE_SETTLE_S)
        nsqd.check_alive()
        row: dict[str, Any] = {
            "name": name,
            "kind": "server",
            "description": "nsqd with default options: exec to first /ping OK, RSS when idle",
            "idle_rss_kib": nsqd.rss_kib(),
            "rss_kib": nsqd.rss_kib(),
            "peak_rss_kib": nsqd.peak_rss_kib(),
            "tcp_ready_s": nsqd.tcp_ready_s,
            "ping_ready_s": nsqd.ping_ready_s,
        }
    return _stopped(nsqd, [row])


def sink_publish(settings: Settings, name: str, body_size: int, batch: int) -> list[dict[str, Any]]:
    """The C{pub}/C{mpub} clients against L{bench.sink}: the publishers' own ceiling."""
    command = "PUB" if batch == 1 else f"MPUB x{batch}"
    with Sink(body_size) as sink:
        clients = _publishers(sink, body_size, batch, duration_s=settings.publish_s)
        description = f"client ceiling: {command} {body_size} B, 2 conns, wait for each OK, against the sink"
        return [_sink_row(settings, sink, clients, name, description, body_size)]


def sink_consume(settings: Settings, name: str, body_size: int) -> list[dict[str, Any]]:
    """The C{consume} clients (2, RDY 2500, FIN each) against L{bench.sink}, for C{publish_s}."""
    with Sink(body_size) as sink:
        clients = _consumers(sink, rdy=2500, first_s=10.0, idle_s=2.0, duration_s=settings.publish_s)
        description = f"client ceiling: 2 consumers, RDY 2500, FIN each, {body_size} B, against the sink"
        return [_sink_row(settings, sink, clients, name, description, body_size)]


def _sink_row(
    settings: Settings, sink: Nsqd, clients: list[Client], name: str, description: str, body_size: int
) -> dict[str, Any]:
    """Run C{clients} against C{sink}: their throughput row, with the sink's and their own CPU."""
    cpu_before = sink.cpu_seconds()
    results = run_clients(clients, timeout_s=settings.publish_s + 60)
    cpu = sink.cpu_seconds() - cpu_before
    messages = sum(r["messages"] for r in results)
    row = _throughput(name, description, messages, _span_s(results), body_size)
    row["sink_cpu_s"] = cpu
    row["client_cpu_s"] = sum(r["client_cpu_s"] for r in results)
    return row


def _cpu_percent(nsqd: Nsqd, seconds: float) -> tuple[float, float]:
    """nsqd's CPU use over the next C{seconds} (it is left alone meanwhile), in percent of a core."""
    cpu_before = nsqd.cpu_seconds()
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    return 100 * (nsqd.cpu_seconds() - cpu_before) / elapsed, elapsed


def scale_connections(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    C{settings.scale_connections} idle connections, each IDENTIFYing with a heartbeat interval
    of C{settings.heartbeat_ms} and answering every heartbeat, held for C{settings.scale_hold_s}
    (at least two intervals). Fails if nsqd closed any or one got fewer than 2 heartbeats.
    """
    count = settings.scale_connections
    # This process's limit is what nsqd and the client inherit.
    limit = raise_file_limit(count + 256)
    with settings.nsqd(name, DEFAULT_MEM_QUEUE_SIZE) as nsqd:
        idle_rss = nsqd.rss_kib()
        config = {
            "host": nsqd.host,
            "port": nsqd.tcp_port,
            "count": count,
            "heartbeat_ms": settings.heartbeat_ms,
            "hold_s": settings.scale_hold_s,
        }
        client = Client("connections", config, module="bench.scale")
        try:
            client.wait_ready()
            rss_connected = nsqd.rss_kib()
            cpu_before = nsqd.cpu_seconds()
            client.go()
            result = client.result(timeout_s=settings.scale_hold_s + 120)
        finally:
            client.kill()
        cpu = nsqd.cpu_seconds() - cpu_before
        nsqd.check_alive()
        held_s = (result["end_ns"] - result["start_ns"]) / 1e9
        row: dict[str, Any] = {
            "name": name,
            "kind": "scale",
            "description": (
                f"{count:,} idle connections, IDENTIFY heartbeat_interval {settings.heartbeat_ms} ms, "
                f"held {settings.scale_hold_s:g} s answering heartbeats"
            ),
            "count": count,
            "file_limit": limit,
            **{k: v for k, v in result.items() if k not in ("start_ns", "end_ns")},
            "held_s": held_s,
            "idle_rss_kib": idle_rss,
            "rss_kib": rss_connected,
            "rss_end_kib": nsqd.rss_kib(),
            "peak_rss_kib": nsqd.peak_rss_kib(),
            "rss_per_item_bytes": (rss_connected - idle_rss) * 1024 / count,
            "nsqd_cpu_percent": 100 * cpu / held_s if held_s else None,
            "tcp_ready_s": nsqd.tcp_ready_s,
            "ping_ready_s": nsqd.ping_ready_s,
        }
    rows = _stopped(nsqd, [row])
    problems = []
    if result["opened"] != count:
        problems.append(f"opened {result['opened']} of {count}")
    if result["closed_before_hold"] or result["closed_during_hold"]:
        problems.append(
            f"nsqd closed {result['closed_before_hold']} before and {result['closed_during_hold']} "
            "during the hold"
        )
    if result["min_heartbeats"] < 2:
        problems.append(f"a connection got only {result['min_heartbeats']} heartbeats")
    row["held"] = not problems
    if problems:
        raise RuntimeError("; ".join(problems) + f" (row: {json.dumps(row)})")
    return rows


def scale_topics(settings: Settings, name: str) -> list[dict[str, Any]]:
    """
    C{settings.scale_topics} topics with one channel each (created over HTTP), one 100 B message
    published to each; then nsqd's RSS and its CPU while idle for C{settings.scale_hold_s}.
    """
    count = settings.scale_topics
    with settings.nsqd(name, DEFAULT_MEM_QUEUE_SIZE) as nsqd:
        idle_rss = nsqd.rss_kib()
        config = {
            "host": nsqd.host,
            "port": nsqd.tcp_port,
            "http_port": nsqd.http_port,
            "count": count,
            "body_size": 100,
        }
        client = Client("topics", config, module="bench.scale")
        try:
            cpu_before = nsqd.cpu_seconds()
            client.wait_ready()
            setup_cpu = nsqd.cpu_seconds() - cpu_before
            rss = nsqd.rss_kib()
            cpu_percent, idle_s = _cpu_percent(nsqd, settings.scale_hold_s)
            client.go()
            result = client.result(timeout_s=60)
        finally:
            client.kill()
        nsqd.check_alive()
        row: dict[str, Any] = {
            "name": name,
            "kind": "scale",
            "description": f"{count:,} topics, one channel each, one message in each, then idle",
            "count": count,
            "create_s": result["create_s"],
            "publish_s": result["publish_s"],
            "setup_nsqd_cpu_s": setup_cpu,
            "idle_rss_kib": idle_rss,
            "rss_kib": rss,
            "peak_rss_kib": nsqd.peak_rss_kib(),
            "rss_per_item_bytes": (rss - idle_rss) * 1024 / count,
            "nsqd_cpu_percent": cpu_percent,
            "held_s": idle_s,
            "held": True,
            "tcp_ready_s": nsqd.tcp_ready_s,
            "ping_ready_s": nsqd.ping_ready_s,
        }
    return _stopped(nsqd, [row])


Workload = Callable[[Settings], list[dict[str, Any]]]

#: The workloads C{make bench} runs C{settings.runs} times each, back to back, in this order:
#: every figure the issue's Go yardstick quotes, the ordered channel, and the clients' ceiling.
REPEATED: dict[str, Workload] = {
    "startup": lambda s: startup(s, "startup"),
    "pub-100": lambda s: publish(s, "pub-100", 100, 1),
    "pub-200": lambda s: publish(s, "pub-200", 200, 1),
    "mpub-100": lambda s: publish(s, "mpub-100", 100, MPUB_BATCH, mem_queue_size=SPILL_MEM_QUEUE_SIZE),
    "mpub-200": lambda s: publish(s, "mpub-200", 200, MPUB_BATCH, mem_queue_size=SPILL_MEM_QUEUE_SIZE),
    "mpub-100-mem": lambda s: publish(s, "mpub-100-mem", 100, MPUB_BATCH),
    "consume-100": lambda s: consume(s, "consume-100"),
    "consume-200": lambda s: consume(s, "consume-200", body_size=200),
    "ordered-consume": lambda s: ordered_consume(s, "ordered-consume"),
    "ordered-key-consume": lambda s: ordered_key_consume(s, "ordered-key-consume"),
    "pubsub": lambda s: pubsub(s, "pubsub"),
    "consume-disk": lambda s: consume(s, "consume-disk", s.disk_fill, mem_queue_size=0),
    "latency-rdy1": lambda s: latency(s, "latency-rdy1", 1),
    "latency-rdy100": lambda s: latency(s, "latency-rdy100", 100),
    "sink-pub-100": lambda s: sink_publish(s, "sink-pub-100", 100, 1),
    "sink-mpub-100": lambda s: sink_publish(s, "sink-mpub-100", 100, MPUB_BATCH),
    "sink-consume-100": lambda s: sink_consume(s, "sink-consume-100", 100),
}

#: Run once each in C{make bench}: they take long and measure holding, not speed.
ONCE: dict[str, Workload] = {
    "scale-connections": lambda s: scale_connections(s, "scale-connections"),
    "scale-topics": lambda s: scale_topics(s, "scale-topics"),
}

#: Not in C{make bench} (C{--extras} runs them once each, C{--only NAME} picks one): HTTP,
#: nsqlookupd, C{--durable}, twisted-nsq's own client, and the 5M-message backlog.
EXTRAS: dict[str, Workload] = {
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
    "consume-durable": lambda s: consume(s, "consume-durable", s.disk_fill, mem_queue_size=0, durable=True),
    "client-mpub-100": lambda s: client_publish(s, "client-mpub-100"),
    "client-consume": lambda s: client_consume(s, "client-consume"),
    "backlog-5m": lambda s: backlog(s, "backlog-5m"),
}

#: Every workload by name.
WORKLOADS: dict[str, Workload] = {**REPEATED, **ONCE, **EXTRAS}
