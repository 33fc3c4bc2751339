"""Tests for L{twisted_nsq.apps.nsq_tail}."""

from __future__ import annotations

import io
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps.nsq_tail import TAIL_FLAGS, Tail, check_values, ephemeral_channel
from twisted_nsq.client import Message


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(TAIL_FLAGS, list(argv)), random.Random(7))


class _Responder:
    def __init__(self) -> None:
        self.finished: list[bytes] = []
        self.requeued: list[bytes] = []

    def finish(self, message_id: bytes) -> None:
        self.finished.append(message_id)

    def requeue(self, message_id: bytes, delay_ms: int) -> None:
        self.requeued.append(message_id)

    def touch(self, message_id: bytes) -> None:
        pass


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults: max-in-flight 200, no limit, an ephemeral tail channel."""
        values = _values("--topic=t", "--nsqd-tcp-address=127.0.0.1:4150")
        self.assertEqual(values["topics"], ["t"])
        self.assertEqual(values["max_in_flight"], 200)
        self.assertEqual(values["total_messages"], 0)
        self.assertFalse(values["print_topic"])
        self.assertRegex(values["channel"], r"^tail\d{6}#ephemeral$")

    def test_ephemeral_channel(self) -> None:
        """The default channel is tail, six digits and #ephemeral."""
        self.assertRegex(ephemeral_channel(random.Random(1)), r"^tail\d{6}#ephemeral$")

    def test_n_limits_max_in_flight(self) -> None:
        """-n N (or --total-messages N) below max-in-flight lowers max-in-flight to N."""
        values = _values("-topic", "t", "-n", "10", "-lookupd-http-address", "l:4161", "--print-topic")
        self.assertEqual((values["total_messages"], values["max_in_flight"]), (10, 10))
        self.assertTrue(values["print_topic"])
        values = _values("--topic=t", "--total-messages=3", "--nsqd-tcp-address=a:1", "--channel=c")
        self.assertEqual((values["total_messages"], values["max_in_flight"], values["channel"]), (3, 3, "c"))

    def test_repeatable_topic(self) -> None:
        """--topic may be given several times."""
        self.assertEqual(_values("--topic=a", "--topic=b", "--nsqd-tcp-address=x:1")["topics"], ["a", "b"])

    def test_consumer_opt(self) -> None:
        """--consumer-opt becomes consumer keyword arguments."""
        values = _values("--topic=t", "--nsqd-tcp-address=x:1", "--consumer-opt=max_attempts,3")
        self.assertEqual(values["consumer_options"], {"max_attempts": 3})

    def test_config_file(self) -> None:
        """--config sets flags; the command line wins over the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('topics = ["fromfile"]\nchannel = "file"\nmax_in_flight = 7\nprint_topic = true\n')
        values = _values("--config", path, "--channel=cli", "--nsqd-tcp-address=x:1")
        self.assertEqual(values["topics"], ["fromfile"])
        self.assertEqual(
            (values["channel"], values["max_in_flight"], values["print_topic"]), ("cli", 7, True)
        )

    def test_errors(self) -> None:
        """A topic and exactly one kind of address are required."""
        self.assertRaises(FlagError, _values, "--nsqd-tcp-address=x:1")
        self.assertRaises(FlagError, _values, "--topic=t")
        self.assertRaises(
            FlagError, _values, "--topic=t", "--nsqd-tcp-address=x:1", "--lookupd-http-address=y:2"
        )
        self.assertRaises(FlagError, _values, "--topic=t", "--nsqd-tcp-address=x:1", "-n=-1")


class TailTests(SynchronousTestCase):
    def _message(self, responder: _Responder, body: bytes) -> Message:
        return Message(b"0" * 16, body, 1, 0, responder)

    def test_writes_and_stops(self) -> None:
        """Each body is written with a newline (prefixed with the topic if asked); done fires at N."""
        out = io.BytesIO()
        tail = Tail(out, 2, print_topic=True)
        handle = tail.handler("t")
        responder = _Responder()
        handle(self._message(responder, b"one"))
        self.assertNoResult(tail.done)
        handle(self._message(responder, b"two"))
        self.successResultOf(tail.done)
        handle(self._message(responder, b"three"))
        self.assertEqual(out.getvalue(), b"t | one\nt | two\n")
        self.assertEqual(len(responder.requeued), 1)

    def test_unlimited(self) -> None:
        """With no -n, done never fires."""
        out = io.BytesIO()
        tail = Tail(out, 0, print_topic=False)
        responder = _Responder()
        for body in (b"a", b"b", b"c"):
            tail.handler("t")(self._message(responder, body))
        self.assertEqual(out.getvalue(), b"a\nb\nc\n")
        self.assertNoResult(tail.done)
