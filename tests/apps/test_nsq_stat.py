"""Tests for L{twisted_nsq.apps.nsq_stat}."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps.nsq_stat import (
    HEADER,
    STAT_FLAGS,
    ChannelTotals,
    Stat,
    StatError,
    check_values,
    http_addresses_from_lookup,
    row,
)

BASE = ("--topic=t", "--channel=c", "--nsqd-http-address=a:1")


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(STAT_FLAGS, list(argv)))


def _channel(**counts: int) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "channel_name": "c",
        "depth": 0,
        "backend_depth": 0,
        "in_flight_count": 0,
        "deferred_count": 0,
        "requeue_count": 0,
        "timeout_count": 0,
        "message_count": 0,
        "client_count": 0,
        "clients": None,
    }
    channel.update(counts)
    return channel


def _stats(**counts: int) -> dict[str, Any]:
    channel = _channel(**counts)
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
        values = _values(*BASE)
        self.assertEqual((values["interval"], values["count"]), (2.0, None))
        self.assertEqual(
            (values["http_client_connect_timeout"], values["http_client_request_timeout"]), (2.0, 5.0)
        )

    def test_options(self) -> None:
        """--interval is a Go duration; --count an integer."""
        values = _values("-topic=t", "-channel=c", "-lookupd-http-address=l:1", "-interval=250ms", "-count=3")
        self.assertEqual((values["interval"], values["count"]), (0.25, 3))

    def test_errors(self) -> None:
        """Go's validation messages, in Go's order."""
        cases = [
            (("--channel=c", "--nsqd-http-address=a:1"), "--topic and --channel are required"),
            (("--topic=t", "--nsqd-http-address=a:1"), "--topic and --channel are required"),
            ((*BASE, "--interval=0"), "--interval should be positive"),
            ((*BASE, "--http-client-connect-timeout=0"), "--http-client-connect-timeout should be positive"),
            (
                (*BASE, "--http-client-request-timeout=-1s"),
                "--http-client-request-timeout should be positive",
            ),
            ((*BASE, "--count=0"), "--count should be positive"),
            (("--topic=t", "--channel=c"), "--nsqd-http-address or --lookupd-http-address required"),
            (
                (*BASE, "--lookupd-http-address=b:2"),
                "use --nsqd-http-address or --lookupd-http-address not both",
            ),
            (
                ("--topic=t", "--channel=c", "--nsqd-http-address=http://a:1"),
                "--nsqd-http-address error - address should not contain scheme",
            ),
            (
                ("--topic=t", "--channel=c", "--lookupd-http-address=https://a:1"),
                "--lookupd-http-address error - address should not contain scheme",
            ),
        ]
        for argv, message in cases:
            with self.assertRaises(FlagError, msg=argv) as caught:
                _values(*argv)
            self.assertEqual(str(caught.exception), message)

    def test_config_file(self) -> None:
        """--config sets flags; the command line wins over the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('topic = "t"\nchannel = "file"\ncount = 4\ninterval = "5s"\n')
        values = _values("--config", path, "--channel=cli", "--nsqd-http-address=a:1")
        self.assertEqual((values["channel"], values["count"], values["interval"]), ("cli", 4, 5.0))


class TableTests(SynchronousTestCase):
    def test_header(self) -> None:
        """Go's two header lines, character for character."""
        self.assertEqual(
            HEADER.splitlines(),
            [
                "------rate------+----------------depth----------------+--------------metadata---------------",
                "ingress  egress |   total     mem    disk inflt   def |"
                "     req     t-o         msgs clients",
            ],
        )

    def test_sums_over_nsqd(self) -> None:
        """Only the channel of the topic counts, summed over every nsqd."""
        totals = ChannelTotals()
        totals.add_stats(_stats(depth=5, backend_depth=2, client_count=1, message_count=10), "t", "c")
        totals.add_stats(_stats(depth=3, in_flight_count=4, requeue_count=6, client_count=2), "t", "c")
        totals.add_stats(None, "t", "c")
        self.assertTrue(totals.found)
        self.assertEqual(
            (totals.depth, totals.memory_depth, totals.backend_depth, totals.in_flight), (8, 6, 2, 4)
        )
        self.assertEqual((totals.requeued, totals.messages, totals.clients), (6, 10, 3))
        missing = ChannelTotals()
        missing.add_stats(_stats(), "t", "nope")
        self.assertFalse(missing.found)

    def test_clients_from_list(self) -> None:
        """Without client_count the clients are counted from the list."""
        totals = ChannelTotals()
        channel = _channel()
        del channel["client_count"]
        channel["clients"] = [{}, {}]
        totals.add_stats({"topics": [{"topic_name": "t", "channels": [channel]}]}, "t", "c")
        self.assertEqual(totals.clients, 2)

    def test_row(self) -> None:
        """Rates per second of interval (truncated); the rest are the current values, Go's widths."""
        previous = ChannelTotals(depth=10, messages=100)
        current = ChannelTotals(
            depth=13,
            backend_depth=4,
            in_flight=5,
            deferred=6,
            requeued=7,
            timed_out=8,
            messages=125,
            clients=2,
        )
        # 25 messages in 2 s: 12.5/s in, (25 - 3) / 2 = 11/s out.
        self.assertEqual(
            row(previous, current, 2.0),
            "     12      11 |      13       9       4     5     6 |       7       8          125       2\n",
        )
        # Depth fell more than messages came: egress exceeds ingress; negative truncates toward 0.
        self.assertEqual(
            row(ChannelTotals(depth=5, messages=1), ChannelTotals(depth=0, messages=1), 2.0)[:16],
            "      0       2 ",
        )
        self.assertEqual(row(ChannelTotals(messages=3), ChannelTotals(messages=0), 2.0)[:8], "     -1 ")

    def test_lookup(self) -> None:
        """nsqd HTTP addresses come from each producer's broadcast address and HTTP port."""
        reply = {"producers": [{"broadcast_address": "h", "http_port": 4151}, {"hostname": "x"}]}
        self.assertEqual(http_addresses_from_lookup(reply), ["h:4151"])
        self.assertEqual(http_addresses_from_lookup({"data": reply}), ["h:4151"])
        self.assertEqual(http_addresses_from_lookup([]), [])


class _Response:
    def __init__(self, code: int, body: object) -> None:
        self.code = code
        self._body = body

    def text(self) -> Deferred[str]:
        return succeed(json.dumps(self._body))


class _FakeHTTP:
    """Answers GETs from a table of URL prefixes; records the URLs."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies
        self.urls: list[str] = []

    def get(self, url: str, timeout: float) -> Deferred[_Response]:
        self.urls.append(url)
        for prefix, reply in self.replies.items():
            if url.startswith(prefix):
                if isinstance(reply, Exception):
                    return fail(reply)
                return succeed(_Response(200, reply))
        return succeed(_Response(404, {"message": "NOT_FOUND"}))


class PollTests(SynchronousTestCase):
    def _poll(self, stat: Stat) -> None:
        self.successResultOf(Deferred.fromCoroutine(stat.poll()))

    def test_rows(self) -> None:
        """The first poll prints the header only; each later poll a row; the header every 25 polls."""
        http = _FakeHTTP({"http://a:1/stats": _stats(depth=1, message_count=10)})
        out = io.StringIO()
        stat = Stat(_values(*BASE, "--interval=1s"), http, out)
        self._poll(stat)
        self.assertEqual(out.getvalue(), HEADER)
        http.replies["http://a:1/stats"] = _stats(depth=3, backend_depth=1, message_count=15, client_count=1)
        self._poll(stat)
        self.assertEqual(
            out.getvalue().splitlines()[2],
            "      5       3 |       3       2       1     0     0 |       0       0           15       1",
        )
        for _ in range(24):
            self._poll(stat)
        lines = out.getvalue().splitlines()
        # Header, 24 rows, header, the 25th row.
        self.assertEqual(len(lines), 2 + 24 + 2 + 1)
        self.assertEqual(lines[26:28], HEADER.splitlines())
        self.assertEqual(
            lines[28],
            "      0       0 |       3       2       1     0     0 |       0       0           15       1",
        )
        self.assertEqual((stat.polls, stat.rows), (26, 25))
        self.assertIn("include_clients=false", http.urls[0])
        self.assertIn("topic=t", http.urls[0])

    def test_sums_nsqd_from_lookupd(self) -> None:
        """With lookupd, every producer's nsqd is polled and the counters summed."""
        http = _FakeHTTP(
            {
                "http://l:1/lookup": {"producers": [{"broadcast_address": "n1", "http_port": 1}]},
                "http://l:2/lookup": {
                    "producers": [
                        {"broadcast_address": "n1", "http_port": 1},
                        {"broadcast_address": "n2", "http_port": 2},
                    ]
                },
                "http://n1:1/stats": _stats(depth=1, message_count=1),
                "http://n2:2/stats": _stats(depth=2, message_count=2),
            }
        )
        out = io.StringIO()
        stat = Stat(
            _values("--topic=t", "--channel=c", "--lookupd-http-address=l:1", "--lookupd-http-address=l:2"),
            http,
            out,
        )
        self._poll(stat)
        self._poll(stat)
        self.assertEqual(out.getvalue().splitlines()[2].split(), "0 0 | 3 3 0 0 0 | 0 0 3 0".split())
        self.assertEqual(sum(1 for url in http.urls if "/stats" in url), 4)

    def test_errors(self) -> None:
        """An nsqd that fails, or a channel no nsqd has, ends the polling with Go's message."""
        cases: list[tuple[str, dict[str, Any], str]] = [
            (
                "c",
                {"http://a:1/stats": ConnectionRefusedError("refused")},
                "ERROR: failed to get nsqd stats - ",
            ),
            ("c", {}, "ERROR: failed to get nsqd stats - got response 404"),
            (
                "x",
                {"http://a:1/stats": _stats()},
                "ERROR: failed to find channel(x) in stats metadata for topic(t)",
            ),
        ]
        for channel, replies, message in cases:
            values = _values("--topic=t", f"--channel={channel}", "--nsqd-http-address=a:1")
            stat = Stat(values, _FakeHTTP(replies), io.StringIO())
            failure = self.failureResultOf(Deferred.fromCoroutine(stat.poll()), StatError)
            self.assertTrue(str(failure.value).startswith(message), str(failure.value))
        lookup = Stat(
            _values("--topic=t", "--channel=c", "--lookupd-http-address=l:1"),
            _FakeHTTP({"http://l:1/lookup": ConnectionRefusedError("refused")}),
            io.StringIO(),
        )
        failure = self.failureResultOf(Deferred.fromCoroutine(lookup.poll()), StatError)
        self.assertTrue(str(failure.value).startswith("ERROR: failed to get topic producers - "))
        empty = Stat(
            _values("--topic=t", "--channel=c", "--lookupd-http-address=l:1"),
            _FakeHTTP({"http://l:1/lookup": {"producers": []}}),
            io.StringIO(),
        )
        failure = self.failureResultOf(Deferred.fromCoroutine(empty.poll()), StatError)
        self.assertEqual(str(failure.value), "ERROR: failed to get nsqd stats - Failed to query any nsqd")
