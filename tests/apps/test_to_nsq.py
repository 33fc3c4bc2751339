"""Tests for L{twisted_nsq.apps.to_nsq}."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps.to_nsq import TO_NSQ_FLAGS, Publisher, check_values


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(TO_NSQ_FLAGS, list(argv)))


class _FakeProducer:
    """Records publishes; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, Deferred[None]]] = []

    def publish(self, topic: str, body: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.published.append((topic, body, d))
        return d

    def ack_all(self) -> None:
        for _, _, d in self.published:
            if not d.called:
                d.callback(None)

    def bodies(self) -> list[bytes]:
        return [body for _, body, _ in self.published]


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults: newline delimiter, no rate limit."""
        values = _values("--topic=t", "--nsqd-tcp-address=a:1", "--nsqd-tcp-address=b:2")
        self.assertEqual(values["delimiter_byte"], b"\n")
        self.assertEqual(values["rate"], 0)
        self.assertEqual(values["nsqd_tcp_addresses"], ["a:1", "b:2"])
        self.assertEqual(values["producer_options"], {})

    def test_options(self) -> None:
        """--delimiter, --rate and --producer-opt."""
        values = _values(
            "-topic", "t", "-nsqd-tcp-address", "a:1", "-delimiter", ",", "-rate=5", "-producer-opt=snappy"
        )
        self.assertEqual((values["delimiter_byte"], values["rate"]), (b",", 5))
        self.assertEqual(values["producer_options"], {"snappy": True})

    def test_errors(self) -> None:
        """A topic, an nsqd and a one-byte delimiter are required."""
        self.assertRaises(FlagError, _values, "--nsqd-tcp-address=a:1")
        self.assertRaises(FlagError, _values, "--topic=t")
        self.assertRaises(FlagError, _values, "--topic=t", "--nsqd-tcp-address=a:1", "--delimiter=ab")
        self.assertRaises(FlagError, _values, "--topic=t", "--nsqd-tcp-address=a:1", "--rate=-1")
        self.assertRaises(FlagError, _values, "--topic=t", "--nsqd-tcp-address=a:1", "--producer-opt=x,1")


class PublisherTests(SynchronousTestCase):
    def test_every_producer_and_done(self) -> None:
        """Every record goes to every producer; done waits for stdin's end and every ack."""
        first, second = _FakeProducer(), _FakeProducer()
        publisher = Publisher(Clock(), [first, second], "t", b"\n", 0)  # type: ignore[list-item]
        publisher.dataReceived(b"a\nb")
        publisher.dataReceived(b"c\n\nd")
        self.assertEqual(first.bodies(), [b"a", b"bc"])
        publisher.connectionLost(None)
        self.assertEqual(first.bodies(), [b"a", b"bc", b"d"])
        self.assertEqual(second.bodies(), first.bodies())
        first.ack_all()
        self.assertNoResult(publisher.done)
        second.ack_all()
        self.successResultOf(publisher.done)
        self.assertEqual(publisher.published, 3)

    def test_rate(self) -> None:
        """With --rate N, records go out no faster than N a second."""
        clock = Clock()
        producer = _FakeProducer()
        publisher = Publisher(clock, [producer], "t", b",", 4)  # type: ignore[list-item]
        publisher.dataReceived(b"1,2,3,4,5,6")
        publisher.connectionLost(None)
        self.assertEqual(len(producer.published), 1)
        clock.advance(0.25)
        self.assertEqual(len(producer.published), 2)
        clock.advance(0.5)
        self.assertEqual(len(producer.published), 4)
        clock.advance(0.5)
        self.assertEqual(producer.bodies(), [b"1", b"2", b"3", b"4", b"5", b"6"])
        producer.ack_all()
        self.successResultOf(publisher.done)

    def test_publish_error(self) -> None:
        """A failed publish fails done once the others were answered, and stops publishing."""
        producer = _FakeProducer()
        publisher = Publisher(Clock(), [producer], "t", b"\n", 0)  # type: ignore[list-item]
        publisher.dataReceived(b"a\nb\n")
        producer.published[0][2].errback(RuntimeError("E_BAD_TOPIC"))
        self.assertNoResult(publisher.done)
        producer.published[1][2].callback(None)
        publisher.dataReceived(b"c\n")
        self.assertEqual(len(producer.published), 2)
        self.failureResultOf(publisher.done, RuntimeError)
