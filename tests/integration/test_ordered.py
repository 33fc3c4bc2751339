"""
An ordered channel end to end (docs/extensions/ordered.md): 200,000 sequenced messages published
while a pynsq Reader (max_in_flight=100, which the channel ignores: one message in flight)
consumes them, requeues 1%, is SIGKILLed and restarted once, with a mem-queue-size of 1000 so
that topic and channel spill to disk, and nsqd is SIGTERMed and restarted on the same data path
in the middle. The FINs nsqd accepted form 0, 1, 2, ... with no gap and no repeat, and every
delivery is the head of the order.

A FIN the consumer sent that nsqd never got (the consumer was killed, or nsqd stopped, with the
FIN on the wire) shows as a redelivery of the same message; only then is that FIN not counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._rawclient import RawClient

TOPIC = "ordered"
CHANNEL = "c"
TOTAL = 200_000
BATCH = 200
#: Phases: (publish up to this sequence number, then wait until this many are finished, then act).
KILL_CONSUMER_AT = 40_000
RESTART_NSQD_AT = 110_000
#: A bound on every wait, so that a broken nsqd fails the test instead of hanging it.
PHASE_TIMEOUT = 240.0

CONSUMER = r"""
import json, os, sys, logging
import nsq
import tornado.ioloop

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
P = json.loads(sys.argv[1])
log = open(P["log"], "a", buffering=1)


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
    seq = int(message.body)
    log.write("D %d %d\n" % (seq, message.attempts))
    if seq % 100 == 37 and message.attempts == 1:
        log.write("R %d\n" % seq)
        message.enable_async()
        message.requeue(backoff=False, delay=0)
        return None
    log.write("F %d\n" % seq)
    if seq == P["last"]:
        tornado.ioloop.IOLoop.current().call_later(0.5, os._exit, 0)
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


class ConsumerLog:
    """Reads the consumer's log as it grows: C{D seq attempts}, C{F seq}, C{R seq} lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[tuple[str, int, int]] = []
        self.fins = 0

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
            parts = line.split()
            kind = parts[0].decode()
            self.events.append((kind, int(parts[1]), int(parts[2]) if kind == "D" else 0))
            if kind == "F":
                self.fins += 1


def http_post(nsqd: NSQDProcess, path: str) -> None:
    host, port = nsqd.http_address
    request = urllib.request.Request(f"http://{host}:{port}{path}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def channel_stats(nsqd: NSQDProcess) -> dict[str, object]:
    host, port = nsqd.http_address
    with urllib.request.urlopen(
        f"http://{host}:{port}/stats?format=json&topic={TOPIC}&channel={CHANNEL}", timeout=10
    ) as response:
        stats = json.loads(response.read())
    channel: dict[str, object] = stats["topics"][0]["channels"][0]
    return channel


def accepted_fins(events: list[tuple[str, int, int]]) -> tuple[list[int], int]:
    """
    The FINs nsqd accepted, in order, and the number of deliveries; fails if a delivery is not
    the head (the message after the last accepted FIN).
    """
    accepted: list[int] = []
    pending: int | None = None
    deliveries = 0
    for kind, seq, attempts in events:
        if kind == "D":
            deliveries += 1
            if pending is not None and seq != pending:
                accepted.append(pending)
            pending = None
            if seq != len(accepted):
                raise AssertionError(
                    f"delivered {seq} (attempts {attempts}) when the head was {len(accepted)}"
                )
        elif kind == "F":
            pending = seq
    if pending is not None:
        accepted.append(pending)
    return accepted, deliveries


class OrderedChannelProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_path = self.mktemp()
        self.log_path = os.path.abspath(self.mktemp() + ".log")
        self.consumers: list[subprocess.Popen[bytes]] = []

    def start_consumer(self, nsqd: NSQDProcess) -> subprocess.Popen[bytes]:
        params = {
            "nsqd": nsqd.tcp_hostport,
            "topic": TOPIC,
            "channel": CHANNEL,
            "log": self.log_path,
            "last": TOTAL - 1,
        }
        process = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, json.dumps(params)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.consumers.append(process)
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
                bodies = [b"%d" % seq for seq in range(first, min(stop, first + BATCH))]
                self.assertEqual(publisher.mpub(TOPIC, bodies).data, b"OK")
        finally:
            publisher.close()

    def wait_fins(self, log: ConsumerLog, count: int) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            log.poll()
            if log.fins >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {log.fins} FINs of {count} within {PHASE_TIMEOUT}s")
            time.sleep(0.05)

    def test_fin_sequence_is_the_publish_sequence(self) -> None:
        started = time.monotonic()
        flags = ("--mem-queue-size=1000",)
        nsqd = start_nsqd(self, *flags, data_path=self.data_path)
        http_post(nsqd, f"/topic/create?topic={TOPIC}")
        http_post(nsqd, f"/channel/create?topic={TOPIC}&channel={CHANNEL}&ordered=true")
        self.assertIs(channel_stats(nsqd)["ordered"], True)
        log = ConsumerLog(self.log_path)

        consumer = self.start_consumer(nsqd)
        self.publish(nsqd, 0, 80_000)
        self.wait_fins(log, KILL_CONSUMER_AT)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        consumer = self.start_consumer(nsqd)

        self.publish(nsqd, 80_000, 150_000)
        backend_depth = channel_stats(nsqd)["backend_depth"]
        assert isinstance(backend_depth, int)
        self.assertGreater(backend_depth, 0, "the channel spilled to disk")
        self.wait_fins(log, RESTART_NSQD_AT)
        tcp, http = nsqd.tcp_hostport, nsqd.http_hostport
        self.assertEqual(nsqd.stop(), 0, nsqd.output())
        nsqd = start_nsqd(
            self, *flags, f"--tcp-address={tcp}", f"--http-address={http}", data_path=self.data_path
        )
        self.assertEqual(nsqd.tcp_hostport, tcp)
        self.assertIs(channel_stats(nsqd)["ordered"], True, "the mode survives the restart")

        self.publish(nsqd, 150_000, TOTAL)
        self.wait_fins(log, TOTAL)
        consumer.wait(PHASE_TIMEOUT)
        log.poll()

        accepted, deliveries = accepted_fins(log.events)
        self.assertEqual(len(accepted), TOTAL)
        self.assertEqual(accepted, list(range(TOTAL)), "FINs strictly increasing, no gap")
        requeued = sum(1 for kind, _, _ in log.events if kind == "R")
        self.assertEqual(requeued, TOTAL // 100)
        self.assertGreaterEqual(deliveries, TOTAL + requeued)
        stats = channel_stats(nsqd)
        self.assertEqual((stats["depth"], stats["in_flight_count"]), (0, 0))
        self.assertFalse(
            os.path.exists(os.path.join(self.data_path, f"{TOPIC}:{CHANNEL}.diskqueue.head.dat"))
        )
        elapsed = time.monotonic() - started
        sys.stderr.write(f"\n{TOTAL} ordered messages in {elapsed:.1f}s, {deliveries} deliveries\n")
