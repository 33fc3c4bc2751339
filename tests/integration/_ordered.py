"""
What the ordered-channel process tests (test_ordered, test_ordered_key) share: a pynsq Reader
script around each test's own message handler, the log it writes read as it grows, the check
that every delivery was the head of its order, and a test case that publishes in MPUB batches
and waits for FINs against a real nsqd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._rawclient import RawClient

TOPIC = "ordered"
CHANNEL = "c"
BATCH = 200
#: A bound on every wait, so that a broken nsqd fails the test instead of hanging it.
PHASE_TIMEOUT = 240.0

_CONSUMER_HEAD = r"""
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

"""

_CONSUMER_TAIL = r"""

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


def consumer_script(handler: str) -> str:
    """
    A pynsq Reader (max_in_flight=100, reconnecting fast) on C{P["topic"]}/C{P["channel"]} of
    C{P["nsqd"]}, C{P} being the JSON of its first argument, that hands each message to the
    function C{handler} (Python source) defines; C{log} is C{P["log"]} open for appending.
    """
    return _CONSUMER_HEAD + handler + _CONSUMER_TAIL


class ConsumerLog:
    """
    Reads the consumer's log as it grows, a whole line at a time, counting C{F} lines in
    C{fins}; L{record} takes each line's words.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
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
            parts = line.decode().split()
            self.record(parts)
            if parts[0] == "F":
                self.fins += 1

    def record(self, parts: list[str]) -> None:
        """One line of the log (the subclass keeps what it needs)."""


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


def accepted_fins(events: list[tuple[str, int, int]], who: str = "") -> tuple[list[int], int]:
    """
    The FINs nsqd accepted of one order (C{(kind, n, attempts)} events, C{n} counting from 0),
    in order, and the number of deliveries; fails if a delivery is not the head (the message
    after the last accepted FIN), saying C{who} first.
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
                    f"{who}delivered {n} (attempts {attempts}) when the head was {len(accepted)}"
                )
        elif kind == "F":
            pending = n
    if pending is not None:
        accepted.append(pending)
    return accepted, deliveries


class OrderedProcessCase(SynchronousTestCase):
    """
    Runs C{CONSUMER} (a L{consumer_script}) against a real nsqd, publishes L{body} of each
    sequence number in MPUB batches, and waits for FINs; L{tick} runs between batches and
    while waiting.
    """

    CONSUMER = ""

    def setUp(self) -> None:
        self.data_path = self.mktemp()
        self.log_path = os.path.abspath(self.mktemp() + ".log")

    def consumer_params(self, nsqd: NSQDProcess) -> dict[str, object]:
        """The consumer script's C{P}."""
        return {"nsqd": nsqd.tcp_hostport, "topic": TOPIC, "channel": CHANNEL, "log": self.log_path}

    def body(self, seq: int) -> bytes:
        """The message published as sequence number C{seq}."""
        return b"%d" % seq

    def tick(self, nsqd: NSQDProcess) -> None:
        """A look at nsqd while publishing and waiting (nothing unless a test wants one)."""

    def start_consumer(self, nsqd: NSQDProcess) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", self.CONSUMER, json.dumps(self.consumer_params(nsqd))],
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
                bodies = [self.body(seq) for seq in range(first, min(stop, first + BATCH))]
                self.assertEqual(publisher.mpub(TOPIC, bodies).data, b"OK")
                if first % 2000 == 0:
                    self.tick(nsqd)
        finally:
            publisher.close()

    def assert_spilled(self, nsqd: NSQDProcess) -> None:
        backend_depth = channel_stats(nsqd)["backend_depth"]
        assert isinstance(backend_depth, int)
        self.assertGreater(backend_depth, 0, "the channel spilled to disk")

    def restart_nsqd(self, nsqd: NSQDProcess, flags: Sequence[str]) -> NSQDProcess:
        """SIGTERM C{nsqd} (it must exit 0) and start it again on the same addresses and data path."""
        tcp, http = nsqd.tcp_hostport, nsqd.http_hostport
        self.assertEqual(nsqd.stop(), 0, nsqd.output())
        nsqd = start_nsqd(
            self, *flags, f"--tcp-address={tcp}", f"--http-address={http}", data_path=self.data_path
        )
        self.assertEqual(nsqd.tcp_hostport, tcp)
        return nsqd

    def wait_fins(self, nsqd: NSQDProcess, log: ConsumerLog, count: int) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            log.poll()
            if log.fins >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {log.fins} FINs of {count} within {PHASE_TIMEOUT}s")
            self.tick(nsqd)
            time.sleep(0.05)
