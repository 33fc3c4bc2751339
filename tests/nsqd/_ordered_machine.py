"""
The scaffolding of the hypothesis state machines over ordered channels on real disk queues
(test_ordered_invariants, test_ordered_key_invariants): an nsqd with a topic C{t} and an ordered
channel C{c}, a producer, consumers, and the rules every ordered channel obeys alike (connect,
RDY, FIN and REQ, disconnect, clock advances, pausing the topic, a clean restart), checked
against a model of the channel's order that each machine keeps its own way.

Also L{publish}, the PUB/DPUB/MPUB step of every V2 state machine in tests/nsqd.
"""

from __future__ import annotations

import abc
import os
import tempfile
from collections.abc import Iterable
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from twisted.internet.task import Clock

from tests.nsqd._restore import restored_nsqd
from twisted_nsq.nsqd.metadata import MetadataPersister
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.persistence import (
    persist_and_close,
)
from twisted_nsq.testing import LoopbackClient, mpub_body

MEM_QUEUE_SIZE = 3
MSG_TIMEOUT = 1.0


def publish(producer: LoopbackClient, how: str, delay: int, bodies: list[bytes]) -> None:
    """Publish C{bodies} on topic C{t} with C{how} (PUB and DPUB send the first) and check the OK."""
    if how == "PUB":
        producer.command("PUB t", bodies[0])
    elif how == "DPUB":
        producer.command(f"DPUB t {delay}", bodies[0])
    else:
        producer.send(b"MPUB t\n" + mpub_body(bodies))
    assert [f.data for f in producer.frames() if f.data != b"_heartbeat_"] == [b"OK"]


class Consumer:
    def __init__(self, client: LoopbackClient) -> None:
        self.client = client
        self.held: dict[bytes, bytes] = {}


class OrderModel(abc.ABC):
    """What a machine expects of its channel: the order (or orders) messages must come out in."""

    @abc.abstractmethod
    def order_of(self, body: bytes) -> list[bytes]:
        """The order C{body} belongs to, the head first (a delivery must be its head)."""

    @abc.abstractmethod
    def append(self, bodies: Iterable[bytes]) -> None:
        """C{bodies} join the tail of their orders."""

    @abc.abstractmethod
    def wait_of(self, body: bytes) -> float:
        """No delivery of C{body}'s order before this clock time (a REQ with a delay on its head)."""

    @abc.abstractmethod
    def hold(self, body: bytes, until: float) -> None:
        """C{body}, the head of its order, was requeued with a delay: none of it goes out until then."""

    @abc.abstractmethod
    def latest_wait(self) -> float:
        """The latest of the REQ waits."""

    @abc.abstractmethod
    def collect(self, clock: Clock, client: LoopbackClient) -> None:
        """At the end: FIN everything C{client} (subscribed) gets and check it is the whole order."""


class OrderedMachineBase(RuleBasedStateMachine):
    """
    A state machine over channel C{c} of topic C{t}, ordered as C{ORDER_KEY} says, checked
    against C{model} (an L{OrderModel}, set by the subclass before this class's C{__init__}). A
    subclass adds its publish rule (through L{_publish}) and its invariants.
    """

    model: OrderModel

    #: The channel's order key (C{None}: ordered as a whole).
    ORDER_KEY: ClassVar[str | None] = None
    #: NSQDOptions beyond the ones every machine sets.
    EXTRA_OPTIONS: ClassVar[dict[str, Any]] = {}
    #: The RDY of the consumer that drains the channel at the end.
    DRAIN_RDY: ClassVar[int] = 1

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.port = 30000
        self.counter = 0
        #: DPUBs not yet due: (due, sequence, body).
        self.pending: list[tuple[float, int, bytes]] = []
        #: Messages held at the paused topic (its memory, or its disk once that overflows).
        self.at_topic: list[bytes] = []
        self.paused = False
        self.finished: set[bytes] = set()
        self.consumers: list[Consumer] = []
        self.nsqd, self.persister = self._start()
        self.nsqd.get_topic("t").get_channel("c", ordered=True, order_key=self.ORDER_KEY)
        self.producer = self._client()

    # -- plumbing ------------------------------------------------------------------------------

    def _start(self) -> tuple[NSQD, MetadataPersister]:
        return restored_nsqd(
            self.clock, self.directory.name, mem_queue_size=MEM_QUEUE_SIZE, **self.EXTRA_OPTIONS
        )

    def _client(self) -> LoopbackClient:
        self.port += 1
        client = LoopbackClient(self.nsqd, port=self.port)
        client.identify(msg_timeout=int(MSG_TIMEOUT * 1000), heartbeat_interval=60000)
        return client

    def teardown(self) -> None:
        try:
            self._drain_all()
        finally:
            self.directory.cleanup()

    def _check_deliveries(self) -> None:
        """Absorb every consumer's frames: each message must be the head, and not too early."""
        for consumer in self.consumers:
            for frame in consumer.client.frames():
                if frame.is_error:
                    assert frame.data.split(b" ")[0] in (b"E_FIN_FAILED", b"E_REQ_FAILED"), frame.data
                    continue
                if frame.type != 2:
                    continue
                message = frame.message
                order = self.model.order_of(message.body)
                assert order, f"delivered {message.body!r} from an empty order"
                assert message.body == order[0], (message.body, order[:3])
                assert self.clock.seconds() >= self.model.wait_of(message.body), "went out early"
                assert message.body not in self.finished
                consumer.held[message.id] = message.body

    def _release_due(self) -> None:
        now = self.clock.seconds()
        due = sorted(p for p in self.pending if p[0] <= now)
        self.pending = [p for p in self.pending if p[0] > now]
        self.model.append(body for _, _, body in due)

    def _live(self) -> list[Consumer]:
        return [c for c in self.consumers if not c.client.closed]

    def _bodies(self, keys: list[bytes | None]) -> list[bytes]:
        out = []
        for key in keys:
            self.counter += 1
            out.append(b"m%04d" % self.counter if key is None else b"%s|m%04d" % (key, self.counter))
        return out

    def _publish(self, how: str, delay: int, keys: list[bytes | None]) -> None:
        """Publish one message (all of C{keys}' for an MPUB) and model where it goes."""
        if how == "DPUB" and self.paused:
            how = "PUB"
        bodies = self._bodies(keys if how == "MPUB" else keys[:1])
        publish(self.producer, how, delay, bodies)
        if self.paused:
            self.at_topic.extend(bodies)
        elif how == "DPUB" and delay:
            self.pending.append((self.clock.seconds() + delay / 1000, self.counter, bodies[0]))
        else:
            self.model.append(bodies)
        self._check_deliveries()

    # -- rules ---------------------------------------------------------------------------------

    @rule(rdy=st.integers(0, 3))
    def connect(self, rdy: int) -> None:
        client = self._client()
        client.subscribe("t", "c", rdy=rdy)
        self.consumers.append(Consumer(client))
        self._check_deliveries()

    @precondition(lambda self: self._live())
    @rule(data=st.data(), rdy=st.integers(0, 3))
    def set_rdy(self, data: st.DataObject, rdy: int) -> None:
        consumer = data.draw(st.sampled_from(self._live()))
        consumer.client.command(f"RDY {rdy}")
        self._check_deliveries()

    @precondition(lambda self: any(c.held for c in self._live()))
    @rule(data=st.data(), action=st.sampled_from(["FIN", "FIN", "REQ", "REQD"]), delay=st.integers(1, 3000))
    def respond(self, data: st.DataObject, action: str, delay: int) -> None:
        consumer = data.draw(st.sampled_from([c for c in self._live() if c.held]))
        message_id = data.draw(st.sampled_from(sorted(consumer.held)))
        body = consumer.held.pop(message_id)
        channel = self.nsqd.topics["t"].channels["c"]
        current = channel.in_flight.get(message_id)
        owned = current is not None and current.client_id == consumer.client.protocol.client_id
        if action == "FIN":
            consumer.client.command(f"FIN {message_id.decode()}")
            if owned:
                order = self.model.order_of(body)
                assert order[0] == body
                order.pop(0)
                self.finished.add(body)
        elif action == "REQ":
            consumer.client.command(f"REQ {message_id.decode()} 0")
        else:
            consumer.client.command(f"REQ {message_id.decode()} {delay}")
            if owned:
                self.model.hold(body, self.clock.seconds() + delay / 1000)
        self._check_deliveries()

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        consumer = data.draw(st.sampled_from(self._live()))
        consumer.client.disconnect()
        self._check_deliveries()

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.5, 3.5]))
    def advance(self, seconds: float) -> None:
        for client in [self.producer] + [c.client for c in self._live()]:
            client.command("NOP")
        self.clock.advance(seconds)
        self._release_due()
        self._check_deliveries()

    @rule()
    def pause_or_unpause(self) -> None:
        topic = self.nsqd.topics["t"]
        if self.paused:
            topic.unpause()
            self.nsqd.run_dispatch()
            self.model.append(self.at_topic)
            self.at_topic.clear()
            self.paused = False
        else:
            topic.pause()
            self.paused = True
        self._check_deliveries()

    @rule()
    def restart(self) -> None:
        for consumer in self.consumers:
            if not consumer.client.closed:
                consumer.client.disconnect()
        self.consumers.clear()
        if not self.producer.closed:
            self.producer.disconnect()
        self.clock.advance(0)
        self._release_due()
        result: list[Any] = []
        persist_and_close(self.nsqd, self.persister).addBoth(result.append)
        assert result == [None], result
        # Deferrals are lost at a clean stop (as in NSQ): they join the tail, earliest first.
        self.model.append(body for _, _, body in sorted(self.pending))
        self.pending.clear()
        # A new process: IDs must not repeat (the generator restarts), so time moves on.
        self.clock.advance(0.01)
        self.nsqd, self.persister = self._start()
        channel = self.nsqd.topics["t"].channels["c"]
        assert channel.ordered and channel.order_key == (self.ORDER_KEY or ""), "the mode survives"
        assert self.nsqd.topics["t"].paused == self.paused
        self.producer = self._client()

    # -- the end -------------------------------------------------------------------------------

    def _drain_all(self) -> None:
        """At the end: everything not finished comes out, in order, exactly once."""
        for consumer in self.consumers:
            if not consumer.client.closed:
                consumer.client.disconnect()
        self.consumers.clear()
        if self.paused:
            self.pause_or_unpause()
        self.clock.advance(max(0.0, self.model.latest_wait() - self.clock.seconds()) + 4)
        self._release_due()
        client = self._client()
        client.subscribe("t", "c", rdy=self.DRAIN_RDY)
        self.consumers.append(Consumer(client))
        self.model.collect(self.clock, client)
        channel = self.nsqd.topics["t"].channels["c"]
        assert channel.depth() == 0 and not channel.in_flight and channel.deferred_count() == 0
        assert channel.pending_count() == 0
        persist_and_close(self.nsqd, self.persister)
        leftovers = [name for name in os.listdir(self.directory.name) if name.endswith(".head.dat")]
        assert leftovers == [], leftovers
