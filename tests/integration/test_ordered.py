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

import os
import signal
import sys
import time

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._ordered import (
    CHANNEL,
    PHASE_TIMEOUT,
    TOPIC,
    ConsumerLog,
    OrderedProcessCase,
    accepted_fins,
    channel_stats,
    consumer_script,
    http_post,
)

TOTAL = 200_000
#: Phases: (publish up to this sequence number, then wait until this many are finished, then act).
KILL_CONSUMER_AT = 40_000
RESTART_NSQD_AT = 110_000

CONSUMER = consumer_script(
    r"""
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
"""
)


class SequenceLog(ConsumerLog):
    """The consumer's C{D seq attempts}, C{F seq}, C{R seq} lines."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.events: list[tuple[str, int, int]] = []

    def record(self, parts: list[str]) -> None:
        kind = parts[0]
        self.events.append((kind, int(parts[1]), int(parts[2]) if kind == "D" else 0))


class OrderedChannelProcessTests(OrderedProcessCase):
    CONSUMER = CONSUMER

    def consumer_params(self, nsqd: NSQDProcess) -> dict[str, object]:
        return {**super().consumer_params(nsqd), "last": TOTAL - 1}

    def test_fin_sequence_is_the_publish_sequence(self) -> None:
        started = time.monotonic()
        flags = ("--mem-queue-size=1000",)
        nsqd = start_nsqd(self, *flags, data_path=self.data_path)
        http_post(nsqd, f"/topic/create?topic={TOPIC}")
        http_post(nsqd, f"/channel/create?topic={TOPIC}&channel={CHANNEL}&ordered=true")
        self.assertIs(channel_stats(nsqd)["ordered"], True)
        log = SequenceLog(self.log_path)

        consumer = self.start_consumer(nsqd)
        self.publish(nsqd, 0, 80_000)
        self.wait_fins(nsqd, log, KILL_CONSUMER_AT)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        consumer = self.start_consumer(nsqd)

        self.publish(nsqd, 80_000, 150_000)
        self.assert_spilled(nsqd)
        self.wait_fins(nsqd, log, RESTART_NSQD_AT)
        nsqd = self.restart_nsqd(nsqd, flags)
        self.assertIs(channel_stats(nsqd)["ordered"], True, "the mode survives the restart")

        self.publish(nsqd, 150_000, TOTAL)
        self.wait_fins(nsqd, log, TOTAL)
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
