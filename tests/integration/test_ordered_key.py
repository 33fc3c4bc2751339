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

import os
import sys
import time
from collections import defaultdict

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._ordered import (
    CHANNEL,
    TOPIC,
    ConsumerLog,
    OrderedProcessCase,
    accepted_fins,
    channel_stats,
    consumer_script,
    http_post,
)

KEYS = 100
TOTAL = 50_000
RESTART_NSQD_AT = 20_000
FLAGS = ("--mem-queue-size=1000", "--ordered-max-pending=500")

CONSUMER = consumer_script(
    r"""
finished = [0]


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
"""
)


class KeyedLog(ConsumerLog):
    """The consumer's C{D key n attempts}, C{F key n}, C{R key n} lines, per key."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.events: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        self.requeues = 0

    def record(self, parts: list[str]) -> None:
        kind, key, n = parts[0], parts[1], int(parts[2])
        self.events[key].append((kind, n, int(parts[3]) if kind == "D" else 0))
        if kind == "R":
            self.requeues += 1


class OrderedByKeyProcessTests(OrderedProcessCase):
    CONSUMER = CONSUMER

    def setUp(self) -> None:
        super().setUp()
        self.max_in_flight = 0

    def body(self, seq: int) -> bytes:
        return b"k%d|%d" % (seq % KEYS, seq // KEYS)

    def tick(self, nsqd: NSQDProcess) -> None:
        self.note_in_flight(nsqd)

    def note_in_flight(self, nsqd: NSQDProcess) -> None:
        in_flight = channel_stats(nsqd)["in_flight_count"]
        assert isinstance(in_flight, int)
        self.max_in_flight = max(self.max_in_flight, in_flight)

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
        self.assert_spilled(nsqd)
        self.wait_fins(nsqd, log, RESTART_NSQD_AT)
        nsqd = self.restart_nsqd(nsqd, FLAGS)
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
            accepted, deliveries = accepted_fins(log.events[f"k{key}"], f"key k{key}: ")
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
