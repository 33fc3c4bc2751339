"""Tests for L{twisted_nsq.apps.to_nsq}."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.apps._fakes import FakeProducer
from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps.to_nsq import TO_NSQ_FLAGS, Publisher, check_values, start_progress


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(TO_NSQ_FLAGS, list(argv)))


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


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class ConfigTests(SynchronousTestCase):
    def test_config_file(self) -> None:
        """--config sets flags; the command line wins over the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('topic = "fromfile"\nrate = 9\nnsqd_tcp_addresses = ["a:1"]\ndelimiter = ","\n')
        values = _values("--config", path, "--rate=3")
        self.assertEqual((values["topic"], values["rate"], values["delimiter_byte"]), ("fromfile", 3, b","))
        self.assertEqual(values["nsqd_tcp_addresses"], ["a:1"])


class ProgressTests(SynchronousTestCase):
    def test_terminal(self) -> None:
        """
        On a terminal one line is rewritten with \\r a few times a second: records read, records
        acknowledged by every nsqd and the rate; finishing ends the line.
        """
        clock = Clock()
        stream = _Terminal()
        first, second = FakeProducer(), FakeProducer()
        publisher = Publisher(clock, [first, second], "t", b"\n", 0)  # type: ignore[list-item]
        progress = start_progress(clock, stream, publisher)
        assert progress is not None
        self.assertEqual(stream.getvalue(), "\rread: 0  published: 0  rate: 0.0/s")
        publisher.dataReceived(b"a\nb\nc\n")
        first.ack_all()
        clock.advance(0.1)
        # Not yet: at most one update per interval.
        self.assertEqual(stream.getvalue().count("\r"), 1)
        clock.advance(0.15)
        self.assertTrue(stream.getvalue().endswith("\rread: 3  published: 0  rate: 0.0/s"))
        second.ack_all()
        clock.advance(0.25)
        self.assertTrue(stream.getvalue().endswith("\rread: 3  published: 3  rate: 6.0/s"))
        publisher.connectionLost(None)
        progress.finish()
        self.assertTrue(stream.getvalue().endswith("\rread: 3  published: 3  rate: 6.0/s\n"))
        clock.advance(1.0)
        self.assertEqual(stream.getvalue().count("\n"), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pads_shorter_line(self) -> None:
        """A line shorter than the one before is padded so that no old characters remain."""
        clock = Clock()
        stream = _Terminal()
        publisher = Publisher(clock, [FakeProducer()], "t", b"\n", 0)  # type: ignore[list-item]
        progress = start_progress(clock, stream, publisher)
        assert progress is not None
        publisher.read = 1000
        progress.update()
        publisher.read = 1
        progress.update()
        last = stream.getvalue().rsplit("\r", 1)[1]
        self.assertEqual(last, "read: 1  published: 0  rate: 0.0/s   ")
        progress.finish()

    def test_not_terminal(self) -> None:
        """When stderr is not a terminal nothing is shown and no timer runs."""
        clock = Clock()
        stream = io.StringIO()
        publisher = Publisher(clock, [FakeProducer()], "t", b"\n", 0)  # type: ignore[list-item]
        self.assertIsNone(start_progress(clock, stream, publisher))
        publisher.dataReceived(b"a\n")
        clock.advance(1.0)
        self.assertEqual(stream.getvalue(), "")
        self.assertEqual(clock.getDelayedCalls(), [])


class PublisherTests(SynchronousTestCase):
    def test_every_producer_and_done(self) -> None:
        """Every record goes to every producer; done waits for stdin's end and every ack."""
        first, second = FakeProducer(), FakeProducer()
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
        self.assertEqual((publisher.read, publisher.published, publisher.confirmed), (3, 3, 3))

    def test_rate(self) -> None:
        """With --rate N, records go out no faster than N a second."""
        clock = Clock()
        producer = FakeProducer()
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
        producer = FakeProducer()
        publisher = Publisher(Clock(), [producer], "t", b"\n", 0)  # type: ignore[list-item]
        publisher.dataReceived(b"a\nb\n")
        producer.published[0][2].errback(RuntimeError("E_BAD_TOPIC"))
        self.assertNoResult(publisher.done)
        producer.published[1][2].callback(None)
        publisher.dataReceived(b"c\n")
        self.assertEqual(len(producer.published), 2)
        self.failureResultOf(publisher.done, RuntimeError)
