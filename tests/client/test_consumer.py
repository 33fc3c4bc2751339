"""
L{twisted_nsq.client.consumer}: SUB and RDY per connection, handler results turned into FIN or
REQ, giving up, reconnection and stopping, with a fake endpoint, in-memory transports and a
L{Clock}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_nsq.client.consumer import Consumer, rdy_counts
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


class ConsumerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.peers: dict[str, list[Peer]] = {}
        self.handled: list[Message] = []
        self.given_up: list[Message] = []
        self.result: object = None
        self.respond_first = False
        self.consumer_giving_up: Callable[[Message], object] = self.given_up.append

    def consumer(self, addresses: list[str], max_in_flight: int = 1, **kwargs: Any) -> Consumer:
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
        self.assertEqual(peer.take(), b"REQ 0000000000000002 180000\n")
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
        self.assertEqual(peer.take(), b"REQ 0000000000000001 90000\n")
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


class RdyCountTests(SynchronousTestCase):
    def test_even_split(self) -> None:
        self.assertEqual(rdy_counts(10, 3, [2500] * 3), [3, 3, 3])
        self.assertEqual(rdy_counts(1, 3, [2500] * 3), [1, 1, 1])
        self.assertEqual(rdy_counts(5000, 1, [2500]), [2500])
        self.assertEqual(rdy_counts(5, 0, []), [])
