"""
A channel: its queue, its in-flight and deferred messages, and the clients subscribed to it.

The Go nsqd races one message pump per client over a shared Go channel. Here one ``dispatch()``
pass runs whenever readiness changes (publish, RDY, FIN, REQ, timeout, unpause, subscribe) and
fills the ready clients' RDY windows. In-flight deadlines and deferred due times are kept in two
heaps with lazy deletion and one timer for the whole channel.

An *ordered* channel (beyond NSQ, docs/extensions/ordered.md) delivers in the order messages
entered it, one message in flight at a time: its memory queue and disk queue form one FIFO, and
a message put back by REQ, a timeout or a disconnect becomes the *head*, delivered again before
anything else. The ordered rules cost a flag check per dispatch pass (and per message only on
paths that already write to disk or take a message back).

An ordered channel may be *ordered by key* (C{order_key}): each message's key is read from its
body when it leaves the FIFO, and the rules above hold per key. A key has at most one message in
flight; a message whose key is busy (in flight, or its taken-back head waiting out a REQ delay)
is parked in that key's pending lane, up to C{--ordered-max-pending} per channel, past which the
FIFO is not read until a key frees. Messages taken back go to the front of their key's lane.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Attribute, Interface

from twisted_nsq.nsqd.backend import IBackendQueue
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.ordered import KeyFunction, OrderKey, head_path, load_head, parse_order_key, save_head
from twisted_nsq.nsqd.sidecar import load_deferrals, save_deferrals, sidecar_path
from twisted_nsq.nsqd.spill import DeferredSpill
from twisted_nsq.wire.names import is_ephemeral

if TYPE_CHECKING:
    from twisted_nsq.nsqd.nsqd import NSQD

_NEVER = float("inf")
#: One dispatch pass writes at most about this many body bytes to a client before the next
#: client's turn; the transport's back-pressure (``IPushProducer``) then bounds what is buffered.
PASS_BYTES = 256 * 1024
#: Finished-message references the in-flight heap may hold beyond twice the live ones.
HEAP_SLACK = 4096


class ChannelError(Exception):
    """An operation on a channel was refused; the text is NSQ's reason (e.g. ``ID not in flight``)."""


class IChannelConsumer(Interface):
    """A subscribed client, as a channel sees it (the TCP session provides it)."""

    client_id = Attribute("int: unique per connection, owner of the messages it was sent")
    ready_count = Attribute("int: the RDY window; 0 when not ready (also after CLS)")
    in_flight_count = Attribute("int: messages sent and not yet FIN/REQ/timed out")
    message_count = Attribute("int: deliveries")
    sample_rate = Attribute("int: 0 (off) or 1..99")
    msg_timeout = Attribute("float: this client's in-flight timeout in seconds")
    writable = Attribute("bool: False while the transport asked us to stop producing")

    def deliver(messages: list[Message]) -> None:
        """Write these messages to the client (one pass, one write)."""

    def message_timed_out() -> None:
        """One of this client's in-flight messages timed out."""

    def channel_emptied() -> None:
        """The channel dropped all in-flight messages: in_flight_count is now 0."""

    def close_for_delete() -> None:
        """The channel is being deleted: close the connection."""


class Channel:
    """One channel of a topic. See the module docstring."""

    def __init__(
        self,
        nsqd: NSQD,
        topic_name: str,
        name: str,
        backend: IBackendQueue,
        ordered: bool = False,
        order_key: str = "",
    ) -> None:
        self.nsqd = nsqd
        self.topic_name = topic_name
        self.name = name
        self.ephemeral = is_ephemeral(name)
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.requeue_count = 0
        self.timeout_count = 0
        self.clients: dict[int, IChannelConsumer] = {}
        self.in_flight: dict[bytes, Message] = {}
        self.deferred: dict[bytes, Message] = {}
        self._clock: IReactorTime = nsqd.clock
        self._options = nsqd.options
        self._memory: deque[Message] = deque()
        self._memory_limit = nsqd.memory_limit(self.ephemeral)
        # Go gives an ephemeral channel an unbuffered queue when --mem-queue-size=0: a message
        # gets through only if a client can take it at that moment, else it is dropped.
        self._unbuffered = self.ephemeral and self._memory_limit == 0
        # Due times (clock seconds) of deferred messages that sit in the backend: they wait out
        # their deferral when read back (``--keep-deferred`` across restarts, ``--durable``).
        self._keep_deferred = not self.ephemeral and (nsqd.durable or nsqd.options.keep_deferred)
        self._sidecar = ""
        self._deferred_due: dict[bytes, float] = {}
        self._deferred_limit = nsqd.options.deferred_memory_limit
        self._spill: DeferredSpill | None = None
        if self._deferred_limit > 0 and not self.ephemeral and backend.unbounded:
            self._spill = DeferredSpill(nsqd.data_path(), f"{topic_name}:{name}")
        if self._keep_deferred and backend.unbounded:
            self._sidecar = sidecar_path(nsqd.data_path(), f"{topic_name}:{name}")
            self._deferred_due = {
                message_id: due / 1e9 for message_id, due in load_deferrals(self._sidecar).items()
            }
        self._backend = backend
        self._consumers: list[IChannelConsumer] = []
        self._rotation = 0
        self._in_flight_heap: list[tuple[float, int, list[Message]]] = []
        # Message references held by the heap, finished ones included (lazy deletion); the heap
        # is rebuilt from ``in_flight`` when they outnumber the live ones (see _compact_heap).
        self._heap_refs = 0
        self._deferred_heap: list[tuple[float, int, Message]] = []
        self._sequence = itertools.count()
        self._timer: IDelayedCall | None = None
        self._timer_at = _NEVER
        self._random: random.Random = nsqd.random
        self.dirty = False
        self.on_finish: list[Callable[[Message], None]] = []
        #: Whether this channel is ordered (set with L{set_ordered}).
        self.ordered = False
        # Ordered with a real disk queue: memory and disk are one FIFO (memory is only used
        # while the disk queue is empty; an overflow moves memory to disk first).
        self._fifo = False
        # Messages taken back from consumers that go out before the queue, in ID order (one in
        # the steady state), and the clock time before which the first may not go (REQ delay).
        self._head: list[Message] = []
        self._head_wait = 0.0
        # Copies in the disk queue to drop when read: their head-file twins went out first.
        self._skip: dict[bytes, int] = {}
        self._head_file = ""
        #: The order key spec of a channel ordered by key ("" when ordered as a whole or not at all).
        self.order_key = ""
        # Ordered by key: the state below is used only while ``_keyed`` (see dispatch).
        self._keyed = False
        self._key_of: KeyFunction = _no_key
        # Each key's pending messages (parked, or taken back to the front), oldest first.
        self._lanes: dict[OrderKey, deque[Message]] = {}
        # Messages in all lanes, and how many may be parked before the FIFO stops being read.
        self._parked = 0
        self._max_pending = max(1, int(getattr(nsqd.options, "ordered_max_pending", 10000)))
        # In-flight messages per key, and the key of each in-flight message (by ID).
        self._busy: dict[OrderKey, int] = {}
        self._flight_keys: dict[bytes, OrderKey] = {}
        # Keys whose lane front waits out a REQ delay (clock time), and a heap of those times.
        self._waits: dict[OrderKey, float] = {}
        self._wait_heap: list[tuple[float, int, OrderKey]] = []
        # Keys whose lane front may go out now (checked again when taken), without repeats.
        self._ready_keys: deque[OrderKey] = deque()
        self._ready_set: set[OrderKey] = set()
        # IDs of lane messages that were taken back (they stay in ID order at the lane's front).
        self._taken: set[bytes] = set()
        # The key of the message _next_keyed just returned.
        self._taken_key: OrderKey = None
        # The head file's messages in file order with their waits (clock seconds), until the
        # mode is known: ordered by key keeps the file order, which keeps each key's order.
        self._loaded: list[tuple[Message, float]] = []
        if not self.ephemeral and backend.unbounded:
            self._head_file = head_path(nsqd.data_path(), f"{topic_name}:{name}")
            self._load_head()
        if ordered:
            self.set_mode(True, order_key)
        elif self._head:
            # No (longer) ordered: what the head file held joins the front of the queue.
            self._release_head()
        self._loaded = []

    def __repr__(self) -> str:
        return f"<Channel {self.topic_name}:{self.name}>"

    @property
    def backend(self) -> IBackendQueue:
        """Where this channel's overflow (or, when durable, every message) is stored."""
        return self._backend

    # -- sizes ---------------------------------------------------------------------------

    def depth(self) -> int:
        head = len(self._head) - 1 if self._head_wait else len(self._head)
        if self._keyed:
            head += self._parked - len(self._waits)
        return len(self._memory) + self._backend.depth() + head

    def pending_count(self) -> int:
        """Messages held in a channel ordered by key's lanes (``order_pending`` in /stats)."""
        return self._parked

    def backend_depth(self) -> int:
        return self._backend.depth()

    def memory_depth(self) -> int:
        return len(self._memory)

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more messages can be queued without breaking the memory bound."""
        return self._backend.unbounded or len(self._memory) + count <= self._memory_limit

    # -- putting messages in ---------------------------------------------------------------

    def put(self, message: Message, force: bool = False) -> None:
        """
        Queue a message from the topic (deferred ones wait first); dispatch follows later.

        ``force`` is for messages already accepted elsewhere: they may exceed the memory bound
        of a memory-only channel rather than be refused.
        """
        self.message_count += 1
        if message.deferred > 0:
            if self.nsqd.durable and self._sidecar:
                # Durable: on disk like any message; it waits out its deferral when read back.
                self._deferred_due[message.id] = self._clock.seconds() + message.deferred
                self._enqueue(message)
            else:
                self._defer(message, message.deferred)
        elif force:
            self._requeue(message)
        else:
            self._enqueue(message)

    def put_many(self, messages: list[Message], force: bool = False) -> None:
        """
        ``put`` for a batch; the common case (in memory, not deferred) is one deque extend.

        A published batch shares one deferral, so its first message speaks for all of them;
        forced (drained) batches may mix and take the per-message path.
        """
        memory = self._memory
        if (
            not force
            and not messages[0].deferred
            and len(memory) + len(messages) <= self._memory_limit
            and not (self._fifo and self._backend.depth())
        ):
            self.message_count += len(messages)
            memory.extend(messages)
            if not self.dirty:
                self.nsqd.mark_dirty(self)
            return
        for message in messages:
            self.put(message, force)

    def _ready_capacity(self) -> int:
        return sum(max(0, c.ready_count - c.in_flight_count) for c in self._consumers if c.writable)

    def _enqueue(self, message: Message) -> None:
        if self._fifo:
            self._ordered_tail(message)
            return
        if len(self._memory) < self._memory_limit or (
            self._unbuffered and not self.paused and len(self._memory) < self._ready_capacity()
        ):
            self._memory.append(message)
        else:
            self._backend.put(message)
        if not self.dirty:
            self.nsqd.mark_dirty(self)

    def _requeue(self, message: Message) -> None:
        """Put back a message that was already accepted: it may exceed the memory bound."""
        if self._fifo:
            self._ordered_tail(message)
            return
        if len(self._memory) < self._memory_limit or not self._backend.unbounded:
            self._memory.append(message)
        else:
            old_ref = message.ref
            self._backend.put(message)
            if old_ref is not None:
                # Written again at the tail: a durable backend may forget the first copy.
                self._backend.done(message)
                message.ref = None
        if not self.dirty:
            self.nsqd.mark_dirty(self)

    def _ordered_tail(self, message: Message) -> None:
        """Join the FIFO of an ordered channel: memory only while nothing is on disk."""
        memory = self._memory
        if len(memory) < self._memory_limit and not self._backend.depth():
            memory.append(message)
        else:
            if memory:
                self._spill_memory()
            self._write_back(message)
        if not self.dirty:
            self.nsqd.mark_dirty(self)

    def _spill_memory(self) -> None:
        """Move the memory queue to the tail of the disk queue, oldest first."""
        memory = self._memory
        while memory:
            self._write_back(memory[0])
            memory.popleft()

    def _write_back(self, message: Message) -> None:
        """Append to the disk queue; a durable backend may then forget an earlier copy."""
        old_ref = message.ref
        self._backend.put(message)
        if old_ref is not None:
            self._backend.done(message)
            message.ref = None

    def _defer(self, message: Message, delay: float) -> None:
        self._hold(message, self._clock.seconds() + delay)

    def _hold(self, message: Message, due: float) -> None:
        """Wait until ``due``: in the deferred heap, or past the memory cap in the spill files."""
        spill = self._spill
        if spill is not None and message.ref is None and len(self.deferred) >= self._deferred_limit:
            spill.add(message, due)
            upcoming = spill.next_time()
            if upcoming is not None and upcoming < self._timer_at:
                self._schedule(upcoming)
            return
        message.deadline = due
        self.deferred[message.id] = message
        heapq.heappush(self._deferred_heap, (due, next(self._sequence), message))
        if due < self._timer_at:
            self._schedule(due)

    def deferred_count(self) -> int:
        """
        Deferred messages, in memory and spilled (``deferred_count`` in /stats), and an ordered
        channel's head while it waits out a REQ delay.
        """
        spilled = len(self._spill) if self._spill is not None else 0
        return len(self.deferred) + spilled + (1 if self._head_wait else 0) + len(self._waits)

    def _pop(self) -> Message | None:
        if self._memory:
            return self._memory.popleft()
        message = self._backend.read()
        if (self._deferred_due or self._skip) and message is not None:
            return self._filter_read(message)
        return message

    def _filter_read(self, message: Message | None) -> Message | None:
        """Drop head-file twins and park messages not yet due, until one can go out."""
        skip = self._skip
        due_times = self._deferred_due
        while message is not None:
            left = skip.get(message.id)
            if left is not None:
                if left > 1:
                    skip[message.id] = left - 1
                else:
                    del skip[message.id]
                if message.ref is not None:
                    self._backend.done(message)
                message = self._backend.read()
                continue
            due = due_times.pop(message.id, None) if due_times else None
            if due is None or due <= self._clock.seconds():
                return message
            self._park(message, due)
            message = self._backend.read()
        return None

    def _park(self, message: Message, due: float) -> None:
        """A message read back before it is due waits (keeping its ref, if any)."""
        self._hold(message, due)

    # -- clients ---------------------------------------------------------------------------

    def add_client(self, client: IChannelConsumer) -> None:
        """Subscribe a client; raise ChannelError past ``--max-channel-consumers``."""
        limit = self._options.max_channel_consumers
        if client.client_id in self.clients:
            return
        if limit and len(self.clients) >= limit:
            raise ChannelError(f"consumers for {self.topic_name}:{self.name} exceeds limit of {limit}")
        self.clients[client.client_id] = client
        self._consumers.append(client)

    def remove_client(self, client_id: int) -> None:
        """
        Unsubscribe; its in-flight messages stay until they time out (as NSQ does), except in
        an ordered channel, where they go back to the head at once.
        """
        client = self.clients.pop(client_id, None)
        if client is None:
            return
        self._consumers.remove(client)
        if self.ordered:
            for message in [m for m in self.in_flight.values() if m.client_id == client_id]:
                del self.in_flight[message.id]
                if self._keyed:
                    self._key_back(message)
                else:
                    self._to_head(message)
        if not self.clients and self.ephemeral and not self.deleted:
            self.nsqd.delete_ephemeral_channel(self)

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """
        Fill ready clients' RDY windows from the queue, round-robin, one write per client. A
        channel ordered by key takes only messages whose key is free: the fronts of freed lanes
        first, then the FIFO (parking what belongs to a busy key).
        """
        self.dirty = False
        if self.paused or not self._consumers:
            return
        keyed = False
        if self.ordered:
            keyed = self._keyed
            if not keyed:
                self._dispatch_ordered()
                return
        consumers = self._consumers
        count = len(consumers)
        clock_now = self._clock.seconds()
        in_flight = self.in_flight
        busy = self._busy
        flight_keys = self._flight_keys
        take_next = self._next_keyed if keyed else self._pop
        randrange = self._random.randrange
        progressed = True
        while progressed:
            progressed = False
            if keyed:
                depth = len(self._ready_keys)
                if self._parked < self._max_pending:
                    depth += len(self._memory) + self._backend.depth()
            else:
                depth = len(self._memory) + self._backend.depth()
            if not depth:
                return
            start = self._rotation % count
            self._rotation = start + 1
            ready = [
                c
                for c in (consumers[start:] + consumers[:start] if start else consumers)
                if c.writable and c.ready_count > c.in_flight_count
            ]
            if not ready:
                return
            share = -(-depth // len(ready))
            for client in ready:
                window = client.ready_count - client.in_flight_count
                take = window if window < share else share
                deadline = clock_now + client.msg_timeout
                client_id = client.client_id
                rate = client.sample_rate
                batch: list[Message] = []
                append = batch.append
                budget = PASS_BYTES
                while take > 0 and budget > 0:
                    message = take_next()
                    if message is None:
                        break
                    progressed = True
                    budget -= len(message.body)
                    if keyed:
                        key = self._taken_key
                        if rate and randrange(100) > rate:
                            # NSQ drops a sampled-out message for the whole channel.
                            if key in self._lanes:
                                self._make_ready(key)
                            continue
                        busy[key] = busy.get(key, 0) + 1
                        flight_keys[message.id] = key
                    elif rate and randrange(100) > rate:
                        # NSQ drops a sampled-out message for the whole channel.
                        continue
                    message.attempts += 1
                    message.client_id = client_id
                    message.delivery_ts = clock_now
                    message.deadline = deadline
                    in_flight[message.id] = message
                    append(message)
                    take -= 1
                if not batch:
                    continue
                heapq.heappush(self._in_flight_heap, (deadline, next(self._sequence), batch))
                self._heap_refs += len(batch)
                if self._heap_refs > 2 * len(in_flight) + HEAP_SLACK:
                    self._compact_heap()
                if deadline < self._timer_at:
                    self._schedule(deadline)
                client.in_flight_count += len(batch)
                client.message_count += len(batch)
                client.deliver(batch)

    def _dispatch_ordered(self) -> None:
        """One message in flight for the whole channel: the head, else the next of the FIFO."""
        if self.in_flight:
            return
        now = self._clock.seconds()
        if self._head_wait:
            if now < self._head_wait:
                return
            self._head_wait = 0.0
        consumers = self._consumers
        count = len(consumers)
        start = self._rotation % count
        client: IChannelConsumer | None = None
        for offset in range(count):
            candidate = consumers[(start + offset) % count]
            if candidate.writable and candidate.ready_count > candidate.in_flight_count:
                client = candidate
                self._rotation = start + offset + 1
                break
        if client is None:
            return
        head = self._head
        rate = client.sample_rate
        while True:
            message = head.pop(0) if head else self._pop()
            if message is None:
                return
            if rate and self._random.randrange(100) > rate:
                # NSQ drops a sampled-out message for the whole channel.
                continue
            break
        deadline = now + client.msg_timeout
        message.attempts += 1
        message.client_id = client.client_id
        message.delivery_ts = now
        message.deadline = deadline
        in_flight = self.in_flight
        in_flight[message.id] = message
        heapq.heappush(self._in_flight_heap, (deadline, next(self._sequence), [message]))
        self._heap_refs += 1
        if self._heap_refs > 2 * len(in_flight) + HEAP_SLACK:
            self._compact_heap()
        if deadline < self._timer_at:
            self._schedule(deadline)
        client.in_flight_count += 1
        client.message_count += 1
        client.deliver([message])

    def _to_head(self, message: Message, delay: float = 0.0) -> None:
        """Back to the head of an ordered channel; with a delay, nothing goes out until then."""
        bisect.insort(self._head, message, key=_message_id)
        if delay > 0:
            wait = self._clock.seconds() + delay
            if wait > self._head_wait:
                self._head_wait = wait
            if wait < self._timer_at:
                self._schedule(wait)
        if not self.dirty:
            self.nsqd.mark_dirty(self)

    # -- ordered by key --------------------------------------------------------------------------

    def _next_keyed(self) -> Message | None:
        """
        The next message that may go out (its key left in ``_taken_key``): a freed lane's
        front, else the FIFO's next message of a free key; FIFO messages of busy keys are parked
        on the way, until ``--ordered-max-pending`` are.
        """
        ready = self._ready_keys
        lanes = self._lanes
        busy = self._busy
        waits = self._waits
        while ready:
            key = ready.popleft()
            self._ready_set.discard(key)
            lane = lanes.get(key)
            if lane is None or key in busy or key in waits:
                continue
            front = lane.popleft()
            if not lane:
                del lanes[key]
            self._parked -= 1
            if self._taken:
                self._taken.discard(front.id)
            self._taken_key = key
            return front
        key_of = self._key_of
        pop = self._pop
        while self._parked < self._max_pending:
            message = pop()
            if message is None:
                return None
            key = key_of(message.body)
            if key in busy or key in lanes or key in waits:
                parked = lanes.get(key)
                if parked is None:
                    lanes[key] = parked = deque()
                parked.append(message)
                self._parked += 1
                continue
            self._taken_key = key
            return message
        return None

    def _make_ready(self, key: OrderKey) -> None:
        """``key``'s lane front may go out (the caller checked the key is free)."""
        if key not in self._ready_set:
            self._ready_set.add(key)
            self._ready_keys.append(key)

    def _key_finished(self, message_id: bytes) -> None:
        """A message of a channel ordered by key left flight for good: its key may free up."""
        key = self._flight_keys.pop(message_id, None)
        busy = self._busy
        left = busy.get(key, 0) - 1
        if left > 0:
            busy[key] = left
            return
        busy.pop(key, None)
        if key in self._lanes and key not in self._waits:
            self._make_ready(key)

    def _key_back(self, message: Message, delay: float = 0.0) -> None:
        """
        Back to the front of its key's lane (after that key's other taken-back messages with
        lower IDs); with a delay, that key alone waits until then.
        """
        key = self._flight_keys.get(message.id)
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = lane = deque()
        taken = self._taken
        index = 0
        for other in lane:
            if other.id in taken and other.id < message.id:
                index += 1
            else:
                break
        lane.insert(index, message)
        taken.add(message.id)
        self._parked += 1
        if delay > 0:
            wait = self._clock.seconds() + delay
            if wait > self._waits.get(key, 0.0):
                self._waits[key] = wait
                heapq.heappush(self._wait_heap, (wait, next(self._sequence), key))
            if wait < self._timer_at:
                self._schedule(wait)
        self._key_finished(message.id)
        if not self.dirty:
            self.nsqd.mark_dirty(self)

    def _release_waits(self, now: float) -> float:
        """Free the keys whose REQ delay is over; the next wait still to come (or never)."""
        heap = self._wait_heap
        waits = self._waits
        while heap and heap[0][0] <= now:
            due, _, key = heapq.heappop(heap)
            if waits.get(key) == due:
                del waits[key]
                if key in self._lanes and key not in self._busy:
                    self._make_ready(key)
                if not self.dirty:
                    self.nsqd.mark_dirty(self)
        return heap[0][0] if heap else _NEVER

    def _key_up(self, spec: str, head: list[Message], waits: dict[bytes, float], taken: bool) -> None:
        """
        Enter ordered-by-key mode: ``head`` (each key's messages in its order) goes to the
        lanes, a message in ``waits`` holds its key until then, and the keys of messages still
        in flight count as busy. ``taken``: the head holds messages taken back from flight (in
        ID order), among which messages still in flight rejoin by ID when they come back.
        """
        self._keyed = True
        self._key_of = key_of = parse_order_key(spec)
        now = self._clock.seconds()
        for message in self.in_flight.values():
            key = key_of(message.body)
            self._flight_keys[message.id] = key
            self._busy[key] = self._busy.get(key, 0) + 1
        lanes = self._lanes
        for message in head:
            key = key_of(message.body)
            lane = lanes.get(key)
            if lane is None:
                lanes[key] = lane = deque()
            lane.append(message)
            if taken:
                self._taken.add(message.id)
            self._parked += 1
            wait = waits.get(message.id, 0.0)
            if wait > now and wait > self._waits.get(key, 0.0):
                self._waits[key] = wait
                heapq.heappush(self._wait_heap, (wait, next(self._sequence), key))
                if wait < self._timer_at:
                    self._schedule(wait)
        for key in lanes:
            if key not in self._busy and key not in self._waits:
                self._make_ready(key)

    def _key_down(self) -> tuple[list[Message], list[tuple[Message, float]]]:
        """
        Leave ordered-by-key mode: the lanes' messages oldest first, minus each waiting key's
        front, and those fronts with their wait; the in-flight messages simply finish.
        """
        now = self._clock.seconds()
        free: list[Message] = []
        waiting: list[tuple[Message, float]] = []
        for key, lane in self._lanes.items():
            wait = self._waits.get(key, 0.0)
            if wait > now:
                waiting.append((lane.popleft(), wait))
            free.extend(lane)
        free.sort(key=_message_id)
        self._clear_keyed()
        self._keyed = False
        self._key_of = _no_key
        return free, waiting

    def _clear_keyed(self) -> None:
        self._lanes.clear()
        self._parked = 0
        self._busy.clear()
        self._flight_keys.clear()
        self._waits.clear()
        self._wait_heap.clear()
        self._ready_keys.clear()
        self._ready_set.clear()
        self._taken.clear()

    def _keyed_head(self) -> tuple[list[Message], dict[bytes, float]]:
        """
        For a clean stop: key after key, its in-flight messages (by ID) then its lane, and the
        wait of each waiting key's first message.
        """
        by_key: dict[OrderKey, list[Message]] = {}
        flight_keys = self._flight_keys
        for message in sorted(self.in_flight.values(), key=_message_id):
            by_key.setdefault(flight_keys.get(message.id), []).append(message)
        for key, lane in self._lanes.items():
            by_key.setdefault(key, []).extend(lane)
        head: list[Message] = []
        waits: dict[bytes, float] = {}
        for key, messages in by_key.items():
            wait = self._waits.get(key, 0.0)
            if wait and messages:
                waits[messages[0].id] = wait
            head.extend(messages)
        return head, waits

    # -- ordered mode ----------------------------------------------------------------------------

    def set_mode(self, ordered: bool, order_key: str = "") -> None:
        """
        Set ordered delivery and its order key (C{""}: the channel as a whole; ignored when not
        ordered). Switching keeps what is held back: the lanes of a channel ordered by key
        become the head, oldest first, a key waiting out a REQ delay holding it for the time
        left (or, turning ordered off, deferred); a head becomes the front of its keys' lanes.
        Messages in flight finish as they are (their keys count as busy).

        @raise ValueError: ``order_key`` is not a valid order key spec (nothing changes).
        """
        if not ordered:
            order_key = ""
        if order_key:
            parse_order_key(order_key)
        if ordered == self.ordered and order_key == self.order_key:
            return
        if self._keyed:
            free, waiting = self._key_down()
            if ordered:
                now = self._clock.seconds()
                self._head = sorted(free + [message for message, _ in waiting], key=_message_id)
                self._head_wait = max((wait for _, wait in waiting), default=0.0)
                if self._head_wait > now and self._head_wait < self._timer_at:
                    self._schedule(self._head_wait)
            else:
                now = self._clock.seconds()
                for message, wait in waiting:
                    self._defer(message, wait - now)
                self._memory.extendleft(reversed(free))
        self.order_key = order_key
        self.set_ordered(ordered)
        if order_key:
            head, self._head = self._head, []
            wait, self._head_wait = self._head_wait, 0.0
            taken = not self._loaded
            if self._loaded:
                # A head file's own order and waits (a key's order, not the IDs').
                waits = {message.id: due for message, due in self._loaded if due}
                head = [message for message, _ in self._loaded]
            else:
                waits = {head[0].id: wait} if head and wait else {}
            self._key_up(order_key, head, waits, taken)
        self.nsqd.mark_dirty(self)

    def set_ordered(self, ordered: bool) -> None:
        """
        Turn ordered delivery on or off. Messages in flight when it is turned on finish as they
        are; nothing more goes out until none is left. When it is turned off, the head joins the
        front of the memory queue (a head waiting out a REQ delay is deferred for what is left).
        """
        if ordered == self.ordered:
            return
        if not ordered and (self._keyed or self.order_key):
            self.set_mode(False)
            return
        self.ordered = ordered
        if ordered:
            self._fifo = not self.ephemeral and self._backend.unbounded
            if self._fifo and self._memory and self._backend.depth():
                self._spill_memory()
        else:
            self._fifo = False
            self._release_head()
        self.nsqd.mark_dirty(self)

    def _release_head(self) -> None:
        """The head joins the front of the memory queue (a waiting one is deferred instead)."""
        head, self._head = self._head, []
        wait, self._head_wait = self._head_wait, 0.0
        now = self._clock.seconds()
        if head and wait > now:
            self._defer(head.pop(0), wait - now)
        self._memory.extendleft(reversed(head))

    def _load_head(self) -> None:
        """Take over the head file of the last clean stop (deleted now: it is in memory)."""
        state = load_head(self._head_file)
        if not (state.messages or state.skips):
            return
        save_head(self._head_file, (), ())
        skip = self._skip
        for message_id in state.skips:
            skip[message_id] = skip.get(message_id, 0) + 1
        for message, _ in state.messages:
            skip[message.id] = skip.get(message.id, 0) + 1
        self._head = sorted((message for message, _ in state.messages), key=_message_id)
        self._loaded = [(message, wait / 1e9) for message, wait in state.messages]
        waits = [wait for _, wait in state.messages if wait]
        if waits:
            wait = max(waits) / 1e9
            if wait > self._clock.seconds():
                self._head_wait = wait
                self._schedule(wait)

    # -- consumer commands ---------------------------------------------------------------------

    def _owned(self, client_id: int, message_id: bytes) -> Message:
        message = self.in_flight.get(message_id)
        if message is None:
            raise ChannelError("ID not in flight")
        if message.client_id != client_id:
            raise ChannelError("client does not own message")
        return message

    def finish(self, client_id: int, message_id: bytes) -> Message:
        """FIN: the message is done. Raises ChannelError with NSQ's reason."""
        message = self._owned(client_id, message_id)
        del self.in_flight[message_id]
        if self._keyed:
            self._key_finished(message_id)
        if message.ref is not None:
            self._backend.done(message)
        for observer in self.on_finish:
            observer(message)
        return message

    def requeue(self, client_id: int, message_id: bytes, delay: float) -> None:
        """REQ: back to the queue now, or after ``delay`` seconds."""
        message = self._owned(client_id, message_id)
        del self.in_flight[message_id]
        self.requeue_count += 1
        if self._keyed:
            self._key_back(message, delay)
        elif self.ordered:
            self._to_head(message, delay)
        elif delay > 0:
            self._defer(message, delay)
        else:
            self._requeue(message)

    def touch(self, client_id: int, message_id: bytes, msg_timeout: float) -> None:
        """TOUCH: a new deadline, capped at delivery time + ``--max-msg-timeout``."""
        message = self._owned(client_id, message_id)
        deadline = self._clock.seconds() + msg_timeout
        cap = message.delivery_ts + self._options.max_msg_timeout
        if deadline > cap:
            deadline = cap
        message.deadline = deadline
        heapq.heappush(self._in_flight_heap, (deadline, next(self._sequence), [message]))
        self._heap_refs += 1
        if self._heap_refs > 2 * len(self.in_flight) + HEAP_SLACK:
            self._compact_heap()
        if deadline < self._timer_at:
            self._schedule(deadline)

    def _compact_heap(self) -> None:
        """
        Rebuild the in-flight heap from ``in_flight`` alone.

        FIN and REQ leave their entries in the heap (removing from a heap is O(n)), so without
        this a fast consumer would keep every finished message alive until its deadline
        (``--msg-timeout``, 60 s by default). ``in_flight`` is bounded by the clients' RDY
        windows, and a rebuild happens only after at least that many pushes, so it costs O(1)
        per delivery.
        """
        by_deadline: dict[float, list[Message]] = {}
        for message in self.in_flight.values():
            by_deadline.setdefault(message.deadline, []).append(message)
        heap = [(deadline, next(self._sequence), batch) for deadline, batch in by_deadline.items()]
        heapq.heapify(heap)
        self._in_flight_heap = heap
        self._heap_refs = len(self.in_flight)

    # -- the one timer ---------------------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_at = when
        delay = when - self._clock.seconds()
        self._timer = self._clock.callLater(delay if delay > 0 else 0, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = _NEVER
        self.process_timers(self._clock.seconds())
        self.nsqd.run_dispatch()

    def process_timers(self, now: float) -> None:
        """Time out overdue in-flight messages and release due deferred ones; re-arm the timer."""
        heap = self._in_flight_heap
        in_flight = self.in_flight
        while heap and heap[0][0] <= now:
            batch = heapq.heappop(heap)[2]
            self._heap_refs -= len(batch)
            for message in batch:
                if in_flight.get(message.id) is message and message.deadline <= now:
                    del in_flight[message.id]
                    self.timeout_count += 1
                    owner = self.clients.get(message.client_id)
                    if owner is not None:
                        owner.message_timed_out()
                    if self._keyed:
                        self._key_back(message)
                    elif self.ordered:
                        self._to_head(message)
                    else:
                        self._requeue(message)
        deferred_heap = self._deferred_heap
        deferred = self.deferred
        while deferred_heap and deferred_heap[0][0] <= now:
            message = heapq.heappop(deferred_heap)[2]
            if deferred.get(message.id) is message:
                del deferred[message.id]
                self._requeue(message)
        spill = self._spill
        spill_time = spill.next_time() if spill is not None else None
        if spill is not None and spill_time is not None and spill_time <= now:
            for due, message in spill.take(now):
                if due <= now:
                    self._requeue(message)
                else:
                    message.deadline = due
                    deferred[message.id] = message
                    heapq.heappush(deferred_heap, (due, next(self._sequence), message))
            spill_time = spill.next_time()
        head_wait = self._head_wait
        if head_wait and head_wait <= now:
            self._head_wait = head_wait = 0.0
            if not self.dirty:
                self.nsqd.mark_dirty(self)
        key_wait = self._release_waits(now) if self._wait_heap else _NEVER
        upcoming = min(
            key_wait,
            heap[0][0] if heap else _NEVER,
            deferred_heap[0][0] if deferred_heap else _NEVER,
            spill_time if spill_time is not None else _NEVER,
            head_wait or _NEVER,
        )
        if upcoming < self._timer_at:
            self._schedule(upcoming)

    # -- operator actions ------------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True

    def unpause(self) -> None:
        self.paused = False
        self.nsqd.mark_dirty(self)

    def empty(self) -> None:
        """Drop the queue, in-flight and deferred messages; clients' in-flight counts go to 0."""
        self._memory.clear()
        self._backend.empty()
        self.in_flight.clear()
        self.deferred.clear()
        self._deferred_due.clear()
        if self._spill is not None:
            self._spill.clear()
        self._in_flight_heap.clear()
        self._heap_refs = 0
        self._deferred_heap.clear()
        self._head.clear()
        self._head_wait = 0.0
        self._skip.clear()
        self._clear_keyed()
        for client in list(self._consumers):
            client.channel_emptied()

    def close_clients(self) -> None:
        """Close every subscribed connection (the channel is being deleted)."""
        for client in list(self._consumers):
            client.close_for_delete()

    def delete(self) -> None:
        """Close clients, drop everything, release the backend, stop the timer."""
        self.deleted = True
        self.close_clients()
        self.empty()
        self._backend.delete()
        self.stop_timer()
        if self._sidecar:
            save_deferrals(self._sidecar, {})
        if self._head_file:
            save_head(self._head_file, (), ())

    def stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = _NEVER

    def close(self) -> None:
        """
        Clean shutdown: in-flight, then deferred messages rejoin the queue (deferral timing is
        lost, attempts are kept, as in NSQ) and everything goes to the backend.

        An ordered channel's head (its in-flight and taken-back messages) is written to the
        queue where Go writes in-flight messages, and also to the head file, so that it goes
        out first after the restart; when the disk queue is empty and no REQ delay is pending,
        the head simply goes into the queue first and no head file is needed.
        """
        self.stop_timer()
        in_flight = sorted(self.in_flight.values(), key=lambda m: m.delivery_ts)
        if self._spill is not None:
            for due, message in self._spill.take_all():
                message.deadline = due
                self.deferred[message.id] = message
            self._spill.close()
        deferred = sorted(self.deferred.values(), key=lambda m: m.deadline)
        head, self._head = self._head, []
        head_wait, self._head_wait = self._head_wait, 0.0
        key_waits: dict[bytes, float] = {}
        if self._keyed:
            head, key_waits = self._keyed_head()
            self._clear_keyed()
            in_flight = []
            now = self._clock.seconds()
            key_waits = {i: wait for i, wait in key_waits.items() if wait > now}
            head_wait = max(key_waits.values(), default=0.0)
        elif self.ordered:
            head = sorted(head + in_flight, key=_message_id)
            in_flight = []
        self.in_flight.clear()
        self.deferred.clear()
        self._in_flight_heap.clear()
        self._heap_refs = 0
        self._deferred_heap.clear()
        if self.ephemeral:
            self._memory.clear()
            self._backend.close()
            return
        backend = self._backend
        if not backend.unbounded:
            self._memory.extendleft(reversed(head))
            self._memory.extend(in_flight + deferred)
            backend.close()
            return
        on_disk = backend.depth() > 0
        if head_wait <= self._clock.seconds():
            head_wait = 0.0
        head_file: list[Message] = []
        first: list[Message] = []
        if head and (on_disk or head_wait):
            head_file = head
        else:
            # Nothing newer on disk: the head simply goes into the queue first.
            first = head
        for message in first:
            self._write_back(message)
        while self._memory:
            backend.put(self._memory.popleft())
        for message in in_flight + head_file + deferred:
            backend.put(message)
            if message.ref is not None:
                backend.done(message)
        if self._head_file:
            # Twins of earlier head records still ahead in the queue stay to be skipped.
            skips = [i for i, n in self._skip.items() for _ in range(n)] if on_disk else []
            self._skip.clear()
            wait_ns = int(head_wait * 1e9)
            if key_waits:
                records = [(message, int(key_waits.get(message.id, 0.0) * 1e9)) for message in head_file]
            else:
                records = [(message, wait_ns if index == 0 else 0) for index, message in enumerate(head_file)]
            save_head(self._head_file, records, skips)
        if self._sidecar:
            due_times = self._deferred_due
            for message in deferred:
                due_times[message.id] = message.deadline
            save_deferrals(self._sidecar, {i: int(t * 1e9) for i, t in due_times.items()})
        backend.close()


def _no_key(body: bytes) -> OrderKey:
    """The key function of a channel not ordered by key (never called)."""
    return None


def _message_id(message: Message) -> bytes:
    """Head order: message IDs grow with publish order on one nsqd."""
    return message.id
