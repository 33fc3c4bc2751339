"""
The nsqd core: topics, the ID generator, health, and the batched dispatch of channels.

It knows nothing of sockets or HTTP: the TCP protocol, the HTTP app and the service drive it,
and it is driven by an injected clock so tests can use ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from twisted_nsq.nsqd.backend import BackendError, DiscardingBackend, IBackendQueue, RefusingBackend
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.ordered import OrderedPatterns
from twisted_nsq.nsqd.topic import Topic
from twisted_nsq.wire.ids import IDGenerator
from twisted_nsq.wire.names import is_ephemeral

if TYPE_CHECKING:
    from twisted_nsq.nsqd.metadata import Metadata
    from twisted_nsq.nsqd.options import NSQDOptions

log = Logger()

BackendFactory = Callable[[str], IBackendQueue]


class INSQDObserver(Interface):
    """Told about topology changes (lookupd registration and nsqd.dat persistence listen here)."""

    def topic_created(topic: Topic) -> None:
        """A topic now exists."""

    def topic_deleted(topic: Topic) -> None:
        """A topic is gone."""

    def channel_created(topic: Topic, channel: Channel) -> None:
        """A channel now exists."""

    def channel_deleted(topic: Topic, channel: Channel) -> None:
        """A channel is gone."""

    def metadata_changed() -> None:
        """Something nsqd.dat records changed (a pause or unpause; creations and deletions too)."""


def _memory_only(name: str) -> IBackendQueue:
    return RefusingBackend()


class NSQD:
    """The daemon's state. See the module docstring."""

    def __init__(
        self,
        options: NSQDOptions,
        clock: IReactorTime,
        random_source: random.Random | None = None,
        backend_factory: BackendFactory = _memory_only,
    ) -> None:
        self.options = options
        self.clock = clock
        self.random = random_source if random_source is not None else random.Random()
        self.id_generator = IDGenerator(options.node_id)
        self.topics: dict[str, Topic] = {}
        self.clients: dict[int, Any] = {}
        self.observers: list[INSQDObserver] = []
        self.exiting = False
        self.start_time = int(clock.seconds())
        self.tcp_port = 0
        self.http_port = 0
        self.https_port = 0
        self._backend_factory = backend_factory
        self._client_ids = itertools.count(1)
        self._health: str | None = None
        self._dirty: list[Channel] = []
        self._dispatch_call: IDelayedCall | None = None
        self.durable = bool(getattr(options, "durable", False))
        self.ordered_patterns = OrderedPatterns(getattr(options, "ordered_channel", ()))
        self._unsynced: set[IBackendQueue] = set()
        self._commit_waiters: list[Deferred[None]] = []
        self._commit_call: IDelayedCall | None = None
        #: Told of C{PUT /config/nsqlookupd_tcp_addresses}; the lookupd links set it while they run.
        self.on_lookupd_addresses: Callable[[list[str]], None] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def now_ns(self) -> int:
        """The clock in nanoseconds, as message timestamps carry it."""
        return int(self.clock.seconds() * 1_000_000_000)

    def next_client_id(self) -> int:
        return next(self._client_ids)

    def make_backend(self, name: str, ephemeral: bool) -> IBackendQueue:
        """The overflow store for a queue named as go-diskqueue names it (``topic:channel``)."""
        if ephemeral:
            return DiscardingBackend()
        return self._backend_factory(name)

    def data_path(self) -> str:
        """Where queue files live (``--data-path``, default the current directory)."""
        return self.options.resolved_data_path()

    def memory_limit(self, ephemeral: bool) -> int:
        """Messages a queue may hold in memory: ``--mem-queue-size``, or 0 for durable queues."""
        if self.durable and not ephemeral:
            return 0
        return int(self.options.mem_queue_size)

    # -- durable publishing (group commit) ----------------------------------------------------

    def note_write(self, backend: IBackendQueue) -> None:
        """``backend`` took messages a publisher will wait for (``sync_barrier``)."""
        self._unsynced.add(backend)

    def sync_barrier(self) -> Deferred[None]:
        """
        A Deferred that fires once everything noted so far is fsynced.

        Every barrier asked for in one reactor turn shares one commit (one sync per backend),
        so a busy durable nsqd fsyncs once per batch of publishes, not once per message.
        """
        d: Deferred[None] = Deferred()
        self._commit_waiters.append(d)
        if self._commit_call is None:
            self._commit_call = self.clock.callLater(0, self._commit)
        return d

    def _commit(self) -> None:
        self._commit_call = None
        waiters, self._commit_waiters = self._commit_waiters, []
        backends, self._unsynced = self._unsynced, set()

        def synced(_: object) -> None:
            for waiter in waiters:
                waiter.callback(None)

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, FirstError):
                error = error.subFailure.value
            self.set_health(str(error))
            for waiter in waiters:
                waiter.errback(BackendError(str(error)))

        gatherResults([backend.sync() for backend in backends], consumeErrors=True).addCallbacks(
            synced, failed
        )

    # -- health -----------------------------------------------------------------------------

    def set_health(self, error: str | None) -> None:
        """Record the last storage error (None when healthy again)."""
        self._health = error

    def is_healthy(self) -> bool:
        return self._health is None

    def health(self) -> str:
        """``OK`` or ``NOK - <error>``, as /ping and /stats report it."""
        return "OK" if self._health is None else f"NOK - {self._health}"

    # -- dispatch batching ------------------------------------------------------------------

    def mark_dirty(self, channel: Channel) -> None:
        """
        Ask for ``channel.dispatch()`` once the current input has been handled.

        Adapters call ``run_dispatch()`` at the end of each input event (a dataReceived, an
        HTTP publish, a timer); the zero-delay call is the safety net for any other path.
        """
        if channel.dirty:
            return
        channel.dirty = True
        self._dirty.append(channel)
        if self._dispatch_call is None:
            self._dispatch_call = self.clock.callLater(0, self._dispatch_soon)

    def _dispatch_soon(self) -> None:
        self._dispatch_call = None
        self.run_dispatch()

    def run_dispatch(self) -> None:
        """Dispatch every channel whose readiness changed."""
        dirty = self._dirty
        while dirty:
            channel = dirty.pop()
            if channel.dirty and not channel.deleted:
                channel.dispatch()
            channel.dirty = False
        if self._dispatch_call is not None:
            if self._dispatch_call.active():
                self._dispatch_call.cancel()
            self._dispatch_call = None

    # -- topics -----------------------------------------------------------------------------

    def get_topic(self, name: str) -> Topic:
        """The topic named ``name``, created (and announced) if needed."""
        topic = self.topics.get(name)
        if topic is None:
            topic = Topic(self, name, self.make_backend(name, is_ephemeral(name)))
            self.topics[name] = topic
            log.info("TOPIC({topic}): created", topic=name)
            for observer in self.observers:
                observer.topic_created(topic)
        return topic

    def find_topic(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its channels (closing their clients); KeyError if unknown."""
        topic = self.topics.pop(name)
        topic.delete()
        log.info("TOPIC({topic}): deleting", topic=name)
        for observer in self.observers:
            observer.topic_deleted(topic)

    def persist_metadata(self) -> None:
        """Tell observers that what nsqd.dat records changed (called after pause/unpause)."""
        for observer in self.observers:
            observer.metadata_changed()

    def channel_created(self, topic: Topic, channel: Channel) -> None:
        log.info("TOPIC({topic}): new channel({channel})", topic=topic.name, channel=channel.name)
        for observer in self.observers:
            observer.channel_created(topic, channel)

    def channel_deleted(self, topic: Topic, channel: Channel) -> None:
        log.info("CHANNEL({topic}:{channel}): deleting", topic=topic.name, channel=channel.name)
        for observer in self.observers:
            observer.channel_deleted(topic, channel)

    def lookupd_addresses_changed(self, addresses: list[str]) -> None:
        """The nsqlookupd TCP addresses were changed at run time: connect to new ones, drop old ones."""
        if self.on_lookupd_addresses is not None:
            self.on_lookupd_addresses(addresses)

    def delete_ephemeral_channel(self, channel: Channel) -> None:
        """The last client left an ephemeral channel: delete it (and maybe its topic)."""
        topic = self.topics.get(channel.topic_name)
        if topic is not None and topic.channels.get(channel.name) is channel:
            topic.delete_channel(channel.name)

    def load_metadata(self, metadata: Metadata) -> None:
        """
        Recreate the topics and channels ``nsqd.dat`` lists, with their paused flags.

        Observers hear of each creation (there is no lookupd link yet, so nothing is asked of
        lookupd). Each topic stays paused until all of its channels exist, as Go starts a loaded
        topic's pump only then: otherwise the first channel created would take the backlog alone.
        """
        paused: dict[str, bool] = {}
        for entry in metadata.topics:
            topic = self.get_topic(entry.name)
            paused[entry.name] = paused.get(entry.name, False) or entry.paused
            topic.pause()
            for channel_entry in entry.channels:
                # The recorded mode, not --ordered-channel: an operator may have turned it off.
                channel = topic.get_channel(
                    channel_entry.name, ordered=channel_entry.ordered, order_key=channel_entry.order_key
                )
                if channel_entry.paused:
                    channel.pause()
        for name, topic_paused in paused.items():
            loaded = self.topics.get(name)
            if loaded is not None and not topic_paused:
                loaded.unpause()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin serving (listeners are bound by the service before this)."""
        self.exiting = False

    def close(self) -> Deferred[None]:
        """Clean shutdown: every topic and channel flushes what it holds to its backend."""
        self.exiting = True
        for topic in list(self.topics.values()):
            topic.close()
        if self._dispatch_call is not None and self._dispatch_call.active():
            self._dispatch_call.cancel()
        self._dispatch_call = None
        return succeed(None)
