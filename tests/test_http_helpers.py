"""Tests for L{twisted_nsq._http}: V1 replies, Go-style query parsing, and the body-limited site."""

from __future__ import annotations

from typing import Any

from klein import Klein
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from twisted_nsq._gofmt import go_duration
from twisted_nsq._http import (
    APIError,
    BodyLimit,
    LimitedSite,
    Query,
    go_json,
    install_fallbacks,
    respond_plain,
    seconds_to_ns,
    v1_endpoint,
)

JSON = [b"application/json; charset=utf-8"]
TEXT = [b"text/plain; charset=utf-8"]
V1 = [b"nsq; version=1.0"]
TOO_BIG = b"413 Request Entity Too Large"


class Reply:
    """One response as a test sees it."""

    def __init__(self, code: int, headers: dict[bytes, list[bytes]], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> list[bytes] | None:
        return self.headers.get(name.lower())


def call(stub: Any, method: str, path: str, body: bytes | None = None) -> Reply:
    """Run one request through C{stub} synchronously."""
    replies: list[Reply] = []

    def got(response: Any) -> Any:
        headers = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
        return stub.content(response).addCallback(
            lambda content: replies.append(Reply(response.code, headers, content))
        )

    d = stub.request(method, "http://nsqd.test" + path, data=body)
    d.addCallback(got)
    stub.flush()
    assert replies, "no response"
    return replies[0]


class SampleApp:
    """A small app using every helper."""

    def __init__(self) -> None:
        self.app = Klein()
        self.bodies: list[bytes] = []
        self.args: list[dict[bytes, list[bytes]]] = []
        install_fallbacks(self.app)
        self.app.route("/json", methods=["GET"])(v1_endpoint(self.json))
        self.app.route("/text", methods=["GET"])(v1_endpoint(self.text))
        self.app.route("/bytes", methods=["GET"])(v1_endpoint(self.raw))
        self.app.route("/empty", methods=["GET", "POST"])(v1_endpoint(self.empty))
        self.app.route("/error", methods=["GET"])(v1_endpoint(self.error))
        self.app.route("/boom", methods=["GET"])(v1_endpoint(self.boom))
        self.app.route("/unwrapped", methods=["GET"])(self.unwrapped)
        self.app.route("/plain", methods=["GET"])(self.plain)
        self.app.route("/echo", methods=["POST"])(v1_endpoint(self.echo))

    def json(self, request: Request) -> object:
        return {"b": [1, 2.5, None], "a": "<&>\u2028é"}

    def text(self, request: Request) -> object:
        return "OK"

    def raw(self, request: Request) -> object:
        return b"raw\n"

    def empty(self, request: Request) -> object:
        return None

    def error(self, request: Request) -> object:
        raise APIError(404, "TOPIC_NOT_FOUND")

    def boom(self, request: Request) -> object:
        raise RuntimeError("broken")

    def unwrapped(self, request: Any) -> bytes:
        raise RuntimeError("broken outside v1_endpoint")

    def plain(self, request: Any) -> bytes:
        return respond_plain(request, 500, "NOK - disk full")

    def echo(self, request: Request) -> object:
        assert request.content is not None
        request.content.seek(0)
        body: bytes = request.content.read()
        self.bodies.append(body)
        self.args.append(dict(request.args or {}))
        return f"{len(body)}"


class EncodingTests(SynchronousTestCase):
    def test_go_json_compact_and_escaped(self) -> None:
        self.assertEqual(
            go_json({"a": "<b>&\u2028\u2029é", "n": [1, None, True]}),
            '{"a":"\\u003cb\\u003e\\u0026\\u2028\\u2029é","n":[1,null,true]}'.encode(),
        )

    def test_go_duration(self) -> None:
        cases = {
            0: "0s",
            1: "1ns",
            999: "999ns",
            1_500: "1.5µs",
            1_000: "1µs",
            2_345_000: "2.345ms",
            1_000_000_000: "1s",
            21_768_000_000: "21.768s",
            60_000_000_000: "1m0s",
            434_000_000_000: "7m14s",
            3_600_000_000_000: "1h0m0s",
            3_723_004_000_000: "1h2m3.004s",
            -1_500: "-1.5µs",
            123_456_789: "123.456789ms",
        }
        for ns, text in cases.items():
            self.assertEqual(go_duration(ns), text, ns)

    def test_seconds_to_ns(self) -> None:
        self.assertEqual(seconds_to_ns(60.0), 60_000_000_000)
        self.assertEqual(seconds_to_ns(0.025), 25_000_000)


class QueryTests(SynchronousTestCase):
    def test_first_value_wins(self) -> None:
        query = Query.parse(b"topic=a&topic=b&x=1")
        self.assertEqual(query.get("topic"), "a")
        self.assertEqual(query.values["topic"], ["a", "b"])

    def test_unescaping(self) -> None:
        query = Query.parse(b"t=a+b%2Fc&empty=&bare&%41=%e2%9c%93")
        self.assertEqual(query.get("t"), "a b/c")
        self.assertEqual(query.get("empty"), "")
        self.assertEqual(query.get("bare"), "")
        self.assertIn("bare", query)
        self.assertEqual(query.get("A"), "\u2713")
        self.assertIsNone(query.get("missing"))
        self.assertNotIn("missing", query)

    def test_empty_pairs_skipped(self) -> None:
        self.assertEqual(Query.parse(b"&&a=1&").values, {"a": ["1"]})
        self.assertEqual(Query.parse(b"").values, {})

    def test_invalid(self) -> None:
        for raw in (b"a=%zz", b"a=%4", b"a=1;b=2", b"%=1", b"ok=1&bad=%"):
            with self.assertRaises(APIError) as caught:
                Query.parse(raw)
            self.assertEqual((caught.exception.code, caught.exception.message), (400, "INVALID_REQUEST"))

    def test_flag(self) -> None:
        query = Query.parse(b"t=true&o=1&f=false&z=0&x=yes&e=")
        self.assertEqual(
            [query.flag(k) for k in ("t", "o", "f", "z", "x", "e", "missing")],
            [True, True, False, False, True, True, True],
        )
        self.assertFalse(query.flag("missing", default=False))
        self.assertFalse(query.flag("x", default=False))


class ReplyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sample = SampleApp()
        self.stub = StubTreq(self.sample.app.resource())

    def test_json(self) -> None:
        reply = call(self.stub, "GET", "/json")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.body, '{"b":[1,2.5,null],"a":"\\u003c\\u0026\\u003e\\u2028é"}'.encode())
        self.assertEqual(reply.header(b"Content-Type"), JSON)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_text(self) -> None:
        for path, body in (("/text", b"OK"), ("/bytes", b"raw\n")):
            reply = call(self.stub, "GET", path)
            self.assertEqual((reply.code, reply.body), (200, body))
            self.assertEqual(reply.header(b"Content-Type"), TEXT)
            self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_empty(self) -> None:
        reply = call(self.stub, "GET", "/empty")
        self.assertEqual((reply.code, reply.body), (200, b""))
        self.assertIsNone(reply.header(b"Content-Type"))
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_error(self) -> None:
        reply = call(self.stub, "GET", "/error")
        self.assertEqual((reply.code, reply.body), (404, b'{"message":"TOPIC_NOT_FOUND"}'))
        self.assertEqual(reply.header(b"Content-Type"), JSON)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_unexpected_exception(self) -> None:
        for path in ("/boom", "/unwrapped"):
            reply = call(self.stub, "GET", path)
            self.assertEqual((reply.code, reply.body), (500, b'{"message":"INTERNAL_ERROR"}'))
            self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_not_found(self) -> None:
        reply = call(self.stub, "GET", "/nothing/here")
        self.assertEqual((reply.code, reply.body), (404, b'{"message":"NOT_FOUND"}'))
        self.assertEqual(reply.header(b"Content-Type"), JSON)
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_method_not_allowed(self) -> None:
        reply = call(self.stub, "PUT", "/empty")
        self.assertEqual((reply.code, reply.body), (405, b'{"message":"METHOD_NOT_ALLOWED"}'))
        self.assertEqual(reply.header(b"Allow"), [b"GET, HEAD, POST"])
        self.assertEqual(reply.header(b"X-NSQ-Content-Type"), V1)

    def test_plain(self) -> None:
        reply = call(self.stub, "GET", "/plain")
        self.assertEqual((reply.code, reply.body), (500, b"NOK - disk full"))
        self.assertEqual(reply.header(b"Content-Type"), TEXT)
        self.assertIsNone(reply.header(b"X-NSQ-Content-Type"))


def _policy(method: bytes, uri: bytes) -> BodyLimit:
    if uri.startswith(b"/echo"):
        return BodyLimit(10, "MSG_TOO_BIG")
    return BodyLimit(4, "BODY_TOO_BIG")


class LimitedSiteTests(SynchronousTestCase):
    """The site over a StringTransport: what reaches the wire, and when the body is refused."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.sample = SampleApp()
        self.site = LimitedSite(self.sample.app.resource(), _policy, self.clock, request_timeout=5.0)
        self.transport = StringTransport()
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert self.channel is not None
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        return lines[0], headers, body

    def rejection(self, code: bytes, message: bytes) -> bytes:
        body = b'{"message":"' + message + b'"}'
        return (
            b"HTTP/1.1 " + code + b"\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"X-NSQ-Content-Type: nsq; version=1.0\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)
        ) + body

    def test_small_body_passes(self) -> None:
        self.send(b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
        status, headers, body = self.response()
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(body, b"10")
        self.assertEqual(headers[b"content-length"], b"2")
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(self.sample.bodies, [b"0123456789"])
        self.assertFalse(self.transport.disconnecting)

    def test_form_bodies_not_parsed(self) -> None:
        self.send(
            b"POST /echo?q=1 HTTP/1.1\r\nHost: a\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b"
        )
        self.assertEqual(self.sample.args, [{b"q": [b"1"]}])

    def test_content_length_too_big(self) -> None:
        # Answered from the headers alone: no "100 Continue", no body read, connection closed.
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(self.transport.value(), self.rejection(TOO_BIG, b"MSG_TOO_BIG"))
        self.assertTrue(self.transport.disconnecting)
        self.send(b"01234567890")
        self.assertEqual(self.sample.bodies, [])

    def test_limit_chosen_by_endpoint(self) -> None:
        self.send(b"POST /other HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(self.transport.value(), self.rejection(TOO_BIG, b"BODY_TOO_BIG"))

    def test_body_in_same_packet_not_dispatched(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n012345678901")
        self.assertEqual(self.transport.value(), self.rejection(TOO_BIG, b"MSG_TOO_BIG"))
        self.assertEqual(self.sample.bodies, [])

    def test_chunked_body_too_big(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.send(b"6\r\n012345\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.send(b"5\r\n67890\r\n0\r\n\r\n")
        self.assertEqual(self.transport.value(), self.rejection(TOO_BIG, b"MSG_TOO_BIG"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.sample.bodies, [])

    def test_chunked_body_within_limit(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.send(b"6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n")
        self.assertEqual(self.response()[2], b"10")
        self.assertEqual(self.sample.bodies, [b"0123456789"])

    def test_request_timeout(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123")
        self.clock.advance(4.9)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.transport.value(), self.rejection(b"408 Request Timeout", b"REQUEST_TIMEOUT"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.sample.bodies, [])

    def test_timeout_cancelled_once_received(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        self.transport.clear()
        self.clock.advance(10)
        self.assertEqual(self.transport.value(), b"")
        self.assertFalse(self.transport.disconnecting)

    def test_keep_alive_second_request(self) -> None:
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        self.transport.clear()
        self.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nyz")
        self.assertEqual(self.response()[2], b"2")
        self.assertEqual(self.sample.bodies, [b"x", b"yz"])
