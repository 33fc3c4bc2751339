"""Tests for L{twisted_nsq.apps.nsq_to_http} and its status lines (L{twisted_nsq.apps._status})."""

from __future__ import annotations

import io
import random
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps._hostpool import HostPool, RoundRobin
from twisted_nsq.apps._status import GoLog, TimerMetrics, percentile
from twisted_nsq.apps.nsq_to_http import (
    HTTP_FLAGS,
    HTTPForwarder,
    check_values,
    get_url,
    parse_headers,
)
from twisted_nsq.client import Message

BASE = ("--topic=t", "--nsqd-tcp-address=127.0.0.1:4150")


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(HTTP_FLAGS, list(argv)))


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults."""
        values = _values(*BASE, "--post=http://h/p")
        self.assertEqual(values["channel"], "nsq_to_http")
        self.assertEqual((values["max_in_flight"], values["num_publishers"]), (200, 100))
        self.assertEqual((values["mode"], values["sample"], values["status_every"]), ("hostpool", 1.0, 250))
        self.assertEqual(
            (values["http_client_connect_timeout"], values["http_client_request_timeout"]), (2.0, 20.0)
        )
        self.assertEqual(values["content_type"], "application/octet-stream")
        self.assertEqual((values["method"], values["addresses"]), ("POST", ["http://h/p"]))
        self.assertRegex(values["consumer_options"]["user_agent"], r"^nsq_to_http/1\.3\.0-twisted ")

    def test_options(self) -> None:
        """Every flag in Go's spellings; --get switches to GET."""
        values = _values(
            *BASE,
            "-get",
            "http://a/?m=%s",
            "-get=http://b/%s",
            "-n",
            "5",
            "--mode=Epsilon-Greedy",
            "--sample=0.5",
            "--header",
            "X-A: 1",
            "--header=X-B=2",
            "--http-client-request-timeout=1s",
            "--consumer-opt=max_attempts,3",
        )
        self.assertEqual((values["method"], values["addresses"]), ("GET", ["http://a/?m=%s", "http://b/%s"]))
        self.assertEqual(
            (values["num_publishers"], values["mode"], values["sample"]), (5, "epsilon-greedy", 0.5)
        )
        self.assertEqual(values["headers_map"], {"X-A": "1", "X-B": "2"})
        self.assertEqual(values["http_client_request_timeout"], 1.0)
        self.assertEqual(values["consumer_options"]["max_attempts"], 3)

    def test_errors(self) -> None:
        """Go's validation messages."""
        cases = [
            (("--nsqd-tcp-address=a:1", "--post=http://h"), "--topic and --channel are required"),
            ((*BASE, "--channel=", "--post=http://h"), "--topic and --channel are required"),
            (
                (*BASE, "--get=http://h/%s", "--content-type=text/plain"),
                "--content-type only used with --post",
            ),
            ((*BASE, "--post=http://h", "--content-type="), "--content-type requires a value when used"),
            (("--topic=t", "--post=http://h"), "--nsqd-tcp-address or --lookupd-http-address required"),
            (
                (*BASE, "--lookupd-http-address=l:1", "--post=http://h"),
                "use --nsqd-tcp-address or --lookupd-http-address not both",
            ),
            (BASE, "--get or --post required"),
            ((*BASE, "--get=http://h/%s", "--post=http://h"), "use --get or --post not both"),
            ((*BASE, "--get=http://h/"), "invalid GET address - must be a printf string"),
            ((*BASE, "--get=http://h/%s/%s"), "invalid GET address - must be a printf string"),
            ((*BASE, "--post=http://h", "--sample=1.5"), "ERROR: --sample must be between 0.0 and 1.0"),
            ((*BASE, "--post=http://h", "-n=0"), "-n must be at least 1"),
            ((*BASE, "--post=http://h", "--header=nocolon"), "invalid --header"),
        ]
        for argv, message in cases:
            with self.assertRaises(FlagError, msg=argv) as caught:
                _values(*argv)
            self.assertIn(message, str(caught.exception))
        self.assertRaises(FlagError, resolve, HTTP_FLAGS, ["--mode=multicast"])

    def test_config_file(self) -> None:
        """--config sets flags; the command line wins over the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                'topic = "fromfile"\nchannel = "c"\npost_addresses = ["http://file/"]\nnum_publishers = 7\n'
            )
        values = _values("--config", path, "--topic=cli", "--nsqd-tcp-address=a:1")
        self.assertEqual((values["topic"], values["channel"], values["num_publishers"]), ("cli", "c", 7))
        self.assertEqual(values["addresses"], ["http://file/"])


class HeaderTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """Go's 'name: value' (trimmed), and name=value; the first separator splits."""
        self.assertEqual(
            parse_headers(["h1: v1", "h2:v2", "h3=v=3", "Authorization: Basic YQ==", "h4 = a:b"]),
            {"h1": "v1", "h2": "v2", "h3": "v=3", "Authorization": "Basic YQ==", "h4": "a:b"},
        )

    def test_invalid(self) -> None:
        """A missing name or value, or no separator, is refused (Go's test cases)."""
        for bad in ("header1:", ": value2", ":", "novalue", "=x"):
            self.assertRaises(FlagError, parse_headers, [bad])


class GetURLTests(SynchronousTestCase):
    def test_escape(self) -> None:
        """%s becomes the query-escaped body (space as +); %% a percent sign."""
        self.assertEqual(
            get_url("http://h/?m=%s&p=100%%", b"a b&c=d/\xc3\xa9~"),
            "http://h/?m=a+b%26c%3Dd%2F%C3%A9~&p=100%",
        )
        self.assertEqual(get_url("http://h/%s%", b"x"), "http://h/x%")
        self.assertEqual(get_url("http://h/%d%s", b"x"), "http://h/%dx")


class _Endpoint(Resource):
    """Records each request; answers with the next code of C{codes} (200 when they run out)."""

    isLeaf = True

    def __init__(self, codes: list[int] | None = None, hold: bool = False) -> None:
        super().__init__()
        self.codes = list(codes or [])
        self.hold = hold
        self.requests: list[tuple[bytes, bytes, dict[bytes, list[bytes]], bytes]] = []
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        headers = {name.lower(): list(values) for name, values in request.requestHeaders.getAllRawHeaders()}
        assert request.content is not None
        self.requests.append((request.method, request.uri, headers, request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b"reply"


class _Responder:
    def __init__(self) -> None:
        self.finished: list[bytes] = []

    def finish(self, message_id: bytes) -> None:
        self.finished.append(message_id)

    def requeue(self, message_id: bytes, delay_ms: int) -> None:
        pass

    def touch(self, message_id: bytes) -> None:
        pass


def _message(body: bytes) -> Message:
    return Message(b"0" * 16, body, 1, 0, _Responder())


class ForwarderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log_stream = io.StringIO()

    def _forwarder(
        self,
        endpoint: _Endpoint,
        addresses: list[str],
        *,
        method: str = "POST",
        selector: RoundRobin | None = None,
        headers: dict[str, str] | None = None,
        concurrency: int = 10,
        sample: float = 1.0,
        status_every: int = 0,
    ) -> tuple[HTTPForwarder, StubTreq]:
        http = StubTreq(endpoint)
        forwarder = HTTPForwarder(
            http,
            self.clock,
            selector if selector is not None else RoundRobin(addresses, self.clock),
            method=method,
            content_type="text/plain",
            headers=headers or {},
            request_timeout=5.0,
            concurrency=concurrency,
            sample=sample,
            rng=random.Random(3),
            log=GoLog(self.clock, self.log_stream),
            status_every=status_every,
        )
        return forwarder, http

    def _result(self, d: Deferred[None] | None, http: StubTreq) -> Deferred[None]:
        assert d is not None
        http.flush()
        return d

    def test_post(self) -> None:
        """POST carries the body, the content type, the user agent and the custom headers."""
        endpoint = _Endpoint()
        forwarder, http = self._forwarder(endpoint, ["http://h/one"], headers={"X-Key": "k"})
        self.successResultOf(self._result(forwarder.handle(_message(b"body")), http))
        ((method, uri, headers, body),) = endpoint.requests
        self.assertEqual((method, uri, body), (b"POST", b"/one", b"body"))
        self.assertEqual(headers[b"content-type"], [b"text/plain"])
        self.assertEqual(headers[b"x-key"], [b"k"])
        self.assertEqual(headers[b"user-agent"], [b"nsq_to_http v1.3.0-twisted"])

    def test_post_status(self) -> None:
        """Any 2xx finishes a POST; anything else fails it (requeue) and is logged."""
        endpoint = _Endpoint([204, 299, 300, 500])
        forwarder, http = self._forwarder(endpoint, ["http://h/"])
        self.successResultOf(self._result(forwarder.handle(_message(b"a")), http))
        self.successResultOf(self._result(forwarder.handle(_message(b"b")), http))
        self.failureResultOf(self._result(forwarder.handle(_message(b"c")), http), RuntimeError)
        failure = self.failureResultOf(self._result(forwarder.handle(_message(b"d")), http), RuntimeError)
        self.assertEqual(str(failure.value), "got status code 500")
        self.assertIn("WARNING: POST to http://h/ failed - got status code 500", self.log_stream.getvalue())

    def test_get(self) -> None:
        """GET fills the URL; only exactly 200 finishes; no content type is sent."""
        endpoint = _Endpoint([200, 201])
        forwarder, http = self._forwarder(endpoint, ["http://h/get?m=%s"], method="GET")
        self.successResultOf(self._result(forwarder.handle(_message(b"a b")), http))
        self.failureResultOf(self._result(forwarder.handle(_message(b"c")), http), RuntimeError)
        self.assertEqual([r[:2] for r in endpoint.requests], [(b"GET", b"/get?m=a+b"), (b"GET", b"/get?m=c")])
        self.assertNotIn(b"content-type", endpoint.requests[0][2])

    def test_round_robin(self) -> None:
        """Messages go to the addresses in turn."""
        endpoint = _Endpoint()
        forwarder, http = self._forwarder(endpoint, ["http://h/a", "http://h/b"])
        for body in (b"1", b"2", b"3"):
            self.successResultOf(self._result(forwarder.handle(_message(body)), http))
        self.assertEqual([r[1] for r in endpoint.requests], [b"/b", b"/a", b"/b"])

    def test_hostpool_marks(self) -> None:
        """A failed request marks its address dead in the host pool."""
        endpoint = _Endpoint([500])
        selector = HostPool(["http://h/a", "http://h/b"], self.clock)
        forwarder, http = self._forwarder(endpoint, [], selector=selector)
        self.failureResultOf(self._result(forwarder.handle(_message(b"1")), http), RuntimeError)
        self.assertTrue(selector.is_dead("http://h/a"))
        for _ in range(2):
            self.successResultOf(self._result(forwarder.handle(_message(b"x")), http))
        self.assertEqual([r[1] for r in endpoint.requests], [b"/a", b"/b", b"/b"])

    def test_sample(self) -> None:
        """With --sample 0 nothing is sent: the handler returns None (finish)."""
        endpoint = _Endpoint()
        forwarder, _ = self._forwarder(endpoint, ["http://h/"], sample=0.0)
        self.assertIsNone(forwarder.handle(_message(b"x")))
        self.assertEqual(endpoint.requests, [])

    def test_concurrency(self) -> None:
        """At most -n requests are outstanding; the others wait for one to finish."""
        endpoint = _Endpoint(hold=True)
        forwarder, http = self._forwarder(endpoint, ["http://h/"], concurrency=2)
        results = [forwarder.handle(_message(b"%d" % i)) for i in range(3)]
        http.flush()
        self.assertEqual(len(endpoint.held), 2)
        endpoint.held[0].setResponseCode(200)
        endpoint.held[0].finish()
        http.flush()
        self.assertEqual(len(endpoint.held), 3)
        assert results[0] is not None
        self.successResultOf(results[0])

    def test_timeout(self) -> None:
        """A request that gets no reply within the request timeout fails (requeue)."""
        endpoint = _Endpoint(hold=True)
        forwarder, http = self._forwarder(endpoint, ["http://h/"])
        d = forwarder.handle(_message(b"x"))
        assert d is not None
        http.flush()
        self.assertNoResult(d)
        self.clock.advance(5.0)
        self.failureResultOf(d)

    def test_status_lines(self) -> None:
        """Every --status-every successes an aggregate and a per-address line are logged."""
        endpoint = _Endpoint()
        forwarder, http = self._forwarder(endpoint, ["http://h/a", "http://h/b"], status_every=2)
        for _ in range(5):
            self.successResultOf(self._result(forwarder.handle(_message(b"x")), http))
        lines = [line.split(" ", 2)[2] for line in self.log_stream.getvalue().splitlines()]
        self.assertIn("[aggregate]: finished 2 - 99th: 0.00ms - 95th: 0.00ms - avg: 0.00ms", lines)
        self.assertIn("[http://h/b]: finished 2 - 99th: 0.00ms - 95th: 0.00ms - avg: 0.00ms", lines)


class TimerMetricsTests(SynchronousTestCase):
    def test_window(self) -> None:
        """A line is logged when the window of N has filled and one more arrives, over the last N."""
        lines: list[str] = []
        metrics = TimerMetrics(100, "[x]:", lines.append)
        for i in range(100):
            metrics.status((i + 1) / 1000)
        self.assertEqual(lines, [])
        metrics.status(0.5)
        self.assertEqual(lines, ["[x]: finished 100 - 99th: 500.00ms - 95th: 98.00ms - avg: 55.49ms"])

    def test_disabled_and_warning(self) -> None:
        """0 disables the lines; fewer than 100 warns, as timer_metrics does."""
        lines: list[str] = []
        TimerMetrics(0, "[x]:", lines.append).status(1.0)
        self.assertEqual(lines, [])
        TimerMetrics(5, "[x]:", lines.append)
        self.assertEqual(
            lines, ["Warning: use more than 100 status values for accurate percentiles (configured with 5)"]
        )

    def test_percentile(self) -> None:
        """timer_metrics' index: ceil(p/100*n + 0.5), capped at the last element."""
        self.assertEqual(percentile(95.0, [float(i) for i in range(10)]), 9.0)
        self.assertEqual(percentile(50.0, [float(i) for i in range(10)]), 6.0)
        self.assertEqual(percentile(99.0, []), 0.0)

    def test_go_log(self) -> None:
        """Go's log line: date, time, message."""
        stream = io.StringIO()
        GoLog(Clock(), stream)("hello")
        self.assertRegex(stream.getvalue(), r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d hello\n$")
