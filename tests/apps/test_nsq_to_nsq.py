"""Tests for L{twisted_nsq.apps.nsq_to_nsq} and its JSON filter (L{twisted_nsq.apps._jsonfilter})."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.apps._fakes import FakeProducer
from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps._hostpool import HostPool, RoundRobin
from twisted_nsq.apps._jsonfilter import Verdict, encode_go_json, filter_message
from twisted_nsq.apps._status import GoLog
from twisted_nsq.apps.nsq_to_nsq import NSQ_FLAGS, Republisher, check_values

BASE = ("--topic=t", "--nsqd-tcp-address=127.0.0.1:4150", "--destination-nsqd-tcp-address=127.0.0.1:5150")


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(NSQ_FLAGS, list(argv)))


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults."""
        values = _values(*BASE)
        self.assertEqual((values["topics"], values["channel"]), (["t"], "nsq_to_nsq"))
        self.assertEqual(values["destination_topic"], "")
        self.assertEqual(
            (values["max_in_flight"], values["status_every"], values["mode"]), (200, 250, "hostpool")
        )
        self.assertEqual(values["whitelist_json_fields"], [])
        self.assertRegex(values["producer_options"]["user_agent"], r"^nsq_to_nsq/1\.3\.0-twisted ")

    def test_options(self) -> None:
        """Repeatable topics, destinations and whitelist; the mode; option pass-through."""
        values = _values(
            *BASE,
            "--topic=u",
            "--destination-nsqd-tcp-address=127.0.0.1:6150",
            "--destination-topic=out",
            "--mode=round-robin",
            "--require-json-field=kind",
            "--require-json-value=a",
            "--whitelist-json-field=x",
            "--whitelist-json-field=y",
            "--producer-opt=snappy",
            "--consumer-opt=max_attempts,2",
        )
        self.assertEqual(values["topics"], ["t", "u"])
        self.assertEqual(values["destination_nsqd_tcp_addresses"], ["127.0.0.1:5150", "127.0.0.1:6150"])
        self.assertEqual((values["destination_topic"], values["mode"]), ("out", "round-robin"))
        self.assertEqual((values["require_json_field"], values["require_json_value"]), ("kind", "a"))
        self.assertEqual(values["whitelist_json_fields"], ["x", "y"])
        self.assertTrue(values["producer_options"]["snappy"])
        self.assertEqual(values["consumer_options"]["max_attempts"], 2)

    def test_errors(self) -> None:
        """Go's validation messages."""
        cases = [
            (
                ("--nsqd-tcp-address=a:1", "--destination-nsqd-tcp-address=b:2"),
                "--topic and --channel are required",
            ),
            ((*BASE, "--topic=bad topic"), "--topic is invalid"),
            ((*BASE, "--destination-topic=bad!"), "--destination-topic is invalid"),
            ((*BASE, "--channel=bad channel"), "--channel is invalid"),
            (
                ("--topic=t", "--destination-nsqd-tcp-address=b:2"),
                "--nsqd-tcp-address or --lookupd-http-address",
            ),
            (
                (*BASE, "--lookupd-http-address=l:1"),
                "use --nsqd-tcp-address or --lookupd-http-address not both",
            ),
            (("--topic=t", "--nsqd-tcp-address=a:1"), "--destination-nsqd-tcp-address required"),
            ((*BASE, "--producer-opt=max_in_flight,1"), "-producer-opt"),
        ]
        for argv, message in cases:
            with self.assertRaises(FlagError, msg=argv) as caught:
                _values(*argv)
            self.assertIn(message, str(caught.exception))

    def test_config_file(self) -> None:
        """--config sets flags; the command line wins over the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('topics = ["a"]\nrequire_json_field = "k"\ndestination_topic = "file"\n')
        values = _values("--config", path, "--destination-topic=cli", *BASE[1:])
        self.assertEqual(values["topics"], ["a"])
        self.assertEqual((values["require_json_field"], values["destination_topic"]), ("k", "cli"))


class FilterTests(SynchronousTestCase):
    def test_no_options(self) -> None:
        """Without JSON options every body passes untouched, JSON or not."""
        self.assertEqual(filter_message(b"not json", "", "", []), Verdict(b"not json"))

    def test_not_json(self) -> None:
        """A body that is not JSON is dropped (finished) with an error."""
        verdict = filter_message(b"{nope", "k", "", [])
        self.assertEqual((verdict.body, verdict.requeue), (None, False))
        self.assertEqual(verdict.error, "ERROR: Unable to decode json: {nope")
        self.assertIsNone(filter_message(b"NaN", "", "", ["a"]).body)

    def test_required_field(self) -> None:
        """Without the field: dropped; but requeued with an error when a value is also required."""
        self.assertEqual(filter_message(b'{"k": 1}', "k", "", []), Verdict(b'{"k": 1}'))
        self.assertEqual(filter_message(b'{"j": 1}', "k", "", []), Verdict(None))
        self.assertEqual(filter_message(b"[1]", "k", "", []), Verdict(None))
        self.assertEqual(
            filter_message(b'{"j": 1}', "k", "v", []),
            Verdict(None, requeue=True, error="ERROR: missing field to check required value"),
        )

    def test_required_value(self) -> None:
        """Strings compare as text; numbers compare numerically when the value is a number."""
        passes = [
            (b'{"k": "v"}', "v"),
            (b'{"k": "5"}', "5"),
            (b'{"k": 5}', "5"),
            (b'{"k": 5.0}', "5"),
            (b'{"k": 1e2}', "100"),
        ]
        for body, value in passes:
            self.assertEqual(filter_message(body, "k", value, []).body, body, (body, value))
        drops = [
            (b'{"k": "w"}', "v"),
            (b'{"k": 5}', "6"),
            (b'{"k": true}', "true"),
            (b'{"k": null}', "null"),
            (b'{"k": {"a": 1}}', "x"),
            (b'{"k": 5}', "five"),
        ]
        for body, value in drops:
            self.assertEqual(filter_message(body, "k", value, []), Verdict(None), (body, value))

    def test_whitelist(self) -> None:
        """Only whitelisted fields that are present are kept, keys sorted, numbers as written."""
        body = b'{"z": 1.50, "a": "x", "drop": 2, "n": {"b": [1, 2e3], "a": null}, "t": true}'
        verdict = filter_message(body, "", "", ["z", "n", "a", "missing", "t"])
        self.assertEqual(verdict.body, b'{"a":"x","n":{"a":null,"b":[1,2e3]},"t":true,"z":1.50}')
        self.assertEqual(filter_message(b'{"x": 1}', "", "", ["y"]).body, b"{}")

    def test_whitelist_after_filter(self) -> None:
        """The whitelist applies to messages that passed the requirement."""
        verdict = filter_message(b'{"kind": "a", "id": 7, "secret": "s"}', "kind", "a", ["id", "kind"])
        self.assertEqual(verdict.body, b'{"id":7,"kind":"a"}')

    def test_whitelist_not_object(self) -> None:
        """With a whitelist, a JSON value that is not an object is requeued."""
        verdict = filter_message(b"[1, 2]", "", "", ["a"])
        self.assertEqual((verdict.body, verdict.requeue), (None, True))
        self.assertEqual(verdict.error, "ERROR: filterMessage() failed: json is not an object")

    def test_encode(self) -> None:
        """Objects are written with sorted keys and no spaces; lists in order."""
        self.assertEqual(
            encode_go_json({"b": None, "a": [True, False, "x"]}), b'{"a":[true,false,"x"],"b":null}'
        )

    def test_go_string_escaping(self) -> None:
        """Strings are written as Go's encoding/json writes them."""
        body = '{"é": 1, "s": "q\\"\\\\\\/\\n\\r\\t\\b\\f\\u0001<>&\u2028\u2029é\\ud800"}'.encode()
        self.assertEqual(
            filter_message(body, "", "", ["s", "é"]).body,
            '{"s":"q\\"\\\\/\\n\\r\\t\\b\\f\\u0001\\u003c\\u003e\\u0026\\u2028\\u2029é\ufffd","é":1}'.encode(),
        )


class RepublisherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log = io.StringIO()
        self.first, self.second = FakeProducer(), FakeProducer()
        self.producers = {"a:1": self.first, "b:2": self.second}

    def _republisher(
        self, selector: RoundRobin, *, field: str = "", value: str = "", whitelist: tuple[str, ...] = ()
    ) -> Republisher:
        return Republisher(
            self.producers,
            selector,
            self.clock,
            require_field=field,
            require_value=value,
            whitelist=whitelist,
            log=GoLog(self.clock, self.log),
            status_every=0,
        )

    def test_finish_after_ack(self) -> None:
        """The handler's Deferred fires only once the destination acknowledged the publish."""
        republisher = self._republisher(RoundRobin(list(self.producers), self.clock))
        d = republisher.republish(b"m", "out")
        assert d is not None
        ((topic, body, ack),) = self.second.published
        self.assertEqual((topic, body), ("out", b"m"))
        self.assertNoResult(d)
        ack.callback(None)
        self.successResultOf(d)

    def test_requeue_on_publish_failure(self) -> None:
        """A failed publish fails the handler (requeue) and marks the destination dead."""
        pool = HostPool(list(self.producers), self.clock)
        republisher = self._republisher(pool)
        d = republisher.republish(b"m", "out")
        assert d is not None
        self.first.published[0][2].errback(ConnectionError("gone"))
        self.failureResultOf(d, ConnectionError)
        self.assertTrue(pool.is_dead("a:1"))
        republisher.republish(b"n", "out")
        self.assertEqual(len(self.second.published), 1)

    def test_filtered(self) -> None:
        """A filtered-out message is finished at once; a missing field with a value requeues."""
        republisher = self._republisher(RoundRobin(list(self.producers), self.clock), field="k", value="v")
        self.assertIsNone(republisher.republish(b'{"k": "w"}', "out"))
        self.assertIsNone(republisher.republish(b"garbage", "out"))
        self.assertRaises(RuntimeError, republisher.republish, b'{"j": 1}', "out")
        self.assertEqual(self.first.published + self.second.published, [])
        self.assertIn("ERROR: Unable to decode json: garbage", self.log.getvalue())
        self.assertIn("ERROR: missing field to check required value", self.log.getvalue())

    def test_handler_topic(self) -> None:
        """Each consumer's handler publishes to its destination topic, with the rewritten body."""
        republisher = self._republisher(RoundRobin(["a:1"], self.clock), whitelist=("id",))
        self.producers.pop("b:2")
        from twisted_nsq.client import Message

        class _Responder:
            def finish(self, message_id: bytes) -> None:
                pass

            def requeue(self, message_id: bytes, delay_ms: int) -> None:
                pass

            def touch(self, message_id: bytes) -> None:
                pass

        republisher.handler("dest")(Message(b"0" * 16, b'{"id": 1, "x": 2}', 1, 0, _Responder()))
        self.assertEqual([(t, b) for t, b, _ in self.first.published], [("dest", b'{"id":1}')])
