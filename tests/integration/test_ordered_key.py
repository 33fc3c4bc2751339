"""
A channel ordered by key end to end (docs/extensions/ordered.md, "Ordering by key"): 50,000
messages over 100 keys (bodies C{<key>|<n>}, C{n} counting per key) published while a pynsq
Reader with max_in_flight=100 consumes them and requeues 1%, with a mem-queue-size of 1000 and
a pending cap of 500 so that topic and channel spill to disk and the channel stops reading its
queue, and nsqd is SIGTERMed and restarted on the same data path in the middle. Per key, the
FINs nsqd accepted form 0, 1, 2, ... with no gap and no repeat, every delivery is the head of
that key's order, and more than one message was in flight at a time (the keys ran in parallel).

A FIN the consumer sent that nsqd never got (nsqd stopped with the FIN on the wire) shows as a
redelivery of the same message; only then is that FIN not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._rawclient import RawClient
from tests.integration.test_ordered import channel_stats, http_post

TOPIC = "ordered"
CHANNEL = "c"
KEYS = 100
TOTAL = 50_000
BATCH = 200
RESTART_NSQD_AT = 20_000
#: A bound on every wait, so that a broken nsqd fails the test instead of hanging it.
PHASE_TIMEOUT = 240.0
FLAGS = ("--mem-queue-size=1000", "--ordered-max-pending=500")

CONSUMER = r"""
import json, os, sys, logging
import nsq
import tornado.ioloop

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
P = json.loads(sys.argv[1])
log = open(P["log"], "a", buffering=1)
finished = [0]


class Reader(nsq.Reader):
    def _on_connection_close(self, conn, **kwargs):
        super()._on_connection_close(conn, **kwargs)
        # pynsq waits 15s before reconnecting; nsqd restarts in well under a second here.
        self.io_loop.call_later(0.2, self._reconnect, conn.host, conn.port)

    def _reconnect(self, host, port):
        if any(c.host == host and c.port == port for c in self.conns.values()):
            return
        self.connection_attempts.clear()
        self.connect_to_nsqd(host, port)
        self.io_loop.call_later(0.5, self._reconnect, host, port)


def handler(message):
    key, n = message.body.split(b"|")
    log.write("D %s %s %d\n" % (key.decode(), n.decode(), message.attempts))
    if int(n) % 100 == 37 and message.attempts == 1:
        log.write("R %s %s\n" % (key.decode(), n.decode()))
        message.enable_async()
        message.requeue(backoff=False, delay=0)
        return None
    log.write("F %s %s\n" % (key.decode(), n.decode()))
    finished[0] += 1
    return True


Reader(
    topic=P["topic"],
    channel=P["channel"],
    message_handler=handler,
    nsqd_tcp_addresses=[P["nsqd"]],
    max_in_flight=100,
    max_tries=0,
)
nsq.run()
"""


class KeyedLog:
    """Reads the consumer's log as it grows: C{D key n attempts}, C{F key n}, C{R key n} lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        self.fins = 0
        self.requeues = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            parts = line.decode().split()
            kind, key, n = parts[0], parts[1], int(parts[2])
            self.events[key].append((kind, n, int(parts[3]) if kind == "D" else 0))
            if kind == "F":
                self.fins += 1
            elif kind == "R":
                self.requeues += 1


def accepted_fins(key: str, events: list[tuple[str, int, int]]) -> tuple[list[int], int]:
    """
    One key's FINs nsqd accepted, in order, and its number of deliveries; fails if a delivery
    is not the key's head (the message after its last accepted FIN).
    """
    accepted: list[int] = []
    pending: int | None = None
    deliveries = 0
    for kind, n, attempts in events:
        if kind == "D":
            deliveries += 1
            if pending is not None and n != pending:
                accepted.append(pending)
            pending = None
            if n != len(accepted):
                raise AssertionError(
                    f"key {key}: delivered {n} (attempts {attempts}) when the head was {len(accepted)}"
                )
        elif kind == "F":
            pending = n
    if pending is not None:
        accepted.append(pending)
    return accepted, deliveries


class OrderedByKeyProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_path = self.mktemp()
        self.log_path = os.path.abspath(self.mktemp() + ".log")
        self.max_in_flight = 0

    def start_consumer(self, nsqd: NSQDProcess) -> subprocess.Popen[bytes]:
        params = {"nsqd": nsqd.tcp_hostport, "topic": TOPIC, "channel": CHANNEL, "log": self.log_path}
        process = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, json.dumps(params)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._reap, process)
        return process

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def publish(self, nsqd: NSQDProcess, start: int, stop: int) -> None:
        publisher = RawClient(nsqd.tcp_address, timeout=10.0)
        try:
            for first in range(start, stop, BATCH):
                bodies = [b"k%d|%d" % (i % KEYS, i // KEYS) for i in range(first, min(stop, first + BATCH))]
                self.assertEqual(publisher.mpub(TOPIC, bodies).data, b"OK")
                if first % 2000 == 0:
                    self.note_in_flight(nsqd)
        finally:
            publisher.close()

    def note_in_flight(self, nsqd: NSQDProcess) -> None:
        in_flight = channel_stats(nsqd)["in_flight_count"]
        assert isinstance(in_flight, int)
        self.max_in_flight = max(self.max_in_flight, in_flight)

    def wait_fins(self, nsqd: NSQDProcess, log: KeyedLog, count: int) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            log.poll()
            if log.fins >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {log.fins} FINs of {count} within {PHASE_TIMEOUT}s")
            self.note_in_flight(nsqd)
            time.sleep(0.05)

    def test_fin_sequence_per_key_is_its_publish_sequence(self) -> None:
        started = time.monotonic()
        nsqd = start_nsqd(self, *FLAGS, data_path=self.data_path)
        http_post(nsqd, f"/topic/create?topic={TOPIC}")
        http_post(nsqd, f"/channel/create?topic={TOPIC}&channel={CHANNEL}&order_key=prefix:%7C")
        stats = channel_stats(nsqd)
        self.assertEqual((stats["ordered"], stats["order_key"]), (True, "prefix:|"))
        log = KeyedLog(self.log_path)
        consumer = self.start_consumer(nsqd)

        self.publish(nsqd, 0, 30_000)
        backend_depth = channel_stats(nsqd)["backend_depth"]
        assert isinstance(backend_depth, int)
        self.assertGreater(backend_depth, 0, "the channel spilled to disk")
        self.wait_fins(nsqd, log, RESTART_NSQD_AT)
        tcp, http = nsqd.tcp_hostport, nsqd.http_hostport
        self.assertEqual(nsqd.stop(), 0, nsqd.output())
        nsqd = start_nsqd(
            self, *FLAGS, f"--tcp-address={tcp}", f"--http-address={http}", data_path=self.data_path
        )
        self.assertEqual(nsqd.tcp_hostport, tcp)
        self.assertEqual(channel_stats(nsqd)["order_key"], "prefix:|", "the key survives the restart")

        self.publish(nsqd, 30_000, TOTAL)
        self.wait_fins(nsqd, log, TOTAL)
        # Let FINs of redelivered messages, if any, settle before the final look.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = channel_stats(nsqd)
            if (stats["depth"], stats["in_flight_count"]) == (0, 0):
                break
            time.sleep(0.1)
        consumer.kill()
        consumer.wait(10)
        log.poll()

        total_deliveries = 0
        total_accepted = 0
        for key in range(KEYS):
            accepted, deliveries = accepted_fins(f"k{key}", log.events[f"k{key}"])
            self.assertEqual(
                accepted, list(range(TOTAL // KEYS)), f"k{key}: FINs strictly increasing, no gap"
            )
            total_deliveries += deliveries
            total_accepted += len(accepted)
        self.assertEqual(total_accepted, TOTAL)
        self.assertEqual(log.requeues, TOTAL // 100)
        self.assertGreaterEqual(total_deliveries, TOTAL + log.requeues)
        self.assertGreater(self.max_in_flight, 1, "keys ran in parallel")
        self.assertEqual((stats["depth"], stats["in_flight_count"], stats["order_pending"]), (0, 0, 0))
        self.assertFalse(
            os.path.exists(os.path.join(self.data_path, f"{TOPIC}:{CHANNEL}.diskqueue.head.dat"))
        )
        elapsed = time.monotonic() - started
        sys.stderr.write(
            f"\n{TOTAL} messages over {KEYS} keys in {elapsed:.1f}s, {total_deliveries} deliveries, "
            f"up to {self.max_in_flight} in flight\n"
        )
