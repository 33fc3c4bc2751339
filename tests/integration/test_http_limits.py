"""nsqd's HTTP site on a real loopback socket: body limits, the request timeout, a normal publish."""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_nsq.nsqd.http import make_site
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions

_reactor: Any = reactor
TOO_BIG = b"HTTP/1.1 413 Request Entity Too Large"


class RawHTTP(Protocol):
    """Sends bytes as told and keeps everything the server answers until it closes."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[bytes] = Deferred()
        self.first_data: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.first_data.called:
            self.first_data.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(bytes(self.received))

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    return lines[0], headers, body


class HTTPLimitsTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        options = NSQDOptions(node_id=1, broadcast_address="127.0.0.1", max_msg_size=1024, max_body_size=4096)
        clock: IReactorTime = _reactor
        self.nsqd = NSQD(options, clock, random_source=random.Random(0))
        site = make_site(self.nsqd, clock, request_timeout=0.3)
        self.port: IListeningPort = _reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def connect(self) -> RawHTTP:
        endpoint = TCP4ClientEndpoint(_reactor, "127.0.0.1", self.port.getHost().port)  # type: ignore[attr-defined]
        client: RawHTTP = await connectProtocol(endpoint, RawHTTP())
        self.addCleanup(self.disconnect, client)
        return client

    def disconnect(self, client: RawHTTP) -> Deferred[bytes] | None:
        if client.closed.called:
            return None
        assert client.transport is not None
        client.transport.loseConnection()
        return client.closed

    async def test_publish_and_stats(self) -> None:
        client = await self.connect()
        client.send(
            b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
        status, headers, body = split_response(await client.closed)
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"OK"))
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(headers[b"x-nsq-content-type"], b"nsq; version=1.0")
        client = await self.connect()
        client.send(
            b"GET /stats?format=json&include_mem=false HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        status, headers, body = split_response(await client.closed)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(json.loads(body)["topics"][0]["message_count"], 1)
        self.assertEqual(headers[b"content-length"], b"%d" % len(body))

    async def test_content_length_refused_before_body(self) -> None:
        client = await self.connect()
        client.send(
            b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        raw = await client.closed
        status, headers, body = split_response(raw)
        self.assertEqual(status, b"HTTP/1.1 413 Request Entity Too Large")
        self.assertEqual(body, b'{"message":"MSG_TOO_BIG"}')
        self.assertEqual(headers[b"x-nsq-content-type"], b"nsq; version=1.0")
        self.assertNotIn(b"100 Continue", raw)
        self.assertEqual(self.nsqd.topics, {})

    async def test_mpub_limit(self) -> None:
        client = await self.connect()
        client.send(b"POST /mpub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n")
        status, _, body = split_response(await client.closed)
        self.assertEqual((status, body), (TOO_BIG, b'{"message":"BODY_TOO_BIG"}'))

    async def test_chunked_body_cut_off(self) -> None:
        client = await self.connect()
        client.send(b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
        client.send(b"1\r\ny\r\n")
        status, _, body = split_response(await client.closed)
        self.assertEqual((status, body), (TOO_BIG, b'{"message":"MSG_TOO_BIG"}'))
        self.assertEqual(self.nsqd.topics, {})

    async def test_slow_request_times_out(self) -> None:
        client = await self.connect()
        client.send(b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        status, _, body = split_response(await client.closed)
        self.assertEqual((status, body), (b"HTTP/1.1 408 Request Timeout", b'{"message":"REQUEST_TIMEOUT"}'))
        self.assertEqual(self.nsqd.topics, {})
