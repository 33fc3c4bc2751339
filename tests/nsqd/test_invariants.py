"""
A hypothesis state machine over the whole V2 path: nothing published is lost or FINed twice.

For every channel, each published message is at every moment in exactly one place: queued,
in flight, deferred, or FINed (once). Operations: PUB, MPUB, DPUB, SUB+RDY, RDY, FIN, REQ,
TOUCH, disconnects and clock advances.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nsqd._ordered_machine import publish
from twisted_nsq.testing import LoopbackClient, make_nsqd

CHANNELS = ("a", "b")


class Consumer:
    def __init__(self, client: LoopbackClient, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.held: dict[bytes, bytes] = {}
        self.connected = True

    def read(self) -> list[bytes]:
        """Absorb new frames; return error payloads."""
        errors = []
        for frame in self.client.frames():
            if frame.is_error:
                errors.append(frame.data)
            elif frame.type == 2:
                message = frame.message
                self.held[message.id] = message.body
        return errors


class NSQDMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.nsqd = make_nsqd(self.clock, mem_queue_size=1000)
        self.producer = LoopbackClient(self.nsqd, port=30000)
        self.published: Counter[bytes] = Counter()
        self.finished: dict[str, Counter[bytes]] = {name: Counter() for name in CHANNELS}
        self.consumers: list[Consumer] = []
        self.counter = 0
        self.port = 30001

    @initialize()
    def create_channels(self) -> None:
        topic = self.nsqd.get_topic("t")
        for name in CHANNELS:
            topic.get_channel(name)

    def _bodies(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(b"m%d" % self.counter)
        return out

    @rule(n=st.integers(1, 5), how=st.sampled_from(["PUB", "MPUB", "DPUB"]), delay=st.integers(0, 3000))
    def publish(self, n: int, how: str, delay: int) -> None:
        bodies = self._bodies(1 if how != "MPUB" else n)
        publish(self.producer, how, delay, bodies)
        self.published.update(bodies)

    @rule(channel=st.sampled_from(CHANNELS), rdy=st.integers(0, 5), timeout=st.sampled_from([1000, 5000]))
    def connect(self, channel: str, rdy: int, timeout: int) -> None:
        self.port += 1
        client = LoopbackClient(self.nsqd, port=self.port)
        client.identify(msg_timeout=timeout)
        client.subscribe("t", channel, rdy=rdy)
        consumer = Consumer(client, channel)
        consumer.read()
        self.consumers.append(consumer)

    def _live(self) -> list[Consumer]:
        return [c for c in self.consumers if c.connected and not c.client.closed]

    @precondition(lambda self: self._live())
    @rule(data=st.data(), rdy=st.integers(0, 10))
    def set_rdy(self, data: st.DataObject, rdy: int) -> None:
        consumer = data.draw(st.sampled_from(self._live()))
        consumer.client.command(f"RDY {rdy}")
        assert consumer.read() == []

    @precondition(lambda self: any(c.held for c in self._live()))
    @rule(data=st.data(), action=st.sampled_from(["FIN", "REQ", "REQD", "TOUCH"]))
    def respond(self, data: st.DataObject, action: str) -> None:
        consumer = data.draw(st.sampled_from([c for c in self._live() if c.held]))
        message_id = data.draw(st.sampled_from(sorted(consumer.held)))
        body = consumer.held[message_id]
        line = {
            "FIN": "FIN %s",
            "REQ": "REQ %s 0",
            "REQD": "REQ %s 1500",
            "TOUCH": "TOUCH %s",
        }[action] % message_id.decode()
        consumer.client.command(line)
        errors = consumer.read()
        if action != "TOUCH":
            consumer.held.pop(message_id, None)
        if errors:
            # The message timed out and went elsewhere: a non-fatal error, the connection stays.
            assert len(errors) == 1 and errors[0].split(b" ")[0] in (
                b"E_FIN_FAILED",
                b"E_REQ_FAILED",
                b"E_TOUCH_FAILED",
            ), errors
            assert not consumer.client.closed
        elif action == "FIN":
            self.finished[consumer.channel][body] += 1

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        consumer = data.draw(st.sampled_from(self._live()))
        consumer.client.disconnect()
        consumer.connected = False

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 6.0]))
    def advance(self, seconds: float) -> None:
        for client in [self.producer] + [c.client for c in self._live()]:
            client.command("NOP")
        self.clock.advance(seconds)
        for consumer in self._live():
            assert consumer.read() == []

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        topic = self.nsqd.topics["t"]
        for name in CHANNELS:
            channel = topic.channels[name]
            finished = self.finished[name]
            assert all(count == 1 for count in finished.values()), finished
            places: Counter[bytes] = Counter()
            places.update(m.body for m in channel._memory)
            places.update(m.body for m in channel.in_flight.values())
            places.update(m.body for m in channel.deferred.values())
            places.update(finished)
            assert places == self.published, (name, places - self.published, self.published - places)

    @invariant()
    def windows_respected(self) -> None:
        for consumer in self._live():
            protocol = consumer.client.protocol
            assert protocol.in_flight_count >= 0
            owned = [
                m
                for m in self.nsqd.topics["t"].channels[consumer.channel].in_flight.values()
                if m.client_id == protocol.client_id
            ]
            assert len(owned) == protocol.in_flight_count, (len(owned), protocol.in_flight_count)


NSQDMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


class InvariantTests(SynchronousTestCase):
    def test_state_machine(self) -> None:
        NSQDMachine.TestCase("runTest").runTest()
