"""
The twisted-nsq client against a real nsqd process: L{Producer} publishes with PUB, MPUB and
DPUB over TLS and snappy, and a L{Consumer} receives every message over deflate; a L{Consumer}
given only an nsqlookupd finds the nsqd there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from tests.integration._daemon import start_nsqd, start_nsqlookupd
from tests.integration.test_tls_auth import Certificates
from twisted_nsq.client import Consumer, Message, NSQResponseError, Producer


def _reactor() -> Any:
    """The reactor trial runs, handed explicitly to the client."""
    from twisted.internet import reactor

    return reactor


class ClientTests(TestCase):
    timeout = 30

    async def test_publish_and_consume(self) -> None:
        certificates = Certificates(Path(self.mktemp()))
        nsqd = start_nsqd(self, *certificates.server_flags())
        reactor = _reactor()
        trust = Certificate.loadPEM(Path(certificates.ca).read_bytes())
        producer = Producer(
            [nsqd.tcp_hostport],
            reactor=reactor,
            tls_v1=True,
            tls_options=optionsForClientTLS("localhost", trustRoot=trust),
            snappy=True,
        )
        self.addCleanup(producer.stop)

        await producer.publish("client_test", b"one")
        connection = producer.connection
        assert connection is not None
        self.assertEqual(
            (connection.identify_response["tls_v1"], connection.identify_response["snappy"]), (True, True)
        )
        await producer.multi_publish("client_test", [b"two", b"three"])
        await producer.deferred_publish("client_test", b"four", 100)
        try:
            await producer.publish("client_test", b"x" * (1024 * 1024 + 1))
        except NSQResponseError as e:
            self.assertEqual(e.code, "E_BAD_MESSAGE")
        else:
            self.fail("a message over --max-msg-size was accepted")
        # The failed publish closed the connection; the next one reconnects.
        await producer.publish("client_test", b"five")

        received: list[bytes] = []
        all_received: Deferred[None] = Deferred()

        def handler(message: Message) -> None:
            received.append(message.body)
            if len(received) == 5:
                all_received.callback(None)

        consumer = Consumer(
            "client_test", "ch", handler, [nsqd.tcp_hostport], max_in_flight=10, reactor=reactor, deflate=True
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        await all_received
        self.assertEqual(sorted(received), [b"five", b"four", b"one", b"three", b"two"])
        await consumer.stop()
        await producer.stop()

    async def test_consume_through_lookupd(self) -> None:
        """A Consumer with only lookupd_http_addresses connects to the nsqd registered there."""
        lookupd = start_nsqlookupd(self)
        nsqd = start_nsqd(
            self, f"--lookupd-tcp-address={lookupd.tcp_hostport}", "--broadcast-address=127.0.0.1"
        )
        reactor = _reactor()
        producer = Producer([nsqd.tcp_hostport], reactor=reactor)
        self.addCleanup(producer.stop)
        await producer.multi_publish("lookupd_client_test", [b"one", b"two"])

        received: list[bytes] = []
        all_received: Deferred[None] = Deferred()

        def handler(message: Message) -> None:
            received.append(message.body)
            if len(received) == 3:
                all_received.callback(None)

        # A short poll interval: nsqd registers the topic with lookupd asynchronously.
        consumer = Consumer(
            "lookupd_client_test",
            "ch",
            handler,
            lookupd_http_addresses=[lookupd.http_hostport],
            max_in_flight=2,
            lookupd_poll_interval=0.2,
            reactor=reactor,
        )
        consumer.start()
        self.addCleanup(consumer.stop)
        await producer.publish("lookupd_client_test", b"three")
        await all_received
        self.assertEqual(sorted(received), [b"one", b"three", b"two"])
        self.assertEqual(consumer.nsqd_addresses, [f"127.0.0.1:{nsqd.tcp_address[1]}"])
        await consumer.stop()
        await producer.stop()
