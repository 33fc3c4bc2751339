"""
A hypothesis state machine over an ordered channel on real disk queues: every delivery is the
head of the channel's order, and the whole order comes out, each message FINed once.

The model keeps the channel's order as a list: PUB and MPUB append, a DPUB joins the tail when
it becomes due (or at a restart, where its deferral is lost as in NSQ), messages held at a
paused topic join when it is unpaused. Operations: PUB, MPUB, DPUB, consumers with RDY, FIN,
REQ with and without a delay, timeouts (clock advances), disconnects, pausing the topic (so its
backlog spills too), and a clean restart that rebuilds the core on the same data directory. A
mem-queue-size of 3 makes topic and channel spill to disk all the time.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._ordered_machine import OrderedMachineBase, OrderModel
from twisted_nsq.testing import LoopbackClient


class SingleOrder(OrderModel):
    """One order for the whole channel."""

    def __init__(self) -> None:
        #: The channel's order: the head first. Deliveries must be order[0].
        self.order: list[bytes] = []
        #: No delivery before this clock time (a REQ with a delay on the head).
        self.wait_until = 0.0

    def order_of(self, body: bytes) -> list[bytes]:
        return self.order

    def append(self, bodies: Iterable[bytes]) -> None:
        self.order.extend(bodies)

    def wait_of(self, body: bytes) -> float:
        return self.wait_until

    def hold(self, body: bytes, until: float) -> None:
        self.wait_until = until

    def latest_wait(self) -> float:
        return self.wait_until

    def collect(self, clock: Clock, client: LoopbackClient) -> None:
        delivered: list[bytes] = []
        for _ in range(len(self.order) + 5):
            clock.advance(0)
            messages = client.messages()
            if not messages:
                break
            [message] = messages
            delivered.append(message.body)
            client.command(f"FIN {message.id.decode()}")
        assert delivered == self.order, (delivered, self.order)


class OrderedMachine(OrderedMachineBase):
    def __init__(self) -> None:
        self.model = self.orders = SingleOrder()
        super().__init__()

    @rule(n=st.integers(1, 6), how=st.sampled_from(["PUB", "MPUB", "DPUB"]), delay=st.integers(0, 3000))
    def publish(self, n: int, how: str, delay: int) -> None:
        self._publish(how, delay, [None] * n)

    @invariant()
    def one_in_flight(self) -> None:
        channel = self.nsqd.topics["t"].channels["c"]
        assert len(channel.in_flight) <= 1
        for message in channel.in_flight.values():
            assert message.body == self.orders.order[0]


OrderedMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


class OrderedInvariantTests(SynchronousTestCase):
    def test_state_machine(self) -> None:
        OrderedMachine.TestCase("runTest").runTest()
