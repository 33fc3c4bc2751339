"""
The twisted-nsq L{Consumer} against several real nsqd processes: RDY redistribution drains three
nsqd with C{max_in_flight=1}, failing handlers make it back off and then recover, a message
requeued past C{max_attempts} is given up and finished, and TLS, snappy and deflate each carry a
consumer's messages.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration.test_tls_auth import Certificates
from twisted_nsq.client import Consumer, Message, Producer


def _reactor() -> Any:
    """The reactor trial runs, handed explicitly to the client."""
    from twisted.internet import reactor

    return reactor


def _channel_stats(nsqd: NSQDProcess, topic: str, channel: str) -> dict[str, Any]:
    """The channel's entry in nsqd's C{/stats}; a blocking GET is fine against another process."""
    url = f"http://{nsqd.http_hostport}/stats?format=json&topic={topic}"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats = json.loads(response.read())
    for found in stats["topics"]:
        if found["topic_name"] == topic:
            for entry in found["channels"]:
                if entry["channel_name"] == channel:
                    result: dict[str, Any] = entry
                    return result
    raise AssertionError(f"no channel {topic}/{channel} in {stats!r}")


class _Collector:
    """A handler that records bodies and fires L{done} once C{expected} distinct ones arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.bodies: set[bytes] = set()
        self.done: Deferred[None] = Deferred()

    def __call__(self, message: Message) -> None:
        self.bodies.add(message.body)
        if len(self.bodies) == self.expected and not self.done.called:
            self.done.callback(None)


class ClientClusterTests(TestCase):
    timeout = 50

    async def test_max_in_flight_one_drains_three_nsqd(self) -> None:
        """
        With three connections and C{max_in_flight=1}, only one connection holds RDY at a time;
        redistribution takes it from the idle one and hands it on until every nsqd is drained.
        """
        nsqds = [start_nsqd(self) for _ in range(3)]
        reactor = _reactor()
        expected: set[bytes] = set()
        for index, nsqd in enumerate(nsqds):
            producer = Producer([nsqd.tcp_hostport], reactor=reactor)
            self.addCleanup(producer.stop)
            bodies = [f"nsqd{index}-{n}".encode() for n in range(5)]
            expected.update(bodies)
            await producer.multi_publish("cluster_drain", bodies)
            await producer.stop()

        collector = _Collector(len(expected))
        rdy_totals: list[int] = []

        def handler(message: Message) -> None:
            rdy_totals.append(sum(consumer.rdy_state().values()))
            collector(message)

        # Short idle timeouts so that redistribution moves RDY on within seconds, not minutes.
        consumer = Consumer(
            "cluster_drain",
            "ch",
            handler,
            [nsqd.tcp_hostport for nsqd in nsqds],
            max_in_flight=1,
            low_rdy_idle_timeout=1.0,
            rdy_redistribute_interval=0.5,
            reactor=reactor,
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        await collector.done
        self.assertEqual(collector.bodies, expected)
        self.assertLessEqual(max(rdy_totals), 1)
        self.assertEqual(len(consumer.connections), 3)
        await consumer.stop()

    async def test_backoff_then_recover(self) -> None:
        """
        Requeues with backoff raise the backoff level and set RDY 0 everywhere; after the delay
        one connection gets RDY 1 (the probe), and successes bring the level back to 0.
        """
        nsqd = start_nsqd(self)
        reactor = _reactor()
        producer = Producer([nsqd.tcp_hostport], reactor=reactor)
        self.addCleanup(producer.stop)
        bodies = [f"m{n}".encode() for n in range(6)]
        await producer.multi_publish("client_backoff", bodies)
        await producer.stop()

        failures_left = 3
        levels_in_backoff: list[int] = []
        rdy_in_backoff: list[int] = []
        rdy_when_probed: list[int] = []
        finished: set[bytes] = set()
        done: Deferred[None] = Deferred()

        def handler(message: Message) -> None:
            nonlocal failures_left
            if consumer.backoff_level > 0:
                # Delivered while backing off: only the probe's RDY 1 lets a message through.
                rdy_when_probed.append(sum(consumer.rdy_state().values()))
            if failures_left:
                failures_left -= 1
                message.requeue(0, backoff=True)
                levels_in_backoff.append(consumer.backoff_level)
                rdy_in_backoff.append(sum(consumer.rdy_state().values()))
                return
            message.finish()
            finished.add(message.body)
            if len(finished) == len(bodies) and consumer.backoff_level == 0 and not done.called:
                done.callback(None)

        consumer = Consumer(
            "client_backoff",
            "ch",
            handler,
            [nsqd.tcp_hostport],
            max_in_flight=1,
            backoff_multiplier=0.05,
            reactor=reactor,
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        await done
        self.assertEqual(levels_in_backoff, [1, 2, 3])
        self.assertEqual(rdy_in_backoff, [0, 0, 0])
        self.assertTrue(rdy_when_probed)
        self.assertTrue(all(total == 1 for total in rdy_when_probed), rdy_when_probed)
        self.assertEqual(finished, set(bodies))
        self.assertEqual(consumer.backoff_level, 0)
        await consumer.stop()

    async def test_giving_up_after_max_attempts(self) -> None:
        """A message requeued C{max_attempts} times reaches C{giving_up} and is finished."""
        nsqd = start_nsqd(self)
        reactor = _reactor()
        producer = Producer([nsqd.tcp_hostport], reactor=reactor)
        self.addCleanup(producer.stop)
        await producer.publish("client_give_up", b"poison")
        await producer.stop()

        attempts_seen: list[int] = []
        given_up: Deferred[Message] = Deferred()

        def giving_up(message: Message) -> None:
            # Resume the test only after the consumer has gone on to FIN the message.
            reactor.callLater(0, given_up.callback, message)

        def handler(message: Message) -> None:
            attempts_seen.append(message.attempts)
            message.requeue(0, backoff=False)

        consumer = Consumer(
            "client_give_up",
            "ch",
            handler,
            [nsqd.tcp_hostport],
            max_in_flight=1,
            max_attempts=3,
            giving_up=giving_up,
            reactor=reactor,
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        message = await given_up
        self.assertEqual(attempts_seen, [1, 2, 3])
        self.assertEqual((message.body, message.attempts), (b"poison", 4))
        self.assertTrue(message.responded)
        # FIN is written before the hook's callLater fires, but nsqd handles it asynchronously.
        for _ in range(100):
            stats = _channel_stats(nsqd, "client_give_up", "ch")
            if stats["in_flight_count"] == 0:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual((stats["depth"], stats["in_flight_count"], stats["requeue_count"]), (0, 0, 3))
        self.assertEqual([client["finish_count"] for client in stats["clients"]], [1])
        await consumer.stop()

    async def _consume_with(self, nsqd: NSQDProcess, topic: str, **options: Any) -> Consumer:
        """Publish three messages plainly, then receive them all with a consumer using C{options}."""
        reactor = _reactor()
        producer = Producer([nsqd.tcp_hostport], reactor=reactor)
        self.addCleanup(producer.stop)
        bodies = [b"one", b"two" * 100, b"three" * 1000]
        await producer.multi_publish(topic, bodies)
        await producer.stop()
        collector = _Collector(len(bodies))
        consumer = Consumer(
            topic, "ch", collector, [nsqd.tcp_hostport], max_in_flight=3, reactor=reactor, **options
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        await collector.done
        self.assertEqual(collector.bodies, set(bodies))
        return consumer

    async def test_consumer_tls(self) -> None:
        certificates = Certificates(Path(self.mktemp()))
        nsqd = start_nsqd(self, *certificates.server_flags())
        trust = Certificate.loadPEM(Path(certificates.ca).read_bytes())
        consumer = await self._consume_with(
            nsqd,
            "client_tls_consume",
            tls_v1=True,
            tls_options=optionsForClientTLS("localhost", trustRoot=trust),
        )
        [connection] = consumer.connections
        self.assertTrue(connection.identify_response["tls_v1"])
        await consumer.stop()

    async def test_consumer_snappy(self) -> None:
        nsqd = start_nsqd(self)
        consumer = await self._consume_with(nsqd, "client_snappy_consume", snappy=True)
        [connection] = consumer.connections
        self.assertTrue(connection.identify_response["snappy"])
        await consumer.stop()

    async def test_consumer_deflate(self) -> None:
        nsqd = start_nsqd(self)
        consumer = await self._consume_with(nsqd, "client_deflate_consume", deflate=True, deflate_level=1)
        [connection] = consumer.connections
        self.assertTrue(connection.identify_response["deflate"])
        await consumer.stop()
