"""Tests for L{twisted_nsq.apps._common}."""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, parse_or_exit, resolve
from twisted_nsq.apps._common import (
    CONSUMER_OPT,
    LOOKUPD_HTTP_ADDRESS,
    NSQD_TCP_ADDRESS,
    VERSION,
    parse_options,
)

FLAGS = (NSQD_TCP_ADDRESS, LOOKUPD_HTTP_ADDRESS, CONSUMER_OPT, VERSION)


class SharedFlagsTests(SynchronousTestCase):
    def test_repeatable_addresses(self) -> None:
        """The address flags collect every occurrence, in Go's spellings."""
        values = resolve(
            FLAGS,
            ["-nsqd-tcp-address=a:1", "--nsqd-tcp-address", "b:2", "--lookupd-http-address=c:3"],
        )
        self.assertEqual(values["nsqd_tcp_addresses"], ["a:1", "b:2"])
        self.assertEqual(values["lookupd_http_addresses"], ["c:3"])

    def test_defaults(self) -> None:
        """Without flags the lists are empty."""
        values = resolve(FLAGS, [])
        self.assertEqual(values["nsqd_tcp_addresses"], [])
        self.assertEqual(values["consumer_opt"], [])

    def test_version(self) -> None:
        """--version prints Go's version line and exits 0."""
        out = io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            parse_or_exit("nsq_tail", FLAGS, ["--version"], stdout=out, stderr=io.StringIO())
        self.assertEqual(caught.exception.code, 0)
        self.assertRegex(out.getvalue(), r"^nsq_tail v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\)\n$")


class ParseOptionsTests(SynchronousTestCase):
    def test_types(self) -> None:
        """Values take the type of the option; a bare name means true; dashes read as underscores."""
        options = parse_options(
            [
                "max_in_flight,5",
                "snappy",
                "heartbeat-interval,1000",
                "auth_secret,s3",
                "max_backoff_duration,2s",
            ],
            "consumer-opt",
            consumer=True,
        )
        self.assertEqual(
            options,
            {
                "max_in_flight": 5,
                "snappy": True,
                "heartbeat_interval": 1000,
                "auth_secret": "s3",
                "max_backoff_duration": 2.0,
            },
        )

    def test_float_seconds(self) -> None:
        """Duration options also take plain seconds."""
        self.assertEqual(
            parse_options(["stop_timeout,1.5"], "consumer-opt", consumer=True), {"stop_timeout": 1.5}
        )

    def test_consumer_only_refused_for_producer(self) -> None:
        """Consumer settings are unknown to --producer-opt."""
        with self.assertRaises(FlagError) as caught:
            parse_options(["max_in_flight,5"], "producer-opt", consumer=False)
        self.assertIn("-producer-opt", str(caught.exception))

    def test_unknown(self) -> None:
        """An unknown option is a flag error."""
        self.assertRaises(FlagError, parse_options, ["nope,1"], "consumer-opt", consumer=True)
        self.assertRaises(FlagError, parse_options, ["tls_options,x"], "consumer-opt", consumer=True)

    def test_bad_value(self) -> None:
        """A value that does not parse as the option's type is a flag error."""
        self.assertRaises(FlagError, parse_options, ["snappy,maybe"], "producer-opt", consumer=False)
        self.assertRaises(FlagError, parse_options, ["max_in_flight,x"], "consumer-opt", consumer=True)
