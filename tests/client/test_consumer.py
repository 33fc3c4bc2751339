"""
L{twisted_nsq.client.consumer}: SUB and RDY per connection, handler results turned into FIN or
REQ, giving up, reconnection and stopping, with a fake endpoint, in-memory transports and a
L{Clock}.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_nsq.client.consumer import Consumer, ConsumerOptions, lookup_url, producer_addresses, rdy_counts
from twisted_nsq.client.message import Message
from twisted_nsq.wire.frames import (
    CLOSE_WAIT_FRAME,
    FRAME_TYPE_MESSAGE,
    OK_FRAME,
    encode_frame,
    encode_message,
    error_frame,
    response_frame,
)

IDENTIFY_REPLY = response_frame(json.dumps({"max_rdy_count": 2500}).encode())


def message_frame(number: int, attempts: int = 1) -> bytes:
    return encode_frame(
        FRAME_TYPE_MESSAGE, encode_message(0, attempts, b"%016d" % number, b"body%d" % number)
    )


class Peer:
    """One connection the consumer made: its protocol and what it sent."""

    def __init__(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        self.transport = StringTransport()
        protocol.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """What was sent since the last call."""
        sent: bytes = self.transport.value()
        self.transport.clear()
        return sent

    def subscribe(self) -> None:
        """Answer IDENTIFY and SUB."""
        self.receive(IDENTIFY_REPLY)
        self.receive(OK_FRAME)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    def __init__(self, address: str, peers: dict[str, list[Peer]]) -> None:
        self.address = address
        self.peers = peers

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = protocolFactory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        self.peers.setdefault(self.address, []).append(Peer(protocol))
        return succeed(protocol)


class FixedRandom(random.Random):
    """Randomness the tests choose: C{random()} is 0.5, C{randrange} takes the next of C{picks}."""

    def __init__(self) -> None:
        super().__init__(0)
        self.picks: list[int] = []

    def random(self) -> float:
        return 0.5

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        assert stop is None
        pick = self.picks.pop(0) if self.picks else 0
        assert 0 <= pick < start
        return pick


class FakeResponse:
    def __init__(self, code: int, body: object) -> None:
        self.code = code
        self.body = body

    def json(self) -> Deferred[object]:
        return succeed(self.body)


class FakeHTTP:
    """Records each GET; the test answers them in order."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]], Deferred[FakeResponse]]] = []

    def get(self, url: str, headers: dict[str, list[str]]) -> Deferred[FakeResponse]:
        answer: Deferred[FakeResponse] = Deferred()
        self.requests.append((url, headers, answer))
        return answer

    def urls(self) -> list[str]:
        return [url for url, _, _ in self.requests]

    def answer(self, index: int, *producers: tuple[str, int], code: int = 200) -> None:
        body = {
            "channels": ["ch"],
            "producers": [{"broadcast_address": host, "tcp_port": port} for host, port in producers],
        }
        self.requests[index][2].callback(FakeResponse(code, body))


def lookup_body(*addresses: str) -> dict[str, object]:
    return {"producers": [{"broadcast_address": a.split(":")[0], "tcp_port": 4150} for a in addresses]}


class ConsumerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rng = FixedRandom()
        self.http = FakeHTTP()
        self.clock = Clock()
        self.peers: dict[str, list[Peer]] = {}
        self.handled: list[Message] = []
        self.given_up: list[Message] = []
        self.result: object = None
        self.respond_first = False
        self.consumer_giving_up: Callable[[Message], object] = self.given_up.append

    def consumer(self, addresses: list[str], max_in_flight: int | None = 1, **kwargs: Any) -> Consumer:
        def handler(message: Message) -> object:
            self.handled.append(message)
            if self.respond_first:
                message.requeue(0, backoff=False)
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

        consumer = Consumer(
            "t",
            "ch",
            handler,
            addresses,
            max_in_flight,
            reactor=self.clock,
            endpoint_factory=lambda address: FakeEndpoint(address, self.peers),
            retry_policy=lambda attempt: 1.0,
            giving_up=lambda message: self.consumer_giving_up(message),
            client_id="c",
            hostname="h",
            rng=self.rng,
            http_client=self.http,
            **kwargs,
        )
        consumer.start()
        return consumer

    def peer(self, address: str = "n1:4150", index: int = -1) -> Peer:
        return self.peers[address][index]

    def test_sub_and_rdy(self) -> None:
        """
        Each nsqd gets IDENTIFY, SUB, then RDY; a second connection lowers the first before it is
        raised itself.
        """
        consumer = self.consumer(["n1:4150", "n2:4150"], max_in_flight=5)
        first, second = self.peer("n1:4150"), self.peer("n2:4150")
        self.assertTrue(first.take().startswith(b"  V2IDENTIFY\n"))
        second.take()
        first.receive(IDENTIFY_REPLY)
        self.assertEqual(first.take(), b"SUB t ch\n")
        first.receive(OK_FRAME)
        self.assertEqual(first.take(), b"RDY 5\n")
        second.subscribe()
        self.assertEqual(first.take(), b"RDY 2\n")
        self.assertEqual(second.take(), b"SUB t ch\nRDY 2\n")
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 2, "n2:4150": 2})
        self.assertEqual(len(consumer.connections), 2)

    def test_finish_and_requeue(self) -> None:
        """A handler that returns finishes; one that raises requeues with 90 s x attempts."""
        self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        peer.take()
        peer.receive(message_frame(1))
        self.assertEqual(peer.take(), b"FIN 0000000000000001\n")
        self.result = RuntimeError("handler failure")
        peer.receive(message_frame(2, attempts=2))
        self.assertEqual(peer.take(), b"REQ 0000000000000002 180000\nRDY 0\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([m.body for m in self.handled], [b"body1", b"body2"])

    def test_deferred_and_coroutine(self) -> None:
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        peer.take()
        pending: Deferred[None] = Deferred()
        self.result = pending
        peer.receive(message_frame(1))
        self.assertEqual(peer.take(), b"")
        self.assertEqual(consumer.in_flight, 1)
        pending.errback(ValueError("later failure"))
        self.assertEqual(peer.take(), b"REQ 0000000000000001 90000\nRDY 0\n")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(consumer.in_flight, 0)

        async def handled() -> None:
            return None

        self.result = handled()
        peer.receive(message_frame(2))
        self.assertEqual(peer.take(), b"FIN 0000000000000002\n")

    def test_handler_responds_itself(self) -> None:
        """A handler that answered the message itself is not answered again."""
        self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        peer.take()

        self.respond_first = True
        peer.receive(message_frame(1))
        self.assertEqual(peer.take(), b"REQ 0000000000000001 0\n")

    def test_giving_up(self) -> None:
        """A message delivered more than max_attempts times is finished without the handler."""
        self.consumer(["n1:4150"], max_attempts=5)
        peer = self.peer()
        peer.subscribe()
        peer.take()
        peer.receive(message_frame(1, attempts=6))
        self.assertEqual(peer.take(), b"FIN 0000000000000001\n")
        self.assertEqual(self.handled, [])
        self.assertEqual([m.attempts for m in self.given_up], [6])
        peer.receive(message_frame(2, attempts=5))
        self.assertEqual(len(self.handled), 1)

    def test_sub_failure(self) -> None:
        """A refused SUB closes the connection; its service connects again after the retry delay."""
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        peer.receive(IDENTIFY_REPLY)
        peer.receive(error_frame(b"E_SUB_FAILED SUB failed"))
        self.assertTrue(peer.transport.disconnecting)
        peer.lose()
        self.assertEqual(consumer.connections, [])
        self.clock.advance(1.0)
        again = self.peer()
        self.assertIsNot(again, peer)
        again.subscribe()
        self.assertTrue(again.take().endswith(b"SUB t ch\nRDY 1\n"))

    def test_giving_up_hook_fails(self) -> None:
        """A failing giving_up hook is logged; the message is finished anyway."""
        self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        peer.take()

        def broken(message: Message) -> None:
            raise KeyError("hook")

        self.consumer_giving_up = broken
        peer.receive(message_frame(1, attempts=9))
        self.assertEqual(peer.take(), b"FIN 0000000000000001\n")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_non_fatal_error(self) -> None:
        """E_FIN_FAILED is logged and leaves the connection up."""
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        peer.receive(error_frame(b"E_FIN_FAILED FIN x failed ID not in flight"))
        self.assertFalse(peer.transport.disconnecting)
        self.assertEqual(len(consumer.connections), 1)

    def test_reconnect(self) -> None:
        """A lost connection is retried by its service; the others get its share of RDY meanwhile."""
        consumer = self.consumer(["n1:4150", "n2:4150"], max_in_flight=4)
        first, second = self.peer("n1:4150"), self.peer("n2:4150")
        first.subscribe()
        second.subscribe()
        first.take()
        second.take()
        first.lose()
        self.assertEqual(second.take(), b"RDY 4\n")
        self.assertEqual(len(self.peers["n1:4150"]), 1)
        self.clock.advance(1.0)
        again = self.peer("n1:4150")
        self.assertIsNot(again, first)
        again.subscribe()
        self.assertEqual(second.take(), b"RDY 2\n")
        self.assertTrue(again.take().endswith(b"}SUB t ch\nRDY 2\n"))
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 2, "n2:4150": 2})

    def test_stop(self) -> None:
        """stop sends CLS, waits for CLOSE_WAIT and in-flight messages, then closes."""
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        pending: Deferred[None] = Deferred()
        self.result = pending
        peer.receive(message_frame(1))
        peer.take()
        stopped = consumer.stop()
        self.assertEqual(peer.take(), b"CLS\n")
        peer.receive(CLOSE_WAIT_FRAME)
        self.assertFalse(peer.transport.disconnecting)
        pending.callback(None)
        self.assertEqual(peer.take(), b"FIN 0000000000000001\n")
        self.assertTrue(peer.transport.disconnecting)
        self.assertNoResult(stopped)
        peer.lose()
        self.successResultOf(stopped)
        self.clock.advance(60)
        self.assertEqual(len(self.peers["n1:4150"]), 1)

    def test_stop_timeout(self) -> None:
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        peer.subscribe()
        self.result = Deferred()
        peer.receive(message_frame(1))
        stopped = consumer.stop()
        self.clock.advance(29)
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(peer.transport.disconnecting)
        peer.lose()
        self.successResultOf(stopped)

    def test_stop_before_subscribed(self) -> None:
        consumer = self.consumer(["n1:4150"])
        peer = self.peer()
        stopped = consumer.stop()
        self.assertTrue(peer.transport.disconnecting)
        peer.lose()
        self.successResultOf(stopped)
        self.successResultOf(consumer.stop())

    def test_validation(self) -> None:
        def handler(message: Message) -> None:
            return None

        self.assertRaises(ValueError, Consumer, "bad topic", "ch", handler, ["n:1"])
        self.assertRaises(ValueError, Consumer, "t", "bad channel", handler, ["n:1"])
        self.assertRaises(ValueError, Consumer, "t", "ch", handler, [])
        self.assertRaises(TypeError, Consumer, "t", "ch", handler, "n:1")
        self.assertRaises(ValueError, Consumer, "t", "ch", handler, ["n:1"], 0)
        self.assertRaises(ValueError, Consumer, "t", "ch", handler, ["n:1"], max_attempts=-1)
        self.assertRaises(ValueError, Consumer, "t", "ch", handler, ["n:1"], heartbeat_interval=-1)
        self.assertRaises(TypeError, Consumer, "t", "ch", handler, lookupd_http_addresses="l:4161")
        self.assertRaises(ValueError, Consumer, "t", "ch", handler, ["n:1"], backoff_multiplier=-1)
        self.assertRaises(TypeError, Consumer, "t", "ch", handler, ["n:1"], lookupd_poll_jitter="0.3")

    def test_options(self) -> None:
        """ConsumerOptions has go-nsq's defaults and names the option in its errors."""
        options = ConsumerOptions()
        self.assertEqual(
            (
                options.max_in_flight,
                options.max_attempts,
                options.lookupd_poll_interval,
                options.lookupd_poll_jitter,
                options.default_requeue_delay,
                options.max_requeue_delay,
                options.backoff_multiplier,
                options.max_backoff_duration,
                options.rdy_redistribute_interval,
                options.low_rdy_idle_timeout,
                options.low_rdy_timeout,
            ),
            (1, 5, 60.0, 0.3, 90.0, 900.0, 1.0, 120.0, 5.0, 10.0, 30.0),
        )
        error = self.assertRaises(ValueError, ConsumerOptions, lookupd_poll_jitter=1.5)
        self.assertEqual(str(error), "lookupd_poll_jitter must be between 0 and 1, not 1.5")
        error = self.assertRaises(ValueError, ConsumerOptions, max_in_flight=0)
        self.assertIn("max_in_flight must be between 1 and", str(error))

    def test_options_merged(self) -> None:
        """Keyword options override the config; IDENTIFY fields go to the connection options."""

        def handler(message: Message) -> None:
            return None

        consumer = Consumer(
            "t",
            "ch",
            handler,
            ["n:1"],
            config=ConsumerOptions(max_in_flight=7, max_attempts=2),
            max_attempts=3,
            msg_timeout=5000,
        )
        self.assertEqual((consumer.max_in_flight, consumer.config.max_attempts), (7, 3))
        self.assertEqual(consumer.connection_options.msg_timeout, 5000)
        self.assertEqual(Consumer("t", "ch", handler, ["n:1"], 9, config=ConsumerOptions()).max_in_flight, 9)

    def test_auth(self) -> None:
        """With auth_secret, AUTH goes between IDENTIFY and SUB when nsqd requires it."""
        self.consumer(["n1:4150"], auth_secret="pw")
        peer = self.peer()
        peer.take()
        peer.receive(response_frame(json.dumps({"max_rdy_count": 2500, "auth_required": True}).encode()))
        self.assertEqual(peer.take(), b"AUTH\n\x00\x00\x00\x02pw")
        peer.receive(response_frame(b'{"identity":"u","identity_url":"","permission_count":1}'))
        self.assertEqual(peer.take(), b"SUB t ch\n")
        peer.receive(OK_FRAME)
        self.assertEqual(peer.take(), b"RDY 1\n")

    # Lookupd

    def test_lookupd_polling(self) -> None:
        """
        The lookupd are polled round-robin: at once, then every interval after a jitter of
        random() x 0.3 x interval; new producers are connected, vanished ones kept.
        """
        consumer = self.consumer([], lookupd_http_addresses=["l1:4161", "http://l2:4161/?x=1"])
        self.assertEqual(self.http.urls(), ["http://l1:4161/lookup?topic=t"])
        self.assertEqual(self.http.requests[0][1], {"Accept": ["application/vnd.nsq; version=1.0"]})
        self.http.answer(0, ("n1", 4150))
        self.assertEqual(consumer.nsqd_addresses, ["n1:4150"])
        self.peer("n1:4150").subscribe()
        # Jitter 0.5 x 0.3 x 60 = 9 s, then the first tick 60 s later.
        self.clock.advance(9)
        self.clock.advance(59)
        self.assertEqual(len(self.http.requests), 1)
        self.clock.advance(1)
        self.assertEqual(self.http.urls()[1], "http://l2:4161/lookup?x=1&topic=t")
        self.http.answer(1, ("n1", 4150), ("n2", 4150))
        self.assertEqual(consumer.nsqd_addresses, ["n1:4150", "n2:4150"])
        self.assertEqual(len(self.peers["n1:4150"]), 1)
        self.clock.advance(60)
        self.assertEqual(self.http.urls()[2], "http://l1:4161/lookup?topic=t")
        self.http.answer(2, ("n2", 4150))
        self.assertEqual(consumer.nsqd_addresses, ["n1:4150", "n2:4150"])
        self.assertFalse(self.peer("n1:4150").transport.disconnecting)
        stopped = consumer.stop()
        self.peer("n1:4150").receive(CLOSE_WAIT_FRAME)
        self.peer("n1:4150").lose()
        self.peer("n2:4150").lose()
        self.successResultOf(stopped)
        self.clock.advance(600)
        self.assertEqual(len(self.http.requests), 3)

    def test_lookupd_retry(self) -> None:
        """
        A failed query (error, non-200, malformed reply) moves on to the next lookupd, three
        attempts in all.
        """
        self.consumer([], lookupd_http_addresses=["l1:4161", "l2:4161"])
        self.http.requests[0][2].errback(ConnectionError("refused"))
        self.http.answer(1, code=404)
        self.assertEqual(
            self.http.urls(),
            [
                "http://l1:4161/lookup?topic=t",
                "http://l2:4161/lookup?topic=t",
                "http://l1:4161/lookup?topic=t",
            ],
        )
        self.http.requests[2][2].callback(FakeResponse(200, {"producers": [{"tcp_port": 1}]}))
        self.assertEqual(len(self.http.requests), 3)
        self.http.get = lambda url, headers: fail(ValueError("bad url"))  # type: ignore[method-assign]
        self.clock.advance(69)
        self.assertEqual(len(self.http.requests), 3)
        self.assertEqual(self.peers, {})

    def test_lookupd_repoll_on_close(self) -> None:
        """As go-nsq, a lost connection to a discovered nsqd asks lookupd again at once."""
        self.consumer([], lookupd_http_addresses=["l1:4161"])
        self.http.answer(0, ("n1", 4150))
        peer = self.peer("n1:4150")
        peer.subscribe()
        peer.lose()
        self.assertEqual(len(self.http.requests), 2)

    def test_lookup_url_and_reply(self) -> None:
        self.assertEqual(lookup_url("l:4161", "t"), "http://l:4161/lookup?topic=t")
        self.assertEqual(lookup_url("https://l:1/custom?a=b", "t"), "https://l:1/custom?a=b&topic=t")
        self.assertEqual(
            producer_addresses({"producers": [{"broadcast_address": "::1", "tcp_port": 4150}]}),
            ["[::1]:4150"],
        )
        self.assertEqual(producer_addresses({"data": lookup_body("a")}), ["a:4150"])
        self.assertRaises(ValueError, producer_addresses, {"message": "TOPIC_NOT_FOUND"})
        self.assertRaises(ValueError, producer_addresses, {"producers": [None]})

    # RDY distribution

    def test_redistribution(self) -> None:
        """
        With max_in_flight 1 and 3 nsqd, only the first gets RDY 1; every 5 s an idle holder
        (no message for more than 10 s) loses it and a random connection gets RDY 1.
        """
        consumer = self.consumer(["n1:4150", "n2:4150", "n3:4150"], max_in_flight=1)
        peers = [self.peer(f"n{i}:4150") for i in (1, 2, 3)]
        for peer in peers:
            peer.subscribe()
        self.assertEqual([peer.take().endswith(b"SUB t ch\n") for peer in peers], [False, True, True])
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 1, "n2:4150": 0, "n3:4150": 0})
        pending: Deferred[None] = Deferred()
        self.result = pending
        peers[0].receive(message_frame(1))
        self.assertTrue(consumer.is_starved())
        pending.callback(None)
        self.assertFalse(consumer.is_starved())
        self.assertEqual(peers[0].take(), b"FIN 0000000000000001\n")
        self.clock.advance(10)
        self.assertEqual([peer.take() for peer in peers], [b"", b"", b""])
        self.rng.picks = [2]
        self.clock.advance(5)
        self.assertEqual([peer.take() for peer in peers], [b"RDY 0\n", b"", b"RDY 1\n"])
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 0, "n2:4150": 0, "n3:4150": 1})

    def test_no_redistribution_when_enough(self) -> None:
        """With max_in_flight >= connections, the timer leaves idle connections alone."""
        self.consumer(["n1:4150", "n2:4150"], max_in_flight=2)
        first, second = self.peer("n1:4150"), self.peer("n2:4150")
        first.subscribe()
        second.subscribe()
        first.take()
        second.take()
        self.clock.advance(60)
        self.assertEqual((first.take(), second.take()), (b"", b""))

    def test_total_capped(self) -> None:
        """A connection never takes RDY beyond max_in_flight minus what the others hold."""
        consumer = self.consumer(["n1:4150", "n2:4150", "n3:4150"], max_in_flight=2)
        for address in ("n1:4150", "n2:4150", "n3:4150"):
            self.peer(address).subscribe()
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 1, "n2:4150": 1, "n3:4150": 0})

    # Backoff

    def test_backoff(self) -> None:
        """
        A failure sets RDY 0 for 2 s (multiplier x 2^1), then RDY 1 probes; further failures
        double the delay, successes step back, and the last one restores the full RDY.
        """
        consumer = self.consumer(["n1:4150"], max_in_flight=4)
        peer = self.peer()
        peer.subscribe()
        self.assertTrue(peer.take().endswith(b"RDY 4\n"))
        self.result = RuntimeError("failure")
        peer.receive(message_frame(1))
        self.assertEqual(peer.take(), b"REQ 0000000000000001 90000\nRDY 0\n")
        self.assertEqual(consumer.backoff_level, 1)
        self.clock.advance(1.9)
        self.assertEqual(peer.take(), b"")
        self.clock.advance(0.1)
        self.assertEqual(peer.take(), b"RDY 1\n")
        peer.receive(message_frame(2))
        self.assertEqual(peer.take(), b"REQ 0000000000000002 90000\nRDY 0\n")
        self.assertEqual(consumer.backoff_level, 2)
        self.clock.advance(3.9)
        self.assertEqual(peer.take(), b"")
        self.clock.advance(0.1)
        self.assertEqual(peer.take(), b"RDY 1\n")
        self.result = None
        peer.receive(message_frame(3))
        self.assertEqual(peer.take(), b"FIN 0000000000000003\nRDY 0\n")
        self.assertEqual(consumer.backoff_level, 1)
        self.clock.advance(2)
        self.assertEqual(peer.take(), b"RDY 1\n")
        peer.receive(message_frame(4))
        self.assertEqual(peer.take(), b"FIN 0000000000000004\nRDY 4\n")
        self.assertEqual(consumer.backoff_level, 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_backoff_ignores_signals_while_waiting(self) -> None:
        """While the backoff timer runs, finishes and failures change nothing."""
        consumer = self.consumer(["n1:4150"], max_in_flight=4)
        peer = self.peer()
        peer.subscribe()
        peer.take()
        self.result = RuntimeError("failure")
        peer.receive(message_frame(1))
        peer.receive(message_frame(2))
        self.result = None
        peer.receive(message_frame(3))
        self.assertEqual(consumer.backoff_level, 1)
        self.assertEqual(
            peer.take(),
            b"REQ 0000000000000001 90000\nRDY 0\nREQ 0000000000000002 90000\nFIN 0000000000000003\n",
        )
        self.flushLoggedErrors(RuntimeError)

    def test_backoff_max(self) -> None:
        """The level only rises while multiplier x 2^level stays within max_backoff_duration."""
        consumer = self.consumer(["n1:4150"], max_in_flight=4, max_backoff_duration=4)
        peer = self.peer()
        peer.subscribe()
        self.result = RuntimeError("failure")
        for number, delay in ((1, 2.0), (2, 4.0), (3, 4.0)):
            peer.take()
            peer.receive(message_frame(number))
            self.assertEqual(peer.take(), b"REQ %016d 90000\nRDY 0\n" % number)
            self.clock.advance(delay)
            self.assertEqual(peer.take(), b"RDY 1\n")
        self.assertEqual(consumer.backoff_level, 2)
        self.flushLoggedErrors(RuntimeError)

    def test_backoff_probe_without_connection(self) -> None:
        """With no connection to probe when the timer fires, it tries again 1 s later."""
        consumer = self.consumer(["n1:4150"], max_in_flight=4)
        peer = self.peer()
        peer.subscribe()
        self.result = RuntimeError("failure")
        peer.receive(message_frame(1))
        self.flushLoggedErrors(RuntimeError)
        peer.lose()
        self.clock.advance(1)
        again = self.peer()
        self.assertIsNot(again, peer)
        self.clock.advance(1)
        again.subscribe()
        self.assertTrue(again.take().endswith(b"SUB t ch\n"))
        self.clock.advance(1)
        self.assertEqual(again.take(), b"RDY 1\n")
        stopped = consumer.stop()
        again.receive(CLOSE_WAIT_FRAME)
        again.lose()
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backoff_probe_one_connection(self) -> None:
        """The probe sends RDY 1 on one random connection; new connections get nothing meanwhile."""
        consumer = self.consumer(["n1:4150", "n2:4150", "n3:4150"], max_in_flight=6)
        first, second = self.peer("n1:4150"), self.peer("n2:4150")
        first.subscribe()
        second.subscribe()
        first.take()
        second.take()
        self.result = RuntimeError("failure")
        first.receive(message_frame(1))
        self.assertEqual(first.take(), b"REQ 0000000000000001 90000\nRDY 0\n")
        self.assertEqual(second.take(), b"RDY 0\n")
        third = self.peer("n3:4150")
        third.subscribe()
        self.assertEqual(third.take()[-9:], b"SUB t ch\n")
        self.rng.picks = [1]
        self.clock.advance(2)
        self.assertEqual((first.take(), second.take(), third.take()), (b"", b"RDY 1\n", b""))
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 0, "n2:4150": 1, "n3:4150": 0})
        self.result = None
        second.receive(message_frame(2))
        self.assertEqual(second.take(), b"FIN 0000000000000002\nRDY 2\n")
        self.assertEqual((first.take(), third.take()), (b"RDY 2\n", b"RDY 2\n"))
        self.assertEqual(consumer.rdy_state(), {"n1:4150": 2, "n2:4150": 2, "n3:4150": 2})
        self.flushLoggedErrors(RuntimeError)


class RdyCountTests(SynchronousTestCase):
    def test_even_split(self) -> None:
        self.assertEqual(rdy_counts(10, 3, [2500] * 3), [3, 3, 3])
        self.assertEqual(rdy_counts(1, 3, [2500] * 3), [1, 1, 1])
        self.assertEqual(rdy_counts(5000, 1, [2500]), [2500])
        self.assertEqual(rdy_counts(5, 0, []), [])
