"""
A hypothesis state machine over a channel ordered by key on real disk queues: per key, every
delivery is the head of that key's order, never two of a key are in flight, and each key's
whole order comes out, each message FINed once.

The model keeps one order per key (C{a}, C{b}, C{c}, and the keyless lane): PUB and MPUB
append, a DPUB joins its key's tail when it becomes due (or at a restart, where its deferral
is lost as in NSQ), messages held at a paused topic join when it is unpaused. Operations: PUB,
MPUB, DPUB, consumers with RDY, FIN, REQ with and without a delay, timeouts (clock advances),
disconnects, pausing the topic, and a clean restart that rebuilds the core on the same data
directory. A mem-queue-size of 3 makes topic and channel spill to disk all the time, and a
pending cap of 4 makes the channel stop reading its queue often.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._ordered_machine import OrderedMachineBase, OrderModel
from twisted_nsq.testing import LoopbackClient

MAX_PENDING = 4
SPEC = "prefix:|"
KEYS: tuple[bytes | None, ...] = (b"a", b"b", b"c", None)


def key_of(body: bytes) -> bytes | None:
    end = body.find(b"|")
    return body[:end] if end >= 0 else None


class KeyedOrders(OrderModel):
    """One order per key."""

    def __init__(self) -> None:
        #: Each key's order: the head first. A delivery of key k must be order[k][0].
        self.order: dict[bytes | None, list[bytes]] = {key: [] for key in KEYS}
        #: No delivery of a key before this clock time (a REQ with a delay on its head).
        self.wait_until: dict[bytes | None, float] = {key: 0.0 for key in KEYS}

    def order_of(self, body: bytes) -> list[bytes]:
        return self.order[key_of(body)]

    def append(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            self.order[key_of(body)].append(body)

    def wait_of(self, body: bytes) -> float:
        return self.wait_until[key_of(body)]

    def hold(self, body: bytes, until: float) -> None:
        self.wait_until[key_of(body)] = until

    def latest_wait(self) -> float:
        return max(self.wait_until.values())

    def collect(self, clock: Clock, client: LoopbackClient) -> None:
        delivered: dict[bytes | None, list[bytes]] = {key: [] for key in KEYS}
        for _ in range(sum(map(len, self.order.values())) + 5):
            clock.advance(0)
            messages = client.messages()
            if not messages:
                break
            assert len({key_of(m.body) for m in messages}) == len(messages), "two of a key in flight"
            for message in messages:
                delivered[key_of(message.body)].append(message.body)
                client.command(f"FIN {message.id.decode()}")
        assert delivered == self.order, (delivered, self.order)


class KeyedMachine(OrderedMachineBase):
    ORDER_KEY: ClassVar[str | None] = SPEC
    EXTRA_OPTIONS: ClassVar[dict[str, Any]] = {"ordered_max_pending": MAX_PENDING}
    DRAIN_RDY: ClassVar[int] = 3

    def __init__(self) -> None:
        self.model = self.orders = KeyedOrders()
        super().__init__()

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=6),
        how=st.sampled_from(["PUB", "MPUB", "DPUB"]),
        delay=st.integers(0, 3000),
    )
    def publish(self, keys: list[bytes | None], how: str, delay: int) -> None:
        self._publish(how, delay, keys)

    @invariant()
    def one_in_flight_per_key(self) -> None:
        channel = self.nsqd.topics["t"].channels["c"]
        keys = [key_of(message.body) for message in channel.in_flight.values()]
        assert len(keys) == len(set(keys)), keys
        for message in channel.in_flight.values():
            assert message.body == self.orders.order[key_of(message.body)][0]
        assert channel.pending_count() <= MAX_PENDING + len(KEYS) * 2


KeyedMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


class KeyedInvariantTests(SynchronousTestCase):
    def test_state_machine(self) -> None:
        KeyedMachine.TestCase("runTest").runTest()
