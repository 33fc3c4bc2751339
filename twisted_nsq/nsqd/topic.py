"""
A topic: publishing, fan-out of a copy to every channel, and the queue it keeps when it cannot.

Go nsqd runs a message pump per topic; on one reactor thread the pump collapses into the put:
while the topic has channels and is not paused, a published message is handed to every channel
at once. Otherwise it waits in the topic's own bounded queue until a channel appears or the
topic is unpaused, exactly when Go's pump would resume.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from twisted_nsq.nsqd.backend import BackendError, IBackendQueue
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.message import Message
from twisted_nsq.wire.names import is_ephemeral

if TYPE_CHECKING:
    from twisted_nsq.nsqd.nsqd import NSQD


log = Logger()

#: Messages the topic pump moves per reactor turn.
PUMP_BATCH = 2000


class PublishError(Exception):
    """A publish was refused; the text follows ``PUB failed `` in E_PUB_FAILED."""


class Topic:
    """One topic. See the module docstring."""

    def __init__(self, nsqd: NSQD, name: str, backend: IBackendQueue) -> None:
        self.nsqd = nsqd
        self.name = name
        self.ephemeral = is_ephemeral(name)
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.message_bytes = 0
        self.channels: dict[str, Channel] = {}
        self._memory: deque[Message] = deque()
        self._memory_limit = nsqd.memory_limit(self.ephemeral)
        self._backend = backend
        # Memory and disk are one FIFO: while anything is on disk, new messages go to disk too,
        # and the overflow moves what memory holds to disk first (so memory is never newer than
        # disk, and a clean stop appending memory to the disk queue keeps the order). Ephemeral
        # and memory-only topics keep everything in memory (their overflow is dropped/refused).
        self._fifo = not self.ephemeral and backend.unbounded
        self._pump_call: IDelayedCall | None = None
        self._holds = 0

    def __repr__(self) -> str:
        return f"<Topic {self.name}>"

    def depth(self) -> int:
        return len(self._memory) + self._backend.depth()

    def backend_depth(self) -> int:
        return self._backend.depth()

    def memory_depth(self) -> int:
        return len(self._memory)

    @property
    def flowing(self) -> bool:
        """Whether published messages go straight to the channels (Go's pump is running)."""
        return bool(self.channels) and not self.paused and not self._holds

    # -- publishing -------------------------------------------------------------------------

    def publish(self, bodies: list[bytes], defer: float = 0.0) -> None:
        """
        Publish a batch atomically: every message is accepted or none is.

        Raises PublishError (``exiting``, or the backend's reason when a bounded queue is
        full).
        """
        if self.deleted or self.nsqd.exiting:
            raise PublishError("exiting")
        count = len(bodies)
        if not count:
            return
        direct = self.flowing and not self.backlog()
        if direct:
            for channel in self.channels.values():
                if not channel.has_room(count):
                    raise PublishError("queue full")
        elif not (self._backend.unbounded or len(self._memory) + count <= self._memory_limit):
            raise PublishError("queue full")
        nsqd = self.nsqd
        now = nsqd.now_ns()
        ids = nsqd.id_generator.next_ids(now, count)
        if defer:
            messages = [Message(i, body, now, 0, defer) for i, body in zip(ids, bodies, strict=True)]
        else:
            messages = list(map(Message, ids, bodies, repeat(now, count)))
        try:
            if direct:
                self._fan_out(messages)
            else:
                for message in messages:
                    self._store(message)
                self._schedule_pump()
        except BackendError as e:
            nsqd.set_health(str(e))
            raise PublishError(str(e)) from e
        if nsqd.durable:
            if direct:
                for channel in self.channels.values():
                    nsqd.note_write(channel.backend)
            else:
                nsqd.note_write(self._backend)
        self.message_count += count
        self.message_bytes += sum(map(len, bodies))

    def _store(self, message: Message) -> None:
        memory = self._memory
        if len(memory) < self._memory_limit and not (self._fifo and self._backend.depth()):
            memory.append(message)
            return
        if self._fifo and memory:
            put = self._backend.put
            while memory:
                put(memory[0])
                memory.popleft()
        self._backend.put(message)

    def _fan_out(self, messages: list[Message], force: bool = False) -> None:
        channels = list(self.channels.values())
        channels[0].put_many(messages, force)
        for channel in channels[1:]:
            channel.put_many([message.copy() for message in messages], force)

    def backlog(self) -> int:
        """Messages waiting at the topic (memory and disk) for the pump to hand on."""
        return len(self._memory) + self._backend.depth()

    def _schedule_pump(self) -> None:
        if self._pump_call is None and self.flowing and self.backlog():
            self._pump_call = self.nsqd.clock.callLater(0, self._pump)

    def _drain(self) -> None:
        """A channel appeared or the topic was unpaused: hand on a first batch now, then pump."""
        if self._pump_call is None:
            self._pump_batch()
        self._schedule_pump()

    def _pump(self) -> None:
        """
        Hand up to ``PUMP_BATCH`` waiting messages to the channels, then yield to the reactor.

        Go's topic pump runs in its own goroutine; here a backlog of millions (read back from
        disk) moves in batches so other connections are served in between. While a backlog
        exists, new publishes queue behind it.
        """
        self._pump_call = None
        if self._pump_batch():
            self.nsqd.run_dispatch()
        self._schedule_pump()

    def _pump_batch(self) -> bool:
        """Move one batch to the channels; whether anything moved."""
        if not self.flowing or self.deleted:
            return False
        batch: list[Message] = []
        memory = self._memory
        read = self._backend.read
        while len(batch) < PUMP_BATCH:
            if memory:
                batch.append(memory.popleft())
                continue
            message = read()
            if message is None:
                break
            batch.append(message)
        if batch:
            handed: list[Message] = []
            if self.nsqd.durable:
                # The topic's copy may be forgotten only once every channel's copy is fsynced.
                for message in batch:
                    if message.ref is not None:
                        holder = message.copy()
                        holder.ref, message.ref = message.ref, None
                        handed.append(holder)
            try:
                # Already accepted: never refuse these, even past a memory-only channel's bound.
                self._fan_out(batch, force=True)
            except BackendError as e:
                self.nsqd.set_health(str(e))
                log.error(
                    "TOPIC({topic}): failed to hand messages to channels: {error}", topic=self.name, error=e
                )
            if handed:
                for channel in self.channels.values():
                    self.nsqd.note_write(channel.backend)
                done = self._backend.done
                self.nsqd.sync_barrier().addCallbacks(
                    lambda _: [done(m) for m in handed],
                    lambda f: log.failure("TOPIC({topic}): channel sync failed", f, topic=self.name),
                )
        return bool(batch)

    def _cancel_pump(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None

    # -- channels ---------------------------------------------------------------------------

    def get_channel(self, name: str, ordered: bool | None = None, order_key: str | None = None) -> Channel:
        """
        The channel named ``name``, created (and announced) if it does not exist.

        ``ordered`` sets the channel's ordered mode (docs/extensions/ordered.md), also on an
        existing channel (persisted in nsqd.dat when it changes); None leaves an existing
        channel's mode alone and gives a new one the mode C{--ordered-channel} says.
        ``order_key`` likewise sets the order key spec of an ordered channel (C{""}: ordered as
        a whole); None keeps an existing channel's, and gives a new ordered channel whose name
        C{--ordered-channel} matches the C{--ordered-channel-key} spec.

        @raise ValueError: ``order_key`` is not a valid order key spec.
        """
        channel = self.channels.get(name)
        if channel is None:
            patterns = self.nsqd.ordered_patterns
            if ordered is None:
                ordered = patterns.matches(name)
            if order_key is None:
                order_key = ""
                if ordered and patterns.matches(name):
                    order_key = str(getattr(self.nsqd.options, "ordered_channel_key", ""))
            channel = Channel(
                self.nsqd,
                self.name,
                name,
                self.nsqd.make_backend(f"{self.name}:{name}", is_ephemeral(name)),
                ordered=ordered,
                order_key=order_key,
            )
            self.channels[name] = channel
            self.nsqd.channel_created(self, channel)
            self._drain()
            return channel
        target = channel.ordered if ordered is None else ordered
        key = channel.order_key if order_key is None else order_key
        if not target:
            key = ""
        if target != channel.ordered or key != channel.order_key:
            channel.set_mode(target, key)
            self.nsqd.persist_metadata()
        return channel

    def find_channel(self, name: str) -> Channel | None:
        return self.channels.get(name)

    def delete_channel(self, name: str) -> None:
        """Delete a channel (closing its clients); raise KeyError if there is none."""
        channel = self.channels.pop(name)
        channel.delete()
        self.nsqd.channel_deleted(self, channel)
        if self.ephemeral and not self.channels and not self.deleted:
            self.nsqd.delete_topic(self.name)

    # -- operator actions -------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True

    def unpause(self) -> None:
        self.paused = False
        self._drain()

    def hold(self) -> None:
        """
        Keep published messages at the topic until L{release} (not visible as C{paused}).

        Used while nsqlookupd is asked which channels a new topic should have, so that those
        channels, once created, get the messages published in the meantime.
        """
        self._holds += 1

    def release(self) -> None:
        """End one L{hold}; once none is left, what waited is handed to the channels."""
        if self._holds:
            self._holds -= 1
            if not self._holds:
                self._drain()

    def empty(self) -> None:
        """Drop the topic's own queue; channels are untouched (as NSQ does)."""
        self._memory.clear()
        self._backend.empty()

    def delete(self) -> None:
        """Delete every channel (closing clients), drop the queue, release storage."""
        self.deleted = True
        self._cancel_pump()
        for name in list(self.channels):
            channel = self.channels.pop(name)
            channel.delete()
            self.nsqd.channel_deleted(self, channel)
        self.empty()
        self._backend.delete()

    def close(self) -> None:
        """Clean shutdown: channels flush to their backends, then the topic's memory queue."""
        self._cancel_pump()
        for channel in self.channels.values():
            channel.close()
        if not self.ephemeral and self._backend.unbounded:
            while self._memory:
                self._backend.put(self._memory.popleft())
        self._backend.close()
