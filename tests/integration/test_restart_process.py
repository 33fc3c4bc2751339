"""
A clean restart of the real C{nsqd} process: SIGTERM flushes queued, in-flight and deferred
messages to the disk queues and writes nsqd.dat; the next nsqd on the same C{--data-path}
recreates the topics and channels (paused flags included) and delivers every message that was
not finished, in-flight and deferred ones with their attempts kept. A data path in use by
another nsqd is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, nsqd_command, start_nsqd
from tests.integration._rawclient import RawClient

TOPIC = "restart"
CHANNEL = "c"
IDLE = "idle"
COUNT = 60
#: How many messages the first consumer takes before the restart.
TAKEN = 12


def http(nsqd: NSQDProcess, method: str, path: str) -> bytes:
    host, port = nsqd.http_address
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def channel_stats(nsqd: NSQDProcess, channel: str) -> dict[str, Any]:
    stats = json.loads(http(nsqd, "GET", f"/stats?format=json&topic={TOPIC}"))
    [topic] = stats["topics"]
    for entry in topic["channels"]:
        if entry["channel_name"] == channel:
            result: dict[str, Any] = entry
            return result
    raise AssertionError(f"no channel {channel} in {topic}")


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def drain(nsqd: NSQDProcess, expected: int, idle: float = 2.0, limit: float = 30.0) -> dict[bytes, int]:
    """
    Every message the channel delivers (FINed at once), body -> attempts, until ``expected``
    arrived and nothing more comes for ``idle`` seconds; fails on a duplicate.
    """
    client = RawClient(nsqd.tcp_address, timeout=10.0)
    client.sub(TOPIC, CHANNEL)
    client.rdy(100)
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            message = client.read_message(timeout=idle if len(seen) >= expected else limit)
        except TimeoutError:
            break
        if message.body in seen:
            raise AssertionError(f"{message.body!r} delivered twice")
        seen[message.body] = message.attempts
        client.fin(message.id)
    client.close()
    return seen


class RestartProcessTests(SynchronousTestCase):
    def run_restart(self, *flags: str) -> None:
        data_path = self.mktemp()
        nsqd = start_nsqd(self, *flags, data_path=data_path)
        consumer = RawClient(nsqd.tcp_address, timeout=10.0)
        self.assertEqual(consumer.sub(TOPIC, CHANNEL).data, b"OK")
        http(nsqd, "POST", f"/channel/create?topic={TOPIC}&channel={IDLE}")
        http(nsqd, "POST", f"/channel/pause?topic={TOPIC}&channel={IDLE}")
        publisher = RawClient(nsqd.tcp_address, timeout=10.0)
        bodies = [b"m%03d" % i for i in range(COUNT)]
        for start in range(0, COUNT, 20):
            self.assertEqual(publisher.mpub(TOPIC, bodies[start : start + 20]).data, b"OK")
        publisher.command(b"DPUB %s 600000" % TOPIC.encode(), b"dpub")
        publisher.expect_ok()

        consumer.rdy(TAKEN)
        taken = [consumer.read_message() for _ in range(TAKEN)]
        consumer.rdy(0)
        finished = taken[:4]
        deferred = taken[4:8]
        held = taken[8:]
        for message in finished:
            consumer.fin(message.id)
        for message in deferred:
            consumer.req(message.id, 600_000)
        wait_for(
            lambda: (
                (stats := channel_stats(nsqd, CHANNEL))["in_flight_count"] == len(held)
                and stats["deferred_count"] == len(deferred) + 1
            )
        )
        self.assertTrue(channel_stats(nsqd, IDLE)["paused"])

        self.assertEqual(nsqd.stop(), 0, nsqd.output())
        consumer.close()
        publisher.close()
        with open(os.path.join(data_path, "nsqd.dat"), "rb") as f:
            saved = json.loads(f.read())
        [topic] = saved["topics"]
        self.assertEqual(topic["name"], TOPIC)
        self.assertEqual(
            sorted((c["name"], c["paused"]) for c in topic["channels"]), [(CHANNEL, False), (IDLE, True)]
        )

        restarted = start_nsqd(self, *flags, data_path=data_path)
        self.assertTrue(channel_stats(restarted, IDLE)["paused"], "the paused flag survives")
        self.assertEqual(channel_stats(restarted, IDLE)["depth"], COUNT + 1)
        expected_bodies = {b for b in bodies if b not in {m.body for m in finished}} | {b"dpub"}
        seen = drain(restarted, len(expected_bodies))
        self.assertEqual(set(seen), expected_bodies, "every unfinished message comes back, none lost")
        for message in deferred + held:
            self.assertEqual(seen[message.body], 2, f"{message.body!r}: attempts kept, plus this one")
        for body in expected_bodies - {m.body for m in deferred + held}:
            self.assertEqual(seen[body], 1, body)
        self.assertEqual(channel_stats(restarted, CHANNEL)["depth"], 0)

    def test_restart_keeps_everything(self) -> None:
        self.run_restart()

    def test_restart_keeps_everything_without_memory_queue(self) -> None:
        self.run_restart("--mem-queue-size=0")

    def test_restart_with_small_files(self) -> None:
        """Queues that roll over many data files come back whole."""
        self.run_restart("--mem-queue-size=5", "--max-bytes-per-file=200")

    def test_locked_data_path_refused(self) -> None:
        data_path = self.mktemp()
        start_nsqd(self, data_path=data_path)
        second = subprocess.run(
            [
                *nsqd_command(),
                "--tcp-address=127.0.0.1:0",
                "--http-address=127.0.0.1:0",
                "--https-address=127.0.0.1:0",
                f"--data-path={data_path}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(second.returncode, 1, second.stderr)
        self.assertIn(b"in use (possibly by another instance of nsqd)", second.stderr)
        self.assertNotIn(b"TCP: listening on", second.stderr)

    def test_corrupt_metadata_refused(self) -> None:
        """An unparsable nsqd.dat stops nsqd from starting, as Go's "failed to load metadata"."""
        data_path = self.mktemp()
        os.makedirs(data_path)
        with open(os.path.join(data_path, "nsqd.dat"), "wb") as f:
            f.write(b'{"topics":[')
        result = subprocess.run(
            [
                *nsqd_command(),
                "--tcp-address=127.0.0.1:0",
                "--http-address=127.0.0.1:0",
                "--https-address=127.0.0.1:0",
                f"--data-path={data_path}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(b"failed to load metadata - failed to parse metadata in ", result.stderr)
