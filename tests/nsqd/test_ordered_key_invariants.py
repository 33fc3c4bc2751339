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

import os
import random
import tempfile
from collections.abc import Iterable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.metadata import MetadataPersister
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import (
    immediate_sync_runner,
    make_backend_factory,
    persist_and_close,
    restore,
)
from twisted_nsq.testing import LoopbackClient, mpub_body

MEM_QUEUE_SIZE = 3
MAX_PENDING = 4
MSG_TIMEOUT = 1.0
SPEC = "prefix:|"
KEYS: tuple[bytes | None, ...] = (b"a", b"b", b"c", None)


def key_of(body: bytes) -> bytes | None:
    end = body.find(b"|")
    return body[:end] if end >= 0 else None


class Consumer:
    def __init__(self, client: LoopbackClient) -> None:
        self.client = client
        self.held: dict[bytes, bytes] = {}


class KeyedMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.port = 30000
        self.counter = 0
        #: Each key's order: the head first. A delivery of key k must be order[k][0].
        self.order: dict[bytes | None, list[bytes]] = {key: [] for key in KEYS}
        #: DPUBs not yet due: (due, sequence, body).
        self.pending: list[tuple[float, int, bytes]] = []
        #: Messages held at the paused topic (its memory, or its disk once that overflows).
        self.at_topic: list[bytes] = []
        self.paused = False
        #: No delivery of a key before this clock time (a REQ with a delay on its head).
        self.wait_until: dict[bytes | None, float] = {key: 0.0 for key in KEYS}
        self.finished: set[bytes] = set()
        self.consumers: list[Consumer] = []
        self.nsqd, self.persister = self._start()
        self.nsqd.get_topic("t").get_channel("c", ordered=True, order_key=SPEC)
        self.producer = self._client()

    # -- plumbing ------------------------------------------------------------------------------

    def _start(self) -> tuple[NSQD, MetadataPersister]:
        options = NSQDOptions(
            node_id=1,
            broadcast_address="testhost",
            data_path=self.directory.name,
            mem_queue_size=MEM_QUEUE_SIZE,
            ordered_max_pending=MAX_PENDING,
        )
        factory = make_backend_factory(options, self.clock, immediate_sync_runner, lambda error: None)
        nsqd = NSQD(options, self.clock, random_source=random.Random(0), backend_factory=factory)
        persister = restore(nsqd)
        nsqd.start()
        return nsqd, persister

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
                order = self.order[key_of(message.body)]
                assert order, f"delivered {message.body!r} from an empty order"
                assert message.body == order[0], (message.body, order[:3])
                assert self.clock.seconds() >= self.wait_until[key_of(message.body)], "went out early"
                assert message.body not in self.finished
                consumer.held[message.id] = message.body

    def _release_due(self) -> None:
        now = self.clock.seconds()
        due = sorted(p for p in self.pending if p[0] <= now)
        self.pending = [p for p in self.pending if p[0] > now]
        self._append(body for _, _, body in due)

    def _append(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            self.order[key_of(body)].append(body)

    def _live(self) -> list[Consumer]:
        return [c for c in self.consumers if not c.client.closed]

    def _bodies(self, keys: list[bytes | None]) -> list[bytes]:
        out = []
        for key in keys:
            self.counter += 1
            out.append(b"m%04d" % self.counter if key is None else b"%s|m%04d" % (key, self.counter))
        return out

    # -- rules ---------------------------------------------------------------------------------

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=6),
        how=st.sampled_from(["PUB", "MPUB", "DPUB"]),
        delay=st.integers(0, 3000),
    )
    def publish(self, keys: list[bytes | None], how: str, delay: int) -> None:
        if how == "DPUB" and self.paused:
            how = "PUB"
        bodies = self._bodies(keys if how == "MPUB" else keys[:1])
        if how == "PUB":
            self.producer.command("PUB t", bodies[0])
        elif how == "DPUB":
            self.producer.command(f"DPUB t {delay}", bodies[0])
        else:
            self.producer.send(b"MPUB t\n" + mpub_body(bodies))
        assert [f.data for f in self.producer.frames() if f.data != b"_heartbeat_"] == [b"OK"]
        if self.paused:
            self.at_topic.extend(bodies)
        elif how == "DPUB" and delay:
            self.pending.append((self.clock.seconds() + delay / 1000, self.counter, bodies[0]))
        else:
            self._append(bodies)
        self._check_deliveries()

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
                assert self.order[key_of(body)][0] == body
                self.order[key_of(body)].pop(0)
                self.finished.add(body)
        elif action == "REQ":
            consumer.client.command(f"REQ {message_id.decode()} 0")
        else:
            consumer.client.command(f"REQ {message_id.decode()} {delay}")
            if owned:
                self.wait_until[key_of(body)] = self.clock.seconds() + delay / 1000
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
            self._append(self.at_topic)
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
        self._append(body for _, _, body in sorted(self.pending))
        self.pending.clear()
        # A new process: IDs must not repeat (the generator restarts), so time moves on.
        self.clock.advance(0.01)
        self.nsqd, self.persister = self._start()
        channel = self.nsqd.topics["t"].channels["c"]
        assert channel.ordered and channel.order_key == SPEC, "the mode survives"
        assert self.nsqd.topics["t"].paused == self.paused
        self.producer = self._client()

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def one_in_flight_per_key(self) -> None:
        channel = self.nsqd.topics["t"].channels["c"]
        keys = [key_of(message.body) for message in channel.in_flight.values()]
        assert len(keys) == len(set(keys)), keys
        for message in channel.in_flight.values():
            assert message.body == self.order[key_of(message.body)][0]
        assert channel.pending_count() <= MAX_PENDING + len(KEYS) * 2

    def _drain_all(self) -> None:
        """At the end: everything not finished comes out, in order, exactly once."""
        for consumer in self.consumers:
            if not consumer.client.closed:
                consumer.client.disconnect()
        self.consumers.clear()
        if self.paused:
            self.pause_or_unpause()
        self.clock.advance(max(0.0, max(self.wait_until.values()) - self.clock.seconds()) + 4)
        self._release_due()
        client = self._client()
        client.subscribe("t", "c", rdy=3)
        self.consumers.append(Consumer(client))
        delivered: dict[bytes | None, list[bytes]] = {key: [] for key in KEYS}
        for _ in range(sum(map(len, self.order.values())) + 5):
            self.clock.advance(0)
            messages = client.messages()
            if not messages:
                break
            assert len({key_of(m.body) for m in messages}) == len(messages), "two of a key in flight"
            for message in messages:
                delivered[key_of(message.body)].append(message.body)
                client.command(f"FIN {message.id.decode()}")
        assert delivered == self.order, (delivered, self.order)
        channel = self.nsqd.topics["t"].channels["c"]
        assert channel.depth() == 0 and not channel.in_flight and channel.deferred_count() == 0
        assert channel.pending_count() == 0
        persist_and_close(self.nsqd, self.persister)
        leftovers = [name for name in os.listdir(self.directory.name) if name.endswith(".head.dat")]
        assert leftovers == [], leftovers


KeyedMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


class KeyedInvariantTests(SynchronousTestCase):
    def test_state_machine(self) -> None:
        KeyedMachine.TestCase("runTest").runTest()
