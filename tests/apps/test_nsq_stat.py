"""Tests for L{twisted_nsq.apps.nsq_stat}."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps.nsq_stat import (
    HEADER,
    STAT_FLAGS,
    ChannelTotals,
    check_values,
    http_addresses_from_lookup,
)


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(STAT_FLAGS, list(argv)))


def _stats(depth: int, backend: int, clients: int) -> dict[str, Any]:
    channel = {
        "channel_name": "c",
        "depth": depth,
        "backend_depth": backend,
        "in_flight_count": 1,
        "deferred_count": 2,
        "requeue_count": 3,
        "timeout_count": 4,
        "message_count": 10,
        "clients": [{}] * clients,
    }
    other = dict(channel, channel_name="other")
    return {
        "topics": [
            {"topic_name": "t", "channels": [other, channel]},
            {"topic_name": "u", "channels": [channel]},
        ]
    }


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults: a 2s interval, reports forever, 2s/5s HTTP timeouts."""
        values = _values("--topic=t", "--channel=c", "--nsqd-http-address=a:1")
        self.assertEqual((values["interval"], values["count"]), (2.0, 0))
        self.assertEqual(
            (values["http_client_connect_timeout"], values["http_client_request_timeout"]), (2.0, 5.0)
        )

    def test_options(self) -> None:
        """--interval is a Go duration; --count an integer."""
        values = _values("-topic=t", "-channel=c", "-lookupd-http-address=l:1", "-interval=250ms", "-count=3")
        self.assertEqual((values["interval"], values["count"]), (0.25, 3))

    def test_errors(self) -> None:
        """Topic, channel and exactly one kind of address are required."""
        self.assertRaises(FlagError, _values, "--channel=c", "--nsqd-http-address=a:1")
        self.assertRaises(FlagError, _values, "--topic=t", "--nsqd-http-address=a:1")
        self.assertRaises(FlagError, _values, "--topic=t", "--channel=c")
        self.assertRaises(
            FlagError,
            _values,
            "--topic=t",
            "--channel=c",
            "--nsqd-http-address=a:1",
            "--lookupd-http-address=b:2",
        )
        self.assertRaises(
            FlagError, _values, "--topic=t", "--channel=c", "--nsqd-http-address=a:1", "--interval=0"
        )


class TableTests(SynchronousTestCase):
    def test_header(self) -> None:
        """The header names Go's columns."""
        self.assertEqual(
            HEADER.splitlines()[1].split(), "total mem disk inflt def | req t-o msgs clients".split()
        )

    def test_sums_over_nsqd(self) -> None:
        """Only the channel of the topic counts, summed over every nsqd."""
        totals = ChannelTotals()
        totals.add_stats(_stats(5, 2, 1), "t", "c")
        totals.add_stats(_stats(3, 0, 2), "t", "c")
        totals.add_stats(None, "t", "c")
        self.assertEqual(totals.line().split(), ["8", "6", "2", "2", "4", "|", "6", "8", "20", "3"])

    def test_lookup(self) -> None:
        """nsqd HTTP addresses come from each producer's broadcast address and HTTP port."""
        reply = {"producers": [{"broadcast_address": "h", "http_port": 4151}, {"hostname": "x"}]}
        self.assertEqual(http_addresses_from_lookup(reply), ["h:4151"])
        self.assertEqual(http_addresses_from_lookup({"data": reply}), ["h:4151"])
        self.assertEqual(http_addresses_from_lookup([]), [])
